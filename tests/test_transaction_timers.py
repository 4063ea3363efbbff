"""The timer heap: lazy deletion, compaction, exact next_timer(), and a randomised state walk."""

from __future__ import annotations

import contextlib
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from sbc.sip.events import (
    Address,
    RequestReceived,
    TransactionKey,
    TransactionTerminated,
    TransactionTimeout,
)
from sbc.sip.message import Request, make_response
from sbc.sip.transaction import HEAP_COMPACT_MIN, TransactionError, TransactionLayer
from tests.test_transaction import GATEWAY, GATEWAY_TLS, UAC, UAC_TCP, request, response


def test_next_timer_is_exact_after_transactions_end():
    layer = TransactionLayer()
    keys = [layer.send_request(request("OPTIONS", branch=f"z9hG4bK{i}"), GATEWAY, 0.0) for i in range(3)]
    assert layer.next_timer() == 0.5
    for i, key in enumerate(keys):
        layer.transport_error(key, 0.1)
        assert layer.next_timer() == (None if i == 2 else 0.5)


def test_handle_timer_early_or_twice_is_harmless():
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), GATEWAY, 0.0)
    layer.pop_outgoing()
    assert layer.handle_timer(0.4) == [] and layer.pop_outgoing() == []
    layer.handle_timer(0.5)
    assert len(layer.pop_outgoing()) == 1
    assert layer.handle_timer(0.5) == [] and layer.pop_outgoing() == []
    assert layer.next_timer() == 1.5


def test_late_handle_timer_fires_everything_due_in_order():
    layer = TransactionLayer()
    key = layer.send_request(request("OPTIONS"), GATEWAY, 0.0)
    layer.pop_outgoing()
    # Timer E (due 0.5) fires once and reschedules from `now` (past 1000), then F (due 32) fires.
    assert layer.handle_timer(1000.0) == [TransactionTimeout(key, "OPTIONS"), TransactionTerminated(key)]
    assert len(layer.pop_outgoing()) == 1
    assert len(layer) == 0


def test_heap_compacts_when_mostly_stale():
    layer = TransactionLayer()
    n = HEAP_COMPACT_MIN * 2
    for i in range(n):
        req = request("OPTIONS", branch=f"z9hG4bK{i}")
        layer.send_request(req, GATEWAY_TLS, 0.0)  # reliable: only Timer F is scheduled
        layer.receive(response(req, 200), GATEWAY_TLS, 0.1)  # K = 0: terminated, F entry stale
    assert len(layer) == 0
    assert len(layer._heap) <= HEAP_COMPACT_MIN  # compacted instead of holding n dead entries
    assert layer.next_timer() is None
    assert layer._heap == []


def test_compaction_while_timers_fire_keeps_every_live_timer():
    layer = TransactionLayer()
    n = HEAP_COMPACT_MIN * 2
    keys = [layer.send_request(request("OPTIONS", branch=f"z9hG4bK{i}"), GATEWAY, 0.0) for i in range(n)]
    layer.pop_outgoing()
    survivors = keys[-10:]
    for key in keys[:-10]:
        layer.transport_error(key, 0.1)
    heap = layer._heap
    layer.handle_timer(0.5)  # the survivors' Timer E reschedules trigger a compaction mid-loop
    assert layer._heap is heap and len(heap) == 2 * len(survivors)
    assert len(layer.pop_outgoing()) == len(survivors)
    assert layer.next_timer() == 1.5
    layer.handle_timer(1.5)
    assert len(layer.pop_outgoing()) == len(survivors)
    assert [layer.state(k) for k in survivors] == ["Trying"] * len(survivors)


def test_many_concurrent_transactions_fire_in_deadline_order():
    layer = TransactionLayer()
    keys = []
    for i in range(200):
        keys.append(layer.send_request(request("OPTIONS", branch=f"z9hG4bK{i}"), GATEWAY_TLS, i * 0.01))
    seen = []
    while (t := layer.next_timer()) is not None:
        seen += [e.key for e in layer.handle_timer(t) if isinstance(e, TransactionTerminated)]
    assert seen == keys


# -- randomised walk: whatever the order of inputs, the layer stays consistent ----------------------

SOURCES = [UAC, UAC_TCP]
STATUSES = [100, 180, 200, 486]


@st.composite
def scripts(draw):
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["new_in", "new_out", "resp_in", "resp_out", "retx", "ack", "cancel", "err", "tick"]
                ),
                st.integers(0, 3),
                st.sampled_from(STATUSES),
                st.floats(0.0, 8.0),
            ),
            max_size=40,
        )
    )


@settings(max_examples=150, deadline=None)
@given(scripts(), st.booleans())
def test_random_walk_every_key_terminates_once(script, reliable):
    layer = TransactionLayer()
    now = 0.0
    server_keys: dict[int, TransactionKey] = {}
    server_requests: dict[int, Request] = {}
    client: dict[int, tuple[TransactionKey, object]] = {}
    # A server key can come back after its transaction ended (a late retransmission starts a new
    # one), so count incarnations: every start is matched by exactly one TransactionTerminated.
    issued: Counter[TransactionKey] = Counter()
    terminated: Counter[TransactionKey] = Counter()
    cancels: set[TransactionKey] = set()

    def note(events):
        for e in events:
            if isinstance(e, TransactionTerminated):
                terminated[e.key] += 1
            if isinstance(e, RequestReceived):
                issued[e.key] += 1

    src = UAC_TCP if reliable else UAC
    dst = GATEWAY_TLS if reliable else GATEWAY
    transport = "TCP" if reliable else "UDP"
    for op, i, status, dt in script:
        now += dt
        method = "INVITE" if i % 2 == 0 else "OPTIONS"
        branch = f"z9hG4bKw{i}"
        if op == "new_in" or op == "retx":
            req = request(method, branch=branch, transport=transport)
            events = layer.receive(req, src, now)
            note(events)
            for e in events:
                if isinstance(e, RequestReceived):
                    server_keys[i] = e.key
                    server_requests[i] = e.request  # the layer drops its own once answered
        elif op == "resp_out" and i in server_keys:
            with contextlib.suppress(TransactionError):
                answer = make_response(server_requests[i], status, to_tag="x")
                note(layer.send_response(server_keys[i], answer, now))
        elif op == "new_out" and i not in client:
            req = request(method, branch=branch + "c")
            key = layer.send_request(req, dst, now)
            client[i] = (key, req)
            issued[key] += 1
        elif op == "resp_in" and i in client:
            key, req = client[i]
            note(layer.receive(response(req, status), dst, now))  # type: ignore[arg-type]
        elif op == "ack":
            note(layer.receive(request("ACK", branch=branch, to_tag="x", transport=transport), src, now))
        elif op == "cancel" and i in client:
            ckey = layer.cancel(client[i][0], now) if method == "INVITE" else None
            if ckey is not None and ckey not in cancels:
                cancels.add(ckey)
                issued[ckey] += 1
        elif op == "err":
            for k in list(server_keys.values()) + [c[0] for c in client.values()]:
                if layer.state(k) is not None:
                    note(layer.transport_error(k, now))
                    break
        note(layer.handle_timer(now))
        for o in layer.pop_outgoing():
            assert isinstance(o.dest, Address) and o.data
    # Answer whatever server transaction still waits for the TU, then let every timer run out.
    for i, key in server_keys.items():
        if layer.state(key) is not None:
            with contextlib.suppress(TransactionError):
                note(layer.send_response(key, make_response(server_requests[i], 500, to_tag="x"), now))
    # Client INVITEs left in Proceeding wait forever for a final (the TU's Timer C ends them).
    for key, req in client.values():
        if layer.state(key) is not None:
            note(layer.receive(response(req, 408), dst, now))  # type: ignore[arg-type]
    while (t := layer.next_timer()) is not None:
        note(layer.handle_timer(t))
    assert len(layer) == 0
    # Every transaction that started has ended once (CANCELs never sent end with their INVITE).
    assert terminated == issued
