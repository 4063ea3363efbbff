"""sbc.b2bua.call's From/To and Contact helpers: the memoised paths give what a fresh parse gives."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbc.b2bua import call as call_module
from sbc.b2bua.call import contact_uri, strip_tag
from sbc.sip.errors import SIPParseError
from sbc.sip.events import Address
from sbc.sip.headers import NameAddr, parse_contact, parse_name_addr

VALUES = [
    '"NEW YORK NY" <sip:+12125550199@203.0.113.10;user=phone>;tag=from1',
    '"NEW YORK NY" <sip:+12125550199@203.0.113.10;user=phone>;tag=from2',
    "<sip:+14155550100@198.51.100.20;user=phone>",
    "<sip:+14155550100@198.51.100.20;user=phone>;tag=abc;x=1",
    "<sip:a@b>;x=1;tag=abc",
    "<sip:a@b>;TAG=abc",
    "<sip:a@b;tag=inside>",
    "<sip:a@b;tag=inside>;tag=outside",
    'Bob <sip:b@c>;tag="quoted"',
    '<sip:a@b>;x=">";tag=1',
    "sip:a@b;tag=1",
    "<sip:a@b>;tag=1 ;y=2",
    "<sip:a@b> ; tag=1",
    "<sip:a@b>;tag=",
    "<sip:a@b>;TAG=x",
    "<sip:a@b>;tag=y;TAG=x",
    "<sip:a@b> ; tag=1",
    "<sip:a@b>;tag=z ; tag=1",
    "<sip:a@b>;tag=t1;tag=t2",
]


def test_a_duplicate_tag_is_refused_even_after_its_caller_was_remembered() -> None:
    call_module._untagged.clear()
    for good, bad in [("<sip:a@b>;TAG=x", "<sip:a@b>;tag=y;TAG=x"), ("<sip:a@b> ; tag=1", "<sip:a@b>;tag=z ; tag=1")]:
        strip_tag(good)
        with pytest.raises(SIPParseError):
            strip_tag(bad)


def _fresh(value: str) -> str:
    na = parse_name_addr(value, what="From")
    return str(NameAddr(na.display_name, na.uri, {k: v for k, v in na.params.items() if k != "tag"}))


def _outcome(fn, value: str):  # noqa: ANN001, ANN202
    try:
        return fn(value)
    except SIPParseError:
        return "refused"


@pytest.mark.parametrize("value", VALUES)
def test_strip_tag_is_a_fresh_parse_without_the_tag(value: str) -> None:
    call_module._untagged.clear()
    assert _outcome(strip_tag, value) == _outcome(_fresh, value)
    assert _outcome(strip_tag, value) == _outcome(_fresh, value)  # now from the memo, if it took it


def test_one_caller_is_parsed_once_whatever_the_tag() -> None:
    call_module._untagged.clear()
    first = strip_tag('"A" <sip:+1212@203.0.113.10>;tag=one')
    assert strip_tag('"A" <sip:+1212@203.0.113.10>;tag=two') is first
    assert list(call_module._untagged) == ['"A" <sip:+1212@203.0.113.10>']


@given(
    st.lists(
        st.sampled_from(['"A b"', "Bob", " ", "<sip:a@b>", "<sip:a@b;tag=u>", ";tag=", "t1", "t2", ";x=1", ";x",
                         "=", '"', ">", "<", ";", "sip:c@d", ";TAG=T"]),  # fmt: skip
        max_size=7,
    ).map("".join)
)
def test_strip_tag_agrees_on_generated_values(value: str) -> None:
    expected = _outcome(_fresh, value)
    assert _outcome(strip_tag, value) == expected
    assert _outcome(strip_tag, value) == expected


def test_contact_uri_is_the_first_contacts_uri() -> None:
    value = "<sip:pbx@192.0.2.30:5070;transport=udp>;expires=60, <sip:other@192.0.2.31>"
    assert contact_uri(value) == str(parse_contact(value)[0].uri) == "sip:pbx@192.0.2.30:5070;transport=udp"
    assert contact_uri(value) == "sip:pbx@192.0.2.30:5070;transport=udp"
    assert contact_uri("*") is None
    assert contact_uri(None) is None and contact_uri("") is None
    with pytest.raises(SIPParseError):
        contact_uri("<sip:a@b")
    with pytest.raises(SIPParseError):  # a bad value is refused every time, never remembered
        contact_uri("<sip:a@b")


def test_written_out_inits_give_the_declared_defaults() -> None:
    """Leg's and Call's __init__ are written out (call.py: Cython's generated one looks the
    dataclasses module up per instance), so each default is spelt twice: in the field list and in
    __init__. Built from the required arguments only, every field has its declared default, and a
    default factory gives each instance a container of its own."""
    def check(cls, make):  # noqa: ANN001, ANN202
        one, two = make(), make()
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                assert getattr(one, f.name) == f.default, (cls.__name__, f.name)
            elif f.default_factory is not dataclasses.MISSING:
                assert getattr(one, f.name) == f.default_factory(), (cls.__name__, f.name)
                assert getattr(one, f.name) is not getattr(two, f.name), (cls.__name__, f.name)

    def leg() -> call_module.Leg:
        return call_module.Leg("c1", "t1", "<sip:a@b>", "<sip:c@d>", Address("udp", "192.0.2.1", 5060))

    check(call_module.Leg, leg)
    check(call_module.Call, lambda: call_module.Call("id1", "inbound", leg(), "+1", "+2", 1.0))
