"""Overload protection end to end: a flood of SIP from one source overloads a real ``sbc run``;
new calls are refused with a stateless 503 + Retry-After while every admitted call completes,
and once the flood ends calls get through again. A pause of the whole process is no overload:
the backlog it leaves is read at once and no call is refused.

The flood is OPTIONS from 127.0.0.9 sent as fast as this process can for a few seconds (the SBC
answers each one, so it costs real work), bounded in count and time, to loopback only. The guard's
target is lowered to 5 ms so that the test does not depend on how fast the machine is: any real
backlog in the SBC's socket buffer is far past it.
"""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from tests.sipp import SIPP, run_sipp, start_sipp, start_uas
from tests.test_e2e_calls import CARRIER, DID, GW1, provision, sbc_target, start_provisioned, stop_and_read

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is installed by scripts/test.sh"),
]

FLOODER = "127.0.0.9"
FLOOD_S = 4.0
FLOOD_MAX_DATAGRAMS = 400_000
CALLS = 20


def flood(target: tuple[str, int], stop: threading.Event, sent: list[int]) -> None:
    """OPTIONS to the SBC as fast as possible until ``stop``, FLOOD_S or FLOOD_MAX_DATAGRAMS."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((FLOODER, 0))
    port = sock.getsockname()[1]
    # Distinct branches (each a new transaction the SBC answers), reused in a cycle.
    msgs = [
        (
            f"OPTIONS sip:{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {FLOODER}:{port};branch=z9hG4bK-flood-{i}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:flood@{FLOODER}>;tag=f{i}\r\n"
            f"To: <sip:{target[0]}>\r\n"
            f"Call-ID: flood-{i}@{FLOODER}\r\n"
            f"CSeq: {i} OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        for i in range(5000)
    ]
    n = 0
    deadline = time.monotonic() + FLOOD_S
    try:
        while not stop.is_set() and n < FLOOD_MAX_DATAGRAMS and time.monotonic() < deadline:
            for m in msgs[:500]:
                sock.sendto(m, target)
            msgs = msgs[500:] + msgs[:500]
            n += 500
    finally:
        sock.close()
        sent.append(n)


def test_flood_sheds_new_calls_statelessly_and_admitted_calls_complete(tmp_path) -> None:
    with start_uas("uas_answer", "127.0.0.3", calls=CALLS, workdir=tmp_path / "pbx", timeout_s=40) as pbx:
        sbc = start_provisioned(
            tmp_path, provision([(GW1, 5060)], pbx.local_port), env={"SBC_OVERLOAD_LAG_MS": "5"}
        )
        stop, sent = threading.Event(), []
        flooder = threading.Thread(target=flood, args=((sbc.host, sbc.port), stop, sent), daemon=True)
        try:
            flooder.start()
            time.sleep(1.0)  # the backlog builds and the guard starts shedding
            calls = start_sipp(
                "uac_call_or_503", sbc_target(sbc), local_ip=CARRIER, service=DID, calls=CALLS, rate=10,
                hold_ms=200, timeout_s=40, workdir=tmp_path / "carrier",
            )  # fmt: skip
            with calls:
                result = calls.wait(45)
            stop.set()
            flooder.join(10)
            # After the flood the guard releases (0.2 of shedding a second): a call gets through.
            deadline = time.monotonic() + 15
            while True:
                after = run_sipp("uac_call", sbc_target(sbc), local_ip=CARRIER, service=DID,
                                 workdir=tmp_path / f"after-{time.monotonic():.0f}")  # fmt: skip
                if after.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            pbx.stop()
        finally:
            stop.set()
            rows = stop_and_read(sbc, tmp_path)
    assert sent and sent[0] > 10_000, "the flood did not run"
    assert result.returncode == 0, result.explain()  # every call: 200 + BYE, or 503 + ACK
    finals = [m for m in result.messages() if m.direction == "received" and (m.status or 0) >= 200]
    refused = [m for m in finals if m.status == 503]
    answered = [m for m in finals if m.status == 200 and "INVITE" in m.headers("CSeq")[0]]
    assert refused, "the flood never made the SBC shed a call"
    assert len(refused) + len(answered) == CALLS
    trying = {
        m.headers("Call-ID")[0] for m in result.messages() if m.direction == "received" and m.status == 100
    }
    for m in refused:
        assert int(m.headers("Retry-After")[0]) >= 1
        # Stateless: no 100 Trying before it and no CDR for it (the SBC spent nothing on the call).
        assert m.headers("Call-ID")[0] not in trying
    assert after.returncode == 0, after.explain()
    # Every admitted call reached the PBX and completed: one answered CDR each, nothing else.
    assert sorted(r.disposition for r in rows) == ["answered"] * (len(answered) + 1)


def test_a_paused_sbc_refuses_no_call_once_it_catches_up(tmp_path) -> None:
    """``sbc run`` stopped for 400 ms (SIGSTOP) in the middle of 200 calls/s, as a paused VM or a
    host busy elsewhere would: the calls that queued meanwhile are read within a moment and every
    call is answered. The guard used to count the pause itself as overload (+0.2 at once) and
    refuse about a tenth of the new calls for the second after it."""
    calls = 500
    with start_uas("uas_answer", "127.0.0.3", calls=calls, workdir=tmp_path / "pbx", timeout_s=40) as pbx:
        sbc = start_provisioned(tmp_path, provision([(GW1, 5060)], pbx.local_port))
        try:
            uac = start_sipp(
                "uac_call_or_503", sbc_target(sbc), local_ip=CARRIER, service=DID, calls=calls, rate=200,
                hold_ms=200, timeout_s=40, workdir=tmp_path / "carrier",
            )  # fmt: skip
            with uac:
                time.sleep(1.2)  # under way: about 240 calls started
                sbc.proc.send_signal(signal.SIGSTOP)
                try:
                    time.sleep(0.4)
                finally:
                    sbc.proc.send_signal(signal.SIGCONT)
                result = uac.wait(45)
            pbx.stop()
        finally:
            rows = stop_and_read(sbc, tmp_path)
    assert result.returncode == 0, result.explain()
    finals = [m for m in result.messages() if m.direction == "received" and (m.status or 0) >= 200]
    assert [m for m in finals if m.status == 503] == []
    assert "overload: entering" not in sbc.log()
    assert sorted(r.disposition for r in rows) == ["answered"] * calls
