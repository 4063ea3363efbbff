"""Metrics after real events: SIP through the core, calls through the B2BUA, CDRs, probes, relay, overload.

Every check reads the Prometheus text exposition (what a scrape returns), not the collector objects,
so a name, a label or a type that changes shows up here. Process-wide counters are compared as deltas
(other tests in the same process move them too).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sbc import metrics
from sbc.metrics import (
    MAX_CARRIER_LABELS,
    OTHER_LABEL,
    CdrMetrics,
    ChildCache,
    HotCounter,
    LabelBudget,
    LiveCollector,
    exposition_for,
)
from sbc.overload import OverloadGuard, OverloadMonitor
from sbc.store.cdr import CdrAttempt, CdrRecord
from tests.b2bua_harness import (
    CARRIER,
    DIALLED,
    GW_A,
    GW_B,
    GW_SDP,
    PBX,
    PBX_SDP,
    Net,
    establish_inbound,
    reply,
    snapshot,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(collector: object = REGISTRY) -> Samples:
    """Encode ``collector`` as a scrape would and parse the text back into samples."""
    text = generate_latest(collector).decode()  # type: ignore[arg-type]
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(lbls)[label] for n, lbls in samples if n == name and label in dict(lbls)}


T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def cdr(**kw: object) -> CdrRecord:
    """A finished call; answered for ``duration`` seconds unless ``disposition`` says otherwise."""
    duration = float(kw.pop("duration", 0.0))  # type: ignore[arg-type]
    disposition = kw.pop("disposition", "answered")
    answered = disposition == "answered"
    base: dict[str, object] = {
        "call_id": f"c{random.random()}",
        "direction": "outbound",
        "caller": "+12125550100",
        "callee": "+14155550100",
        "setup_time": T0,
        "answer_time": T0 + timedelta(seconds=2) if answered else None,
        "end_time": T0 + timedelta(seconds=2 + duration),
        "disposition": disposition,
        "sip_code": 200 if answered else 486,
        "customer": "acme",
        "trunk": "pbx",
        "carrier": "A",
    }
    base.update(kw)
    return CdrRecord(**base)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


# -- hot path: the SIP core -------------------------------------------------------------------


def test_child_cache_returns_one_child_per_label_value(registry: CollectorRegistry) -> None:
    from prometheus_client import Counter

    counter = Counter("t_codes_total", "test", ["code"], registry=registry)
    cache = ChildCache(counter)
    cache[200].inc()
    cache[200].inc()
    cache[486].inc(3)
    assert cache[200] is counter.labels("200")
    assert metrics.ATTEMPTS_BY_DIRECTION["inbound"] is metrics.CALL_ATTEMPTS.labels("inbound")
    pair = ChildCache(Counter("t_pairs_total", "test", ["a", "b"], registry=registry))
    pair["udp", "request"].inc()
    s = scrape(registry)
    assert value(s, "t_codes_total", code="200") == 2
    assert value(s, "t_codes_total", code="486") == 3
    assert value(s, "t_pairs_total", a="udp", b="request") == 1


def test_hot_counter_exposes_what_a_counter_does(registry: CollectorRegistry) -> None:
    from prometheus_client import Counter, generate_latest

    plain = CollectorRegistry()
    hot = HotCounter("t_calls_total", "calls", ["direction", "disposition"], registry=registry)
    ref = Counter("t_calls_total", "calls", ["direction", "disposition"], registry=plain)
    for metric in (hot, ref):
        metric.labels("inbound", "answered").inc()
        metric.labels("inbound", "answered").inc(2)
        metric.labels("outbound", 486).inc()
    assert generate_latest(registry) == generate_latest(plain)
    assert hot.labels("outbound", "486") is hot.labels("outbound", 486)
    with pytest.raises(ValueError, match="direction"):
        hot.labels("inbound")


def test_core_counts_requests_responses_sent_and_received() -> None:
    """An inbound call through the sans-I/O SBC moves the per-message counters by the right codes:
    the carrier's INVITE/ACK/BYE are requests received, the SBC's 100/180/200 are responses sent, and
    the PBX's 180/200 are responses received."""
    before = scrape()
    net = Net()
    est = establish_inbound(net)
    bye = est.a.request("BYE")
    est.caller.take(lambda m: getattr(m, "status", None) == 200 and m.cseq == (bye.cseq[0], "BYE"))
    est.b.respond(est.b.take_in_dialog("BYE"), 200)
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # INVITE, ACK, BYE from the carrier
    assert delta("sbc_sip_messages_received_total", transport="udp", kind="request") == 3
    # 180 and 200 (INVITE) and 200 (BYE) from the PBX
    assert delta("sbc_sip_messages_received_total", transport="udp", kind="response") == 3
    assert delta("sbc_sip_responses_received_total", code="180") == 1
    assert delta("sbc_sip_responses_received_total", code="200") == 2
    # 100, 180 and 200 to the carrier's INVITE, 200 to its BYE
    assert delta("sbc_sip_responses_sent_total", code="100") == 1
    assert delta("sbc_sip_responses_sent_total", code="180") == 1
    assert delta("sbc_sip_responses_sent_total", code="200") == 2
    assert delta("sbc_call_attempts_total", direction="inbound") == 1
    assert delta("sbc_call_answers_total", direction="inbound") == 1
    assert delta("sbc_calls_ended_total", direction="inbound", disposition="answered") == 1


def test_stateless_rejection_counts_as_response_sent() -> None:
    before = scrape()
    net = Net()
    net.receive(
        b"INVITE sip:x@127.0.0.1 SIP/7.0\r\nVia: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKx\r\n\r\n", CARRIER
    )
    after = scrape()
    assert (
        value(after, "sbc_sip_responses_sent_total", code="505")
        - value(before, "sbc_sip_responses_sent_total", code="505")
        == 1
    )


def test_response_not_for_us_is_dropped_not_counted_as_received() -> None:
    before = scrape()
    net = Net()
    stray = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.99;branch=z9hG4bKzz\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    net.receive(stray, CARRIER)
    after = scrape()
    code = "sbc_sip_responses_received_total"
    assert value(after, code, code="200") == value(before, code, code="200")
    dropped = "sbc_sip_messages_dropped_total"
    assert (
        value(after, dropped, transport="udp", reason="not-our-via")
        - value(before, dropped, transport="udp", reason="not-our-via")
        == 1
    )


# -- finished calls from CDRs -----------------------------------------------------------------


def test_cdr_counts_asr_acd_by_carrier_and_trunk(registry: CollectorRegistry) -> None:
    m = CdrMetrics(registry)
    m.observe(cdr(duration=60.0))
    m.observe(cdr(duration=30.0))
    m.observe(cdr(disposition="busy"))
    m.observe(cdr(direction="inbound", carrier="telco", duration=10.0))
    s = scrape(registry)
    carrier = "sbc_carrier_calls_total"
    assert value(s, carrier, direction="outbound", carrier="A", disposition="answered") == 2
    assert value(s, carrier, direction="outbound", carrier="A", disposition="busy") == 1
    assert value(s, carrier, direction="inbound", carrier="telco", disposition="answered") == 1
    trunk = "sbc_trunk_calls_total"
    assert value(s, trunk, direction="outbound", customer="acme", trunk="pbx", disposition="answered") == 2
    assert value(s, trunk, direction="outbound", customer="acme", trunk="pbx", disposition="busy") == 1
    # ACD per carrier: billable seconds / answered calls = 45 s
    assert value(s, "sbc_carrier_billable_seconds_total", direction="outbound", carrier="A") == 90.0
    assert (
        value(s, "sbc_trunk_billable_seconds_total", direction="outbound", customer="acme", trunk="pbx")
        == 90.0
    )
    # the duration histogram holds answered calls only
    assert value(s, "sbc_call_duration_seconds_count", direction="outbound") == 2
    assert value(s, "sbc_call_duration_seconds_sum", direction="outbound") == 90.0
    assert value(s, "sbc_call_duration_seconds_bucket", direction="outbound", le="30.0") == 1
    assert value(s, "sbc_call_duration_seconds_bucket", direction="outbound", le="60.0") == 2
    assert value(s, "sbc_cdrs_observed_total") == 4


def test_cdr_attempts_count_every_failover_try_by_code_class(registry: CollectorRegistry) -> None:
    m = CdrMetrics(registry)
    attempts = (
        CdrAttempt("A", "127.0.0.4:5060", 503),
        CdrAttempt("A", "127.0.0.6:5060", 408),
        CdrAttempt("B", "127.0.0.5:5060", 200),
    )
    m.observe(cdr(carrier="B", attempts=attempts, duration=5.0))
    # inbound attempts go to trunk targets: no carrier, not counted as carrier attempts
    m.observe(cdr(direction="inbound", carrier="telco", attempts=(CdrAttempt(None, "127.0.0.3:5070", 200),)))
    s = scrape(registry)
    a = "sbc_carrier_attempts_total"
    assert value(s, a, carrier="A", code_class="5xx") == 1
    assert value(s, a, carrier="A", code_class="4xx") == 1
    assert value(s, a, carrier="B", code_class="2xx") == 1
    assert label_values(s, a, "carrier") == {"A", "B"}


def test_cdr_media_stats_feed_rtp_counters_and_quality_histograms(registry: CollectorRegistry) -> None:
    m = CdrMetrics(registry)
    media = {
        "streams": {
            "0": {
                "a_to_b": {"packets": 990, "lost": 10, "jitter_ms": 4.0, "mos": 4.3},
                "b_to_a": {"packets": 1000, "lost": 0, "jitter_ms": 25.0, "mos": 4.4},
            }
        }
    }
    m.observe(cdr(duration=20.0, media=media))
    m.observe(cdr(duration=20.0, media={"streams": {"0": {"a_to_b": {"packets": 0, "lost": 0}}}}))
    s = scrape(registry)
    assert value(s, "sbc_call_rtp_packets_total", carrier="A", from_side="caller") == 990
    assert value(s, "sbc_call_rtp_lost_total", carrier="A", from_side="caller") == 10
    assert value(s, "sbc_call_rtp_packets_total", carrier="A", from_side="callee") == 1000
    # one observation per direction with packets; the silent stream is not a quality sample
    assert value(s, "sbc_call_rtp_loss_ratio_count", from_side="caller") == 1
    assert value(s, "sbc_call_rtp_loss_ratio_sum", from_side="caller") == pytest.approx(0.01)
    assert value(s, "sbc_call_rtp_jitter_seconds_sum", from_side="callee") == pytest.approx(0.025)
    assert value(s, "sbc_call_rtp_jitter_seconds_bucket", from_side="caller", le="0.005") == 1
    assert value(s, "sbc_call_rtp_jitter_seconds_bucket", from_side="callee", le="0.02") == 0
    assert value(s, "sbc_call_rtp_mos_count", from_side="callee") == 1


def test_cdr_without_carrier_or_trunk_uses_empty_label(registry: CollectorRegistry) -> None:
    m = CdrMetrics(registry)
    m.observe(cdr(carrier=None, customer=None, trunk=None, disposition="failed", sip_code=503))
    s = scrape(registry)
    assert value(s, "sbc_carrier_calls_total", direction="outbound", carrier="", disposition="failed") == 1
    assert (
        value(s, "sbc_trunk_calls_total", direction="outbound", customer="", trunk="", disposition="failed")
        == 1
    )


def test_odd_cdr_is_counted_without_raising(registry: CollectorRegistry) -> None:
    m = CdrMetrics(registry)
    odd = {"streams": {"0": {"b_to_a": {"packets": 5}, "a_to_b": {"packets": "garbage"}}}}
    m.observe(cdr(duration=1.0, media=odd))
    m.observe(cdr(duration=1.0))
    s = scrape(registry)
    assert value(s, "sbc_cdrs_observed_total") == 2  # the call counts; its media is logged and skipped
    assert value(s, "sbc_carrier_calls_total", direction="outbound", carrier="A", disposition="answered") == 2
    assert value(s, "sbc_call_rtp_packets_total", carrier="A", from_side="caller") == 0
    assert value(s, "sbc_call_rtp_packets_total", carrier="A", from_side="callee") == 0  # all or none


def test_many_carriers_stay_bounded(registry: CollectorRegistry) -> None:
    """More carrier and trunk names than the caps: the extra ones fold into '(other)', and the scrape's
    size stops growing with the number of names."""
    m = CdrMetrics(registry, max_carriers=MAX_CARRIER_LABELS, max_trunks=50)
    extra = 200
    for i in range(MAX_CARRIER_LABELS + extra):
        m.observe(cdr(carrier=f"carrier{i}", trunk=f"t{i}", duration=1.0))
    s = scrape(registry)
    carriers = label_values(s, "sbc_carrier_calls_total", "carrier")
    assert len(carriers) == MAX_CARRIER_LABELS + 1
    assert OTHER_LABEL in carriers
    folded = value(
        s, "sbc_carrier_calls_total", direction="outbound", carrier=OTHER_LABEL, disposition="answered"
    )
    assert folded == extra
    trunks = label_values(s, "sbc_trunk_calls_total", "trunk")
    assert len(trunks) == 51
    size = len(generate_latest(registry))
    for i in range(500):
        m.observe(cdr(carrier=f"late{i}", trunk=f"late{i}", duration=1.0))
    assert len(generate_latest(registry)) - size < 100  # only counter values changed, no new series


def test_label_budget_keeps_admitted_names() -> None:
    budget = LabelBudget(2)
    assert budget("a") == "a" and budget("b") == "b"
    assert budget("c") == OTHER_LABEL
    assert budget("a") == "a"
    assert budget(("x", "y")) == (OTHER_LABEL, OTHER_LABEL)
    assert len(budget) == 2


def test_outbound_call_with_failover_end_to_end_through_cdr_metrics(registry: CollectorRegistry) -> None:
    """A real B2BUA call: gateway A answers 503, carrier B answers; its CDR lands in the counters."""
    m = CdrMetrics(registry)
    net = Net()
    pbx, gw_a, gw_b = net.peer(PBX, "pbx"), net.peer(GW_A, "gwa"), net.peer(GW_B, "gwb")
    call = pbx.invite(DIALLED, body=PBX_SDP)
    gw_a.take_invite().respond_invite(503)
    b = gw_b.take_invite()
    b.answer(GW_SDP)
    call.ack(pbx.take(200))
    net.advance(42.0)
    b.request("BYE")
    call.respond(call.take_in_dialog("BYE"), 200)
    m.observe_many(net.cdrs)
    s = scrape(registry)
    assert value(s, "sbc_carrier_calls_total", direction="outbound", carrier="B", disposition="answered") == 1
    assert value(s, "sbc_carrier_attempts_total", carrier="A", code_class="5xx") == 1
    assert value(s, "sbc_carrier_attempts_total", carrier="B", code_class="2xx") == 1
    assert value(s, "sbc_call_duration_seconds_sum", direction="outbound") == pytest.approx(42.0, abs=0.5)


# -- scrape time: live objects ----------------------------------------------------------------


def live(**kw: object) -> SimpleNamespace:
    base: dict[str, object] = {"b2bua": None, "relay": None, "overload": None, "provisioning_version": 7}
    base.update(kw)
    return SimpleNamespace(**base)


def test_active_calls_are_read_from_the_call_table() -> None:
    net = Net()
    source = live(b2bua=net.b2bua)
    collector = LiveCollector(source)
    assert value(scrape(collector), "sbc_active_calls", direction="inbound", state="routing") == 0
    est = establish_inbound(net)
    s = scrape(collector)
    assert value(s, "sbc_active_calls", direction="inbound", state="confirmed") == 1
    est.a.request("BYE")
    est.b.respond(est.b.take_in_dialog("BYE"), 200)
    s = scrape(collector)
    assert value(s, "sbc_active_calls", direction="inbound", state="confirmed") == 0
    assert value(s, "sbc_provisioning_version") == 7


def test_gateway_health_and_probe_latency() -> None:
    net = Net(snapshot(carrier_a={"probe_interval_s": 5.0}))
    gw_a = net.peer(GW_A, "gwa")
    collector = LiveCollector(live(b2bua=net.b2bua))
    labels = {"carrier": "A", "gateway": "127.0.0.4:5060", "transport": "udp"}
    opt = gw_a.take("OPTIONS")
    net.advance(0.04)
    gw_a.send(reply(opt, 200))
    s = scrape(collector)
    assert value(s, "sbc_gateway_up", **labels) == 1
    assert value(s, "sbc_gateway_probe_latency_seconds", **labels) == pytest.approx(0.04)
    assert value(s, "sbc_gateway_probes_total", **labels) == 1
    for _ in range(3):  # three failed probes mark it down
        net.advance(5.0)
        gw_a.send(reply(gw_a.take("OPTIONS"), 503))
    s = scrape(collector)
    assert value(s, "sbc_gateway_up", **labels) == 0
    assert value(s, "sbc_gateway_probe_failures_total", **labels) == 3
    assert label_values(s, "sbc_gateway_up", "carrier") == {"A"}  # carriers without probing are absent


def test_overload_state_is_exported() -> None:
    guard = OverloadGuard(rng=random.Random(1), ewma_alpha=1.0)
    collector = LiveCollector(live(overload=guard))
    assert value(scrape(collector), "sbc_overloaded") == 0
    for k in range(6):  # a stall and its grace tick, then +0.25 a tick at 2 s of lag: full after four
        guard.record_loop_lag(2.0, 1.0 + k * 0.1)
    shed = sum(not guard.admit_new_call(1.0) for _ in range(10))
    s = scrape(collector)
    assert value(s, "sbc_overloaded") == 1
    assert value(s, "sbc_overload_severity") == 1.0
    assert value(s, "sbc_event_loop_lag_ewma_seconds") == 2.0
    assert value(s, "sbc_overload_episodes_total") == 1
    assert value(s, "sbc_overload_shed_total") == shed == 10


async def test_monitor_feeds_the_loop_lag_histogram() -> None:
    before = value(scrape(), "sbc_event_loop_lag_seconds_count")
    slow_before = before - value(scrape(), "sbc_event_loop_lag_seconds_bucket", le="0.1")
    monitor = OverloadMonitor(
        OverloadGuard(), interval_s=0.02, process=SimpleNamespace(cpu_percent=lambda _: 0.0)
    )
    monitor.start()
    await asyncio.sleep(0.05)
    asyncio.get_running_loop().call_soon(time.sleep, 0.2)  # one stalled tick
    await asyncio.sleep(0.1)
    monitor.stop()
    s = scrape()
    assert value(s, "sbc_event_loop_lag_seconds_count") - before >= 3
    slow = value(s, "sbc_event_loop_lag_seconds_count") - value(
        s, "sbc_event_loop_lag_seconds_bucket", le="0.1"
    )
    assert slow - slow_before >= 1


@pytest.fixture
def relay() -> Iterator[object]:
    from rtp_relay_ext import RelayEngine

    engine = RelayEngine("127.0.0.1", 47000, 47063, media_timeout=0, hold_timeout=0)
    yield engine
    engine.close()


def test_relay_counters_and_thread_cpu(relay: object) -> None:
    sid = relay.allocate()  # type: ignore[attr-defined]
    collector = LiveCollector(live(relay=relay))
    end = time.process_time() + 0.05
    while time.process_time() < end:  # some CPU on this (the collecting) thread
        pass
    s = scrape(collector)
    assert value(s, "sbc_rtp_relay_sessions") == 1
    assert value(s, "sbc_rtp_relay_ports", state="total") == 64
    assert value(s, "sbc_rtp_relay_ports", state="free") < 64
    assert ("sbc_rtp_relay_packets_total", frozenset({("way", "in")})) in s
    assert value(s, "sbc_rtp_relay_kernel_flows") == 0  # nothing latched yet
    assert value(s, "sbc_rtp_relay_kernel_packets_total") == 0
    assert value(s, "sbc_thread_cpu_seconds_total", thread="loop") > 0
    assert ("sbc_thread_cpu_seconds_total", frozenset({("thread", "relay")})) in s
    assert value(s, "sbc_process_threads") >= 1 + len(relay.worker_tids())  # type: ignore[attr-defined]
    relay.free(sid)  # type: ignore[attr-defined]


def test_a_failing_part_does_not_break_the_scrape() -> None:
    class Broken:
        calls = property(lambda self: 1 / 0)
        prober = None

    s = scrape(LiveCollector(live(b2bua=Broken())))
    assert "sbc_build_info" in names(s)
    assert "sbc_active_calls" not in names(s)


def test_exposition_has_process_metrics_once_and_no_duplicate_families() -> None:
    """Process CPU/memory come from prometheus_client's ProcessCollector; the psutil collector adds
    only sbc_* figures, so no family name appears twice in one scrape."""
    text = generate_latest(exposition_for(live(b2bua=Net().b2bua))).decode()
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))
    assert "process_cpu_seconds_total" in text and "process_resident_memory_bytes" in text
    assert "sbc_active_calls" in types and "sbc_sip_responses_sent_total" in types
    assert "_created" not in text  # disabled: they would double the series count
