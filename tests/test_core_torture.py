"""The manifest's request expectations through the sans-I/O SIP core (no sockets, fake clock)."""

from __future__ import annotations

import pytest

from sbc.core import SipCore
from sbc.sip.events import Address
from sbc.sip.message import Response, parse_message
from tests.torture import MALFORMED_STATUSES, load_manifest

CASES = load_manifest()
SOURCE = Address("udp", "192.0.2.77", 5062, None)


def run_core(data: bytes, source: Address = SOURCE) -> tuple[SipCore, list[Response]]:
    core = SipCore(local_hosts={"127.0.0.1", "sbc.example.net"})
    core.receive(data, source, now=100.0)
    responses = [parse_message(out.data) for out in core.pop_outgoing()]
    assert all(isinstance(r, Response) for r in responses)
    return core, responses  # type: ignore[return-value]


def check_against_manifest(case, responses: list[Response], dropped: dict[str, int] | None) -> None:
    """Assert what the SBC did matches the manifest line for ``case``.

    ``dropped`` is the core's drop count by reason (None when the test cannot see it).
    """
    finals = [r for r in responses if r.status >= 200]
    if case.is_response:
        assert not responses, "responses are never answered"
        if dropped is not None:
            assert sum(dropped.values()) == 1, "a response to nothing we sent is dropped and counted"
            malformed = dropped.get("bad-response", 0)
            if case.parse == "invalid":
                assert malformed == 1, f"{case.file} is malformed: {dropped}"
            else:
                assert malformed == 0, f"{case.file} is well-formed: {dropped}"
        return
    assert len(finals) == 1, f"exactly one final response, got {[r.status for r in responses]}"
    status = finals[0].status
    codes = case.codes
    if case.may_be_processed and status not in codes:
        assert status not in MALFORMED_STATUSES, f"{case.file} must be processed, got {status}"
    else:
        assert status in codes, f"{case.file}: expected {sorted(codes)}, got {status}"
    if status == 420:
        assert finals[0].get("Unsupported")
    if status == 415:
        assert finals[0].get("Accept") or finals[0].get("Accept-Encoding")
    if status in (405, 501):
        assert finals[0].get("Allow")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.file)
def test_core_follows_manifest(case) -> None:
    core, responses = run_core(case.data)
    check_against_manifest(case, responses, core.stats.dropped_by)


def _case(name: str):
    return next(c for c in CASES if c.file.endswith(name))


def test_bext01_lists_every_unknown_option_tag() -> None:
    _, (resp,) = run_core(_case("bext01.dat").data)
    assert resp.status == 420
    listed = {t.strip() for t in resp.get("Unsupported").split(",")}
    assert listed == {
        "nothingSupportsThis",
        "nothingSupportsThisEither",
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    }


def test_stateless_400_echoes_headers_and_tag() -> None:
    _, (resp,) = run_core(_case("badinv01.dat").data)
    assert resp.status == 400
    assert resp.call_id == "badinv01.0ha0isndaksdjasdf3234nas"
    assert resp.cseq == (8, "INVITE")
    assert resp.to_tag
    assert "Warning" in resp


def test_options_to_the_sbc_gets_200_with_allow_and_accept() -> None:
    req = (
        b"OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.77:5062;branch=z9hG4bK-opt1;rport\r\n"
        b"From: <sip:probe@192.0.2.77>;tag=abc\r\n"
        b"To: <sip:127.0.0.1>\r\n"
        b"Call-ID: opt-1@192.0.2.77\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Max-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    _, (resp,) = run_core(req)
    assert resp.status == 200
    assert "INVITE" in resp.get("Allow") and "application/sdp" in resp.get("Accept")
    via = resp.vias()[0]
    assert via.received == "192.0.2.77"
    assert via.rport == "5062"


def test_retransmitted_request_is_absorbed_and_answer_resent() -> None:
    data = _case("zeromf.dat").data
    core = SipCore(local_hosts={"127.0.0.1"})
    core.receive(data, SOURCE, now=1.0)
    first = core.pop_outgoing()
    core.receive(data, SOURCE, now=1.2)
    second = core.pop_outgoing()
    assert len(first) == len(second) == 1
    assert first[0].data == second[0].data  # same response (same To tag), not a new one


def test_garbage_is_dropped_and_counted() -> None:
    core, responses = run_core(b"\x00\x01 this is not SIP \xff\r\n\r\n")
    assert responses == [] and core.stats.dropped_by == {"unparseable": 1}


def test_bcast_response_is_dropped_as_not_ours() -> None:
    core, responses = run_core(_case("bcast.dat").data)
    assert responses == [] and core.stats.dropped_by == {"not-our-via": 1}


def test_cancel_without_invite_is_481() -> None:
    req = (
        b"CANCEL sip:+14155550100@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.77:5062;branch=z9hG4bK-c1\r\n"
        b"From: <sip:a@192.0.2.77>;tag=abc\r\n"
        b"To: <sip:+14155550100@127.0.0.1>\r\n"
        b"Call-ID: c-1@192.0.2.77\r\n"
        b"CSeq: 1 CANCEL\r\n"
        b"Max-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    _, (resp,) = run_core(req)
    assert resp.status == 481


def test_bye_outside_dialog_is_481() -> None:
    req = (
        b"BYE sip:+14155550100@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.77:5062;branch=z9hG4bK-b1\r\n"
        b"From: <sip:a@192.0.2.77>;tag=abc\r\n"
        b"To: <sip:+14155550100@127.0.0.1>;tag=xyz\r\n"
        b"Call-ID: b-1@192.0.2.77\r\n"
        b"CSeq: 2 BYE\r\n"
        b"Max-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    _, (resp,) = run_core(req)
    assert resp.status == 481
