"""LCR: longest-prefix match, customer scope, time windows."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.lcr import RouteTable, TimeWindow, route_digits
from routing.model import Route, RouteCarrier, Snapshot

DAY = 86_400.0
# 2023-11-14 00:00:00 UTC, a day boundary (1_699_920_000 is divisible by 86400)
MIDNIGHT = 1_699_920_000.0


def at(hh: int, mm: int = 0, ss: float = 0.0) -> float:
    return MIDNIGHT + hh * 3600 + mm * 60 + ss


def r(
    prefix: str,
    carrier: str = "x",
    customer: str | None = None,
    window: str | None = None,
    id: int | None = None,
) -> Route:
    return Route(prefix, (RouteCarrier(carrier),), customer=customer, time_window=window, id=id)


def test_midnight_constant_is_a_utc_midnight() -> None:
    assert MIDNIGHT % DAY == 0


# -- time windows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("09:00-17:00", 540, 1020),
        ("22:00-06:00", 1320, 360),
        ("00:00-24:00", 0, 1440),
        (" 08:30 - 09:45 ", 510, 585),
        ("23:59-00:00", 1439, 0),
    ],
)
def test_window_parse(text: str, start: int, end: int) -> None:
    assert TimeWindow.parse(text) == TimeWindow(start, end)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "9:00-17:00",
        "09:00",
        "09:00-17:00-18:00",
        "24:00-01:00",
        "10:60-11:00",
        "10:00-24:01",
        "10:00-25:00",
        "10:00-10:00",
        "00:00-00:00",
        "xx:00-10:00",
        "０９:00-17:00",
        "09:00–17:00",
    ],
)
def test_window_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="time window"):
        TimeWindow.parse(text)


def test_window_contains_half_open() -> None:
    w = TimeWindow.parse("09:00-17:00")
    assert not w.contains(at(8, 59, 59.999))
    assert w.contains(at(9))
    assert w.contains(at(16, 59, 59))
    assert not w.contains(at(17))
    assert w.contains(at(12) + 365 * DAY)  # any day


def test_window_wrapping_midnight() -> None:
    w = TimeWindow.parse("22:00-06:00")
    assert w.contains(at(22))
    assert w.contains(at(23, 59, 59))
    assert w.contains(at(0))
    assert w.contains(at(5, 59))
    assert not w.contains(at(6))
    assert not w.contains(at(12))
    assert not w.contains(at(21, 59))


def test_window_full_day_and_pre_epoch() -> None:
    assert all(TimeWindow.parse("00:00-24:00").contains(at(h)) for h in range(24))
    w = TimeWindow.parse("23:00-01:00")
    assert w.contains(-1.0)  # 1969-12-31 23:59:59 UTC
    assert not w.contains(-7200.0 - 1)  # 21:59:59


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_window_rejects_non_finite_now(now: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        TimeWindow.parse("09:00-17:00").contains(now)


@given(st.integers(0, 1439), st.integers(0, 1440), st.floats(-1e10, 1e10, allow_nan=False))
def test_window_contains_matches_definition(start: int, end: int, now: float) -> None:
    if start == end % 1440:
        return
    w = TimeWindow(start, end)
    minute = int(now // 60) % 1440
    expected = start <= minute < end if start < end else (minute >= start or minute < end)
    assert w.contains(now) == expected


# -- prefix matching ------------------------------------------------------------------------


def test_route_digits() -> None:
    assert route_digits("44") == "44"
    assert route_digits("+44") == "44"
    assert route_digits("") == ""
    assert route_digits("+") == ""
    for bad in ("4a", "++44", "4 4", "1" * 16, "٤٤"):
        assert route_digits(bad) is None


def test_longest_prefix_wins() -> None:
    t = RouteTable(
        [r("", "default"), r("4", "four"), r("44", "uk"), r("4420", "london"), r("44207", "inner")]
    )
    assert t.match("+442079460000", None, at(12)).carriers[0].name == "inner"
    assert t.match("+442089460000", None, at(12)).carriers[0].name == "london"
    assert t.match("+441619460000", None, at(12)).carriers[0].name == "uk"
    assert t.match("+491619460000", None, at(12)).carriers[0].name == "four"
    assert t.match("+14155550100", None, at(12)).carriers[0].name == "default"
    assert t.match("442079460000", None, at(12)).carriers[0].name == "inner"  # bare digits too


def test_no_route() -> None:
    t = RouteTable([r("44")])
    assert t.match("+14155550100", None, at(12)) is None
    assert t.candidates("+14155550100", None, at(12)) == []
    assert RouteTable([]).match("+14155550100", None, at(12)) is None


@pytest.mark.parametrize("bad", ["", "+", "+44a", "abc", "++44", "+44 20", "４４"])
def test_non_numbers_match_nothing(bad: str) -> None:
    t = RouteTable([r("")])
    assert t.match(bad, None, at(12)) is None


def test_customer_route_beats_global_at_equal_length_only() -> None:
    t = RouteTable(
        [
            r("44", "global44"),
            r("44", "acme44", customer="acme"),
            r("4420", "global4420"),
            r("4", "acme4", customer="acme"),
        ]
    )
    assert t.match("+441619460000", "acme", at(12)).carriers[0].name == "acme44"
    assert t.match("+441619460000", "globex", at(12)).carriers[0].name == "global44"
    assert t.match("+441619460000", None, at(12)).carriers[0].name == "global44"
    # a longer global prefix still beats the customer's shorter route
    assert t.match("+442079460000", "acme", at(12)).carriers[0].name == "global4420"
    assert t.match("+491619460000", "acme", at(12)).carriers[0].name == "acme4"
    assert t.match("+491619460000", "globex", at(12)) is None


def test_customer_scoped_route_is_order_independent() -> None:
    a = RouteTable([r("44", "g"), r("44", "c", customer="acme")])
    b = RouteTable([r("44", "c", customer="acme"), r("44", "g")])
    for t in (a, b):
        assert t.match("+442079460000", "acme", at(12)).carriers[0].name == "c"


def test_time_window_skips_to_next_candidate() -> None:
    t = RouteTable(
        [
            r("1", "day1"),
            r("1415", "night", window="22:00-06:00"),
            r("1415", "allday"),
            r("14155", "lunch", window="12:00-13:00"),
        ]
    )
    e = "+14155550100"
    assert t.match(e, None, at(12, 30)).carriers[0].name == "lunch"
    assert t.match(e, None, at(23)).carriers[0].name == "night"  # windowed beats unwindowed
    assert t.match(e, None, at(3)).carriers[0].name == "night"
    assert t.match(e, None, at(9)).carriers[0].name == "allday"
    assert [x.carriers[0].name for x in t.candidates(e, None, at(12, 30))] == ["lunch", "allday", "day1"]
    assert [x.carriers[0].name for x in t.candidates(e, None, at(23))] == ["night", "allday", "day1"]


def test_window_outside_falls_back_to_shorter_prefix() -> None:
    t = RouteTable([r("", "default"), r("44", "offpeak", window="18:00-08:00")])
    assert t.match("+442079460000", None, at(20)).carriers[0].name == "offpeak"
    assert t.match("+442079460000", None, at(10)).carriers[0].name == "default"


def test_full_precedence_order() -> None:
    routes = [
        r("44", "g-plain", id=1),
        r("44", "g-window", window="00:00-24:00", id=2),
        r("44", "c-plain", customer="acme", id=3),
        r("44", "c-window", customer="acme", window="00:00-24:00", id=4),
        r("44", "c-plain-2", customer="acme", id=5),
        r("442", "longer", id=6),
    ]
    t = RouteTable(routes)
    got = [x.carriers[0].name for x in t.candidates("+442079460000", "acme", at(1))]
    assert got == ["longer", "c-window", "c-plain", "c-plain-2", "g-window", "g-plain"]


def test_route_with_no_carriers_still_matches_to_block() -> None:
    block = Route("1900", ())
    t = RouteTable([r("1"), block])
    assert t.match("+19005550100", None, at(12)) is block


def test_bad_routes_are_reported_and_skipped() -> None:
    t = RouteTable([r("44", id=7), r("4x4", id=8), r("33", window="25:00-01:00", id=9), r("1" * 16)])
    assert len(t) == 1
    text = "\n".join(t.problems)
    assert "route 8 prefix '4x4'" in text
    assert "route 9 prefix '33'" in text and "not a time of day" in text
    assert "not digits" in text
    assert t.match("+33123456789", None, at(12)) is None


def test_plus_in_route_prefix_is_tolerated() -> None:
    t = RouteTable([r("+44", "uk")])
    assert t.match("+442079460000", None, at(12)).carriers[0].name == "uk"


@pytest.mark.parametrize("now", [math.nan, math.inf])
def test_match_rejects_non_finite_now(now: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        RouteTable([r("44")]).match("+442079460000", None, now)


def test_from_snapshot() -> None:
    t = RouteTable.from_snapshot(Snapshot(routes=(r("44"),)))
    assert len(t) == 1


def test_deep_trie_builds_without_recursion_trouble() -> None:
    routes = [r("1" * n, str(n)) for n in range(16)]
    t = RouteTable(routes)
    # matching works on digits; it does not judge whether the number is valid
    assert t.match("+" + "1" * 15, None, at(0)).carriers[0].name == "15"
    assert t.match("+" + "1" * 20, None, at(0)).carriers[0].name == "15"
    assert t.match("+12", None, at(0)).carriers[0].name == "1"


# -- brute force comparison -----------------------------------------------------------------

_routes = st.lists(
    st.builds(
        lambda prefix, carrier, customer, window: Route(
            prefix, (RouteCarrier(carrier),), customer=customer, time_window=window
        ),
        st.text(alphabet="0123", max_size=5),
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from([None, None, "acme", "globex"]),
        st.sampled_from([None, None, "09:00-17:00", "22:00-06:00", "12:00-12:01"]),
    ),
    max_size=40,
)


def _brute_force(routes: list[Route], e164: str, customer: str | None, now: float) -> list[Route]:
    """The documented precedence, written the slow obvious way."""
    digits = e164.lstrip("+")
    applicable = []
    for order, route in enumerate(routes):
        if not digits.startswith(route.prefix):
            continue
        if route.customer is not None and route.customer != customer:
            continue
        if route.time_window is not None and not TimeWindow.parse(route.time_window).contains(now):
            continue
        key = (-len(route.prefix), route.customer is None, route.time_window is None, order)
        applicable.append((key, route))
    return [route for _, route in sorted(applicable, key=lambda kr: kr[0])]


@settings(max_examples=300)
@given(
    _routes,
    st.text(alphabet="0123", min_size=1, max_size=8),
    st.sampled_from([None, "acme", "globex"]),
    st.floats(0, 2e9, allow_nan=False),
)
def test_matches_brute_force(routes: list[Route], digits: str, customer: str | None, now: float) -> None:
    t = RouteTable(routes)
    expected = _brute_force(routes, "+" + digits, customer, now)
    got = t.candidates("+" + digits, customer, now)
    assert [id(x) for x in got] == [id(x) for x in expected]
    best = t.match("+" + digits, customer, now)
    assert best is (expected[0] if expected else None)
