"""The pieces of ``sbc run --workers N`` that need no SBC process: a worker's place, the bus,
the frames that move SIP between workers, RTP port slices, the core's divert hook, and the
supervisor's refusals. End to end (SIPp through two workers) is ``tests/test_e2e_workers.py``."""

from __future__ import annotations

import asyncio
import secrets
import socket

import pytest

from sbc.app import rtp_port_slice
from sbc.config import Settings
from sbc.core import SipCore
from sbc.sip.events import Address
from sbc.transport import steering
from sbc.transport.steering import Placement, worker_for_call_id
from sbc.transport.tcp import TcpTransport, conn_worker
from sbc.workers import WorkerInfo
from sbc.workers.bus import KIND_SIP, WorkerBus, socket_mesh
from sbc.workers.forward import FrameError, pack_message, unpack_message
from sbc.workers.supervisor import Supervisor, SupervisorError, supervise
from tests.sbcproc import free_port
from tests.test_core_shedding import request

# -- a worker's place ------------------------------------------------------------------------


def test_worker_info_round_trips_through_the_environment() -> None:
    info = WorkerInfo(1, 3, "77-abc", fds=(5, 6), peers=(9, -1, 11))
    assert WorkerInfo.from_env(info.env()) == info
    assert WorkerInfo.from_env({}) is None


@pytest.mark.parametrize(
    "env",
    [
        {**WorkerInfo(0, 2, "g", peers=(-1, 4)).env(), "SBC_WORKER_INDEX": "2"},
        {**WorkerInfo(0, 2, "g", peers=(-1, 4)).env(), "SBC_WORKER_COUNT": "65"},
        {**WorkerInfo(0, 2, "g", peers=(-1, 4)).env(), "SBC_WORKER_PEERS": "-1"},
    ],
)
def test_a_worker_environment_that_does_not_add_up_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        WorkerInfo.from_env(env)


def test_identifiers_made_by_a_worker_steer_back_to_it() -> None:
    for index in range(3):
        place = Placement(index, 3)
        ids = [place.make(lambda: secrets.token_hex(8)) for _ in range(50)]
        assert {worker_for_call_id(i, 3) for i in ids} == {index}
    alone = Placement()
    assert alone.make(lambda: "x") == "x"
    with pytest.raises(ValueError):
        Placement(3, 3)


def test_the_c_hash_is_the_reference_fnv1a() -> None:
    for _ in range(200):
        raw = secrets.token_bytes(secrets.randbelow(40))
        assert worker_for_call_id(raw, 1_000_003) == steering.fnv1a_32(raw.strip(b" \t")) % 1_000_003
    assert worker_for_call_id(b" \t \t", 7) == steering.fnv1a_32(b"") % 7


# -- RTP port slices -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "n"), [(20000, 39999, 2), (20000, 39999, 3), (10001, 10020, 4), (30000, 30003, 2)]
)
def test_rtp_port_slices_are_disjoint_even_aligned_and_cover_the_range(lo: int, hi: int, n: int) -> None:
    slices = [rtp_port_slice(lo, hi, i, n) for i in range(n)]
    assert slices[0][0] == lo and slices[-1][1] == hi
    for (a_lo, a_hi), (b_lo, _) in zip(slices, slices[1:], strict=False):
        assert a_hi + 1 == b_lo  # contiguous, no overlap
        assert (a_hi - a_lo + 1) % 2 == 0  # whole RTP/RTCP pairs
    assert all(s_hi - s_lo >= 1 for s_lo, s_hi in slices)


def test_too_few_rtp_ports_for_the_workers_is_an_error() -> None:
    with pytest.raises(ValueError, match="too few"):
        rtp_port_slice(30000, 30002, 0, 2)


# -- frames ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "addr",
    [
        Address("udp", "192.0.2.7", 5060),
        Address("tcp", "2001:db8::5", 65535, (12345 << 8) | 3),
        Address("tls", "h", 1, 1),
    ],
)
def test_a_message_frame_carries_the_bytes_and_the_address(addr: Address) -> None:
    data = b"INVITE sip:x SIP/2.0\r\n\r\n" + bytes(range(256))
    assert unpack_message(pack_message(data, addr)) == (data, addr)


@pytest.mark.parametrize(
    "payload", [b"", b"\x00\x13\xc4", b"\x09" + bytes(11) + b"x", b"\x00\x13\xc4" + bytes(8) + b"\x40ab"]
)
def test_a_frame_that_is_not_a_message_is_refused(payload: bytes) -> None:
    with pytest.raises(FrameError):
        unpack_message(payload)


async def test_tcp_connection_ids_name_the_worker_that_holds_them_and_foreign_ones_go_elsewhere() -> None:
    handed: list[tuple[int, bytes, Address]] = []
    tcp = TcpTransport(lambda d, a: None, max_message_size=65535, idle_timeout=30, max_per_source=10, worker=3,
                       send_elsewhere=lambda w, d, a: handed.append((w, d, a)) or True)  # fmt: skip
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        addr = await tcp.send_to(b"x", "127.0.0.1", port)
        assert conn_worker(addr.conn_id) == 3
        foreign = Address("tcp", "127.0.0.1", port, (77 << 8) | 1)
        assert tcp.send(b"answer", foreign) is True
        assert handed == [(1, b"answer", foreign)]
        assert tcp.send(b"again", addr) is True and len(handed) == 1  # our own: written here
    finally:
        await tcp.close()
        server.close()


# -- the bus -----------------------------------------------------------------------------------


def _buses(count: int, mesh: list | None = None) -> list[WorkerBus]:
    mesh = mesh or socket_mesh(count)
    return [WorkerBus(WorkerInfo(i, count, "test"), mesh[i]) for i in range(count)]


async def test_the_bus_delivers_frames_with_their_sender_including_those_sent_before_start() -> None:
    buses = _buses(3)
    got: list[tuple[int, int, bytes]] = []
    for bus in buses:
        bus.on(KIND_SIP, lambda sender, payload, me=bus.index: got.append((me, sender, payload)))
    assert buses[0].send(2, KIND_SIP, b"early")  # nobody reads yet: it waits in the pair
    for bus in buses:
        bus.start()
    assert buses[1].broadcast(KIND_SIP, b"hello") == 2
    assert not buses[1].send(1, KIND_SIP, b"self")  # a worker never sends to itself
    for _ in range(50):
        if len(got) == 3:
            break
        await asyncio.sleep(0.01)
    assert sorted(got) == [(0, 1, b"hello"), (2, 0, b"early"), (2, 1, b"hello")]
    for bus in buses:
        bus.close()


async def test_frames_of_an_unknown_kind_are_counted_and_a_full_pair_drops_without_blocking() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (a, b):
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sender = WorkerBus(WorkerInfo(0, 2, "t"), [None, a])
    reader = WorkerBus(WorkerInfo(1, 2, "t"), [b, None])
    reader.on(KIND_SIP, lambda s, p: None)
    results = [sender.send(1, KIND_SIP, bytes(1000)) for _ in range(200)]
    assert not all(results) and sender.dropped == results.count(False) > 0
    reader.start()
    await asyncio.sleep(0.05)
    assert reader.received == results.count(True)
    while True:  # an unknown kind, straight from the other end
        try:
            a.send(b"\x7fjunk")
            break
        except BlockingIOError:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert reader.rejected >= 1
    sender.close()
    reader.close()


# -- the core's divert hook ------------------------------------------------------------------


def test_a_message_of_another_workers_call_is_diverted_before_any_work() -> None:
    core = SipCore(local_hosts={"198.51.100.1"}, on_invite=lambda *a: pytest.fail("handled here"))
    diverted: list[tuple[str, bytes, Address]] = []
    core.divert = lambda call_id, data, source: diverted.append((call_id, data, source)) or True
    src = Address("udp", "192.0.2.10", 5060)
    data = request()
    core.receive(data, src, 0.0)
    assert diverted == [("shed-1@192.0.2.10", data, src)]
    assert core.pop_outgoing() == [] and core.next_timer() is None  # no transaction, no 100 Trying


def test_a_message_without_call_id_stays_and_gets_this_workers_answer() -> None:
    core = SipCore(local_hosts={"198.51.100.1"})
    core.divert = lambda *a: pytest.fail("nothing to steer by")
    data = request().replace(b"Call-ID: shed-1@192.0.2.10\r\n", b"")
    core.receive(data, Address("udp", "192.0.2.10", 5060), 0.0)
    [out] = core.pop_outgoing()
    assert out.data.startswith(b"SIP/2.0 400")


# -- the supervisor's refusals ---------------------------------------------------------------


def test_workers_without_the_steering_program_are_refused_with_a_reason(monkeypatch) -> None:
    monkeypatch.setattr("sbc.workers.supervisor.steering_available", lambda: False)
    sup = Supervisor(Settings(sip_listen=[f"udp:127.0.0.1:{free_port()}"], workers=2, api_listen=""), ["run"])
    try:
        with pytest.raises(SupervisorError, match="steering"):
            sup.bind()
    finally:
        sup.close()


def test_a_taken_port_fails_the_start_with_one_line(capsys, tmp_path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(sip_listen=[f"tcp:127.0.0.1:{port}"], workers=2, api_listen="",
                            db=f"sqlite:///{tmp_path / 'sbc.db'}")  # fmt: skip
        assert supervise(settings, ["run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sbc: cannot start:") and "Address already in use" in err and "Traceback" not in err
