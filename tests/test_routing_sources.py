"""Source classification: carrier by address, trunks by address and by digest user."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.model import Carrier, Credential, Customer, Gateway, Snapshot, Trunk
from routing.sources import PrefixIndex, SourceClassifier, parse_ip, parse_network


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1 ", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),  # dual-stack socket reporting an IPv4 peer
        ("192.0.2.256", None),
        ("192.0.2", None),
        ("host.example.com", None),
        ("", None),
        ("1" * 200, None),
    ],
)
def test_parse_ip(text: str, expected: str | None) -> None:
    addr = parse_ip(text)
    assert (str(addr) if addr is not None else None) == expected


def test_parse_network_forms() -> None:
    assert str(parse_network("192.0.2.7/24")) == "192.0.2.0/24"  # host bits cleared
    assert str(parse_network("192.0.2.7")) == "192.0.2.7/32"
    assert str(parse_network("[2001:db8::1]")) == "2001:db8::1/128"
    assert str(parse_network("2001:db8::/32")) == "2001:db8::/32"
    for bad in ("192.0.2.0/33", "nonsense", "", "2001:db8::/129", "[2001:db8::]/32"):
        with pytest.raises(ValueError):
            parse_network(bad)


def _snapshot() -> Snapshot:
    att = Carrier(
        "att",
        gateways=(Gateway("198.51.100.10"), Gateway("sbc.att.example.com")),
        inbound_cidrs=("198.51.100.0/24", "2001:db8:a::/48"),
    )
    vz = Carrier(
        "vz", gateways=(Gateway("2001:db8:b::5", transport="tcp"),), inbound_cidrs=("198.51.100.128/25",)
    )
    wide = Carrier("wide", inbound_cidrs=("198.51.0.0/16", "bogus/8", "0.0.0.0/0"))
    pbx1 = Trunk(
        "pbx1",
        "acme",
        allowed_cidrs=("203.0.113.0/24",),
        credentials=(Credential("acme1", "s3cret"),),
    )
    pbx2 = Trunk("pbx2", "acme", allowed_cidrs=("203.0.113.7", "203.0.113.0/28", "not-an-ip"))
    gx = Trunk(
        "main",
        "globex",
        allowed_cidrs=("2001:db8:c::/64", "203.0.113.7/32"),
        credentials=(Credential("gx", "pw"), Credential("Acme1", "pw")),
    )
    return Snapshot(
        carriers=(att, vz, wide),
        customers=(Customer("acme", trunks=(pbx1, pbx2)), Customer("globex", trunks=(gx,))),
    )


def _names(carrier: Carrier | None) -> str | None:
    return None if carrier is None else carrier.name


def test_most_specific_carrier_cidr_wins() -> None:
    sc = SourceClassifier.from_snapshot(_snapshot())
    assert _names(sc.carrier_for("198.51.100.1")) == "att"  # /24
    assert _names(sc.carrier_for("198.51.100.200")) == "vz"  # /25 inside att's /24
    assert _names(sc.carrier_for("198.51.7.7")) == "wide"  # /16
    assert _names(sc.carrier_for("8.8.8.8")) == "wide"  # 0.0.0.0/0 catches the rest of IPv4
    assert _names(sc.carrier_for("::ffff:198.51.100.200")) == "vz"


def test_gateway_ip_literal_counts_as_source() -> None:
    sc = SourceClassifier.from_snapshot(_snapshot())
    assert _names(sc.carrier_for("2001:db8:b::5")) == "vz"
    assert _names(sc.carrier_for("[2001:db8:b::5]")) == "vz"
    assert sc.carrier_for("2001:db8:b::6") is None  # only the /128, no IPv6 default
    assert _names(sc.carrier_for("2001:db8:a:ffff::1")) == "att"


def test_resolved_gateway_hostnames_count_as_sources() -> None:
    snap = _snapshot()
    assert _names(SourceClassifier.from_snapshot(snap).carrier_for("192.0.2.99")) == "wide"
    sc = SourceClassifier.from_snapshot(snap, {"sbc.att.example.com": ["192.0.2.99", "2001:db8:f::1"]})
    assert _names(sc.carrier_for("192.0.2.99")) == "att"
    assert _names(sc.carrier_for("2001:db8:f::1")) == "att"


def test_bad_cidrs_are_reported_not_fatal() -> None:
    sc = SourceClassifier.from_snapshot(_snapshot())
    text = "\n".join(sc.problems)
    assert "carrier wide: inbound_cidr 'bogus/8'" in text
    assert "trunk acme/pbx2: allowed_cidr 'not-an-ip'" in text


def test_same_network_claimed_by_two_carriers_first_keeps_it() -> None:
    a = Carrier("a", inbound_cidrs=("192.0.2.0/24",))
    b = Carrier("b", inbound_cidrs=("192.0.2.0/24", "192.0.2.9/32"), gateways=(Gateway("192.0.2.10"),))
    sc = SourceClassifier([a, b], [])
    assert _names(sc.carrier_for("192.0.2.1")) == "a"
    assert _names(sc.carrier_for("192.0.2.9")) == "b"
    assert _names(sc.carrier_for("192.0.2.10")) == "b"
    assert any("already belongs to a" in p for p in sc.problems)


def test_carrier_repeating_its_own_network_is_not_a_conflict() -> None:
    a = Carrier("a", inbound_cidrs=("192.0.2.10/32",), gateways=(Gateway("192.0.2.10"),))
    sc = SourceClassifier([a], [])
    assert sc.problems == ()
    assert _names(sc.carrier_for("192.0.2.10")) == "a"


@pytest.mark.parametrize("ip", ["", "garbage", "999.1.1.1", "sbc.att.example.com"])
def test_unparsable_source_matches_nothing(ip: str) -> None:
    sc = SourceClassifier.from_snapshot(_snapshot())
    assert sc.carrier_for(ip) is None
    assert sc.trunks_for(ip) == []


def test_trunks_for_most_specific_first_each_once() -> None:
    sc = SourceClassifier.from_snapshot(_snapshot())
    names = [(t.customer, t.name) for t in sc.trunks_for("203.0.113.7")]
    # /32 (pbx2 then globex in snapshot order), pbx2 again at /28 is not repeated, then pbx1 /24
    assert names == [("acme", "pbx2"), ("globex", "main"), ("acme", "pbx1")]
    assert [t.name for t in sc.trunks_for("203.0.113.200")] == ["pbx1"]
    assert [t.name for t in sc.trunks_for("2001:db8:c::42")] == ["main"]
    assert sc.trunks_for("192.0.2.1") == []


def test_trunks_for_username_is_exact() -> None:
    sc = SourceClassifier.from_snapshot(_snapshot())
    assert [t.name for t in sc.trunks_for_username("acme1")] == ["pbx1"]
    assert [t.name for t in sc.trunks_for_username("Acme1")] == ["main"]
    assert sc.trunks_for_username("ACME1") == []
    assert sc.trunks_for_username("") == []


def test_shared_username_is_reported_and_returned() -> None:
    t1 = Trunk("a", "c1", credentials=(Credential("u", "p"),))
    t2 = Trunk("b", "c2", credentials=(Credential("u", "q"), Credential("u", "r")))
    sc = SourceClassifier([], [Customer("c1", trunks=(t1,)), Customer("c2", trunks=(t2,))])
    assert [t.name for t in sc.trunks_for_username("u")] == ["a", "b"]
    assert any("shared by trunks c1/a, c2/b" in p for p in sc.problems)


def test_returned_list_is_a_copy() -> None:
    sc = SourceClassifier.from_snapshot(_snapshot())
    sc.trunks_for_username("acme1").clear()
    assert len(sc.trunks_for_username("acme1")) == 1


# -- brute force comparison -------------------------------------------------------------------

_v4_networks = st.builds(
    lambda addr, length: ipaddress.ip_network(f"{ipaddress.IPv4Address(addr)}/{length}", strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
_v6_networks = st.builds(
    lambda addr, length: ipaddress.ip_network(f"{ipaddress.IPv6Address(addr)}/{length}", strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)


def _near(networks: list, draw_int: int, version: int):
    """An address inside one of the networks (or random), to make hits likely."""
    if networks and draw_int % 3:
        net = networks[draw_int % len(networks)]
        return net.network_address + (draw_int % net.num_addresses)
    if version == 4:
        return ipaddress.IPv4Address(draw_int % 2**32)
    return ipaddress.IPv6Address(draw_int)


@settings(max_examples=200)
@given(
    st.lists(st.one_of(_v4_networks, _v6_networks), max_size=30),
    st.lists(st.integers(0, 2**128 - 1), min_size=1, max_size=20),
)
def test_prefix_index_matches_brute_force(networks: list, probes: list[int]) -> None:
    idx: PrefixIndex[int] = PrefixIndex()
    for i, net in enumerate(networks):
        idx.add(net, i)
    for p in probes:
        for version in (4, 6):
            same = [n for n in networks if n.version == version]
            addr = _near(same, p, version)
            containing = [
                (n.prefixlen, i) for i, n in enumerate(networks) if n.version == version and addr in n
            ]
            if not containing:
                assert idx.longest(addr) is None
                assert idx.matches(addr) == []
                continue
            best_len = max(length for length, _ in containing)
            expected = [i for length, i in containing if length == best_len]
            # values for identical networks are kept in insertion order, duplicates of the same
            # value once; here every value is distinct so all of them are expected
            assert idx.longest(addr) == expected
            lengths = [length for length, _ in idx.matches(addr)]
            assert lengths == sorted({length for length, _ in containing}, reverse=True)
