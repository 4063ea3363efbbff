"""Number normalisation and the DID index."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.model import Customer, Number, Trunk
from routing.numbers import (
    MAX_DIALLED_CHARS,
    MAX_E164_DIGITS,
    MIN_E164_DIGITS,
    NumberIndex,
    is_canonical_e164,
    normalize_e164,
    strip_tech_prefix,
)


@pytest.mark.parametrize(
    ("dialled", "expected"),
    [
        ("+14155550100", "+14155550100"),
        ("14155550100", "+14155550100"),
        ("4155550100", "+14155550100"),
        ("(415) 555-0100", "+14155550100"),
        ("415.555.0100", "+14155550100"),
        ("+1 415 555 0100", "+14155550100"),
        ("1-415-555-0100", "+14155550100"),
        ("  +14155550100  ", "+14155550100"),
        ("tel:+1-415-555-0100", "+14155550100"),
        ("tel: +44 (0)20 7946 0000", "+442079460000"),
        ("TEL:+14155550100;phone-context=example.com", "+14155550100"),
        ("+14155550100;npdi;rn=+14155550000", "+14155550100"),
        ("011442079460000", "+442079460000"),
        ("011 44 20 7946 0000", "+442079460000"),
        ("00442079460000", "+442079460000"),
        ("+44 (0)20 7946 0000", "+442079460000"),  # (0) trunk prefix is not dialled from abroad
        ("+44(0)2079460000", "+442079460000"),
        ("+44 (20) 7946 0000", "+442079460000"),  # other parentheses are just separators
        ("+44 (0)20", None),  # too short
        ("+442079460000", "+442079460000"),
        ("+6831234", "+6831234"),  # Niue: 7 digits, the shortest
        ("+123456789012345", None),  # country code 1 but not NANP shaped
        ("+493012345678901", "+493012345678901"),  # 15 digits
        ("+4930123456789012", None),  # 16 digits
        ("+683123", None),  # 6 digits
        ("", None),
        ("   ", None),
        ("+", None),
        ("tel:", None),
        ("abc", None),
        ("+1415555010a", None),
        ("*67 4155550100", None),
        ("4155550100#", None),
        ("+1+4155550100", None),
        ("+04155550100", None),  # country codes never start with 0
        ("0044", None),
        ("5550100", None),  # NANP local dialling: no area code to infer
        ("0155550100", None),  # NPA cannot start with 0
        ("4150550100", None),  # NXX cannot start with 0
        ("4151550100", None),  # NXX cannot start with 1
        ("+14151550100", None),
        ("24155550100", None),  # 11 digits not starting with 1 under NANP default
        ("+1415555010", None),  # NANP too short
        ("+141555501000", None),  # NANP too long
        ("٤١٥٥٥٥٠١٠٠", None),  # Arabic-Indic digits are not dialled digits
        ("+１４１５５５５０１００", None),  # full-width digits neither
        ("+¹4155550100", None),  # superscript one isdigit() but is not a digit
    ],
)
def test_normalize_nanp_default(dialled: str, expected: str | None) -> None:
    assert normalize_e164(dialled) == expected


@pytest.mark.parametrize(
    ("dialled", "cc", "expected"),
    [
        ("442079460000", "44", "+442079460000"),  # international without '+'
        ("00442079460000", "44", "+442079460000"),
        ("+14155550100", "44", "+14155550100"),
        ("14155550100", "44", "+14155550100"),
        ("4155550100", "44", "+4155550100"),  # not NANP national under another default
        ("011442079460000", "44", None),  # 011 is not an international prefix outside NANP
        ("02079460000", "44", None),  # national trunk prefix is not guessed
        ("5550100", "49", "+5550100"),
    ],
)
def test_normalize_other_default_country(dialled: str, cc: str, expected: str | None) -> None:
    assert normalize_e164(dialled, default_country_code=cc) == expected


@pytest.mark.parametrize("cc", ["", "0", "01", "1234", "a", "+1", "١"])
def test_bad_default_country_code_is_a_configuration_error(cc: str) -> None:
    with pytest.raises(ValueError, match="default_country_code"):
        normalize_e164("+14155550100", default_country_code=cc)


def test_overlong_input_rejected_early() -> None:
    assert normalize_e164("+14155550100" + " " * MAX_DIALLED_CHARS) is None
    assert normalize_e164(" " * (MAX_DIALLED_CHARS - 12) + "+14155550100") == "+14155550100"


def test_non_string_is_not_a_number() -> None:
    assert normalize_e164(None) is None  # type: ignore[arg-type]
    assert normalize_e164(14155550100) is None  # type: ignore[arg-type]


@given(st.text(max_size=40))
def test_normalize_is_total_and_canonical(text: str) -> None:
    out = normalize_e164(text)
    if out is not None:
        assert out[0] == "+"
        digits = out[1:]
        assert digits.isascii() and digits.isdigit()
        assert MIN_E164_DIGITS <= len(digits) <= MAX_E164_DIGITS
        assert digits[0] != "0"
        assert normalize_e164(out) == out
        assert is_canonical_e164(out)


@given(st.text(alphabet="0123456789+-.() #*", max_size=24), st.sampled_from(["1", "44", "49", "353"]))
def test_normalize_idempotent_on_dial_strings(text: str, cc: str) -> None:
    out = normalize_e164(text, cc)
    if out is not None:
        assert normalize_e164(out, cc) == out


@given(st.from_regex(r"[2-9][0-9]{2}[2-9][0-9]{6}", fullmatch=True))
def test_every_nanp_form_gives_the_same_number(national: str) -> None:
    expected = "+1" + national
    formatted = f"({national[:3]}) {national[3:6]}-{national[6:]}"
    for form in (
        national,
        "1" + national,
        "+1" + national,
        formatted,
        f"tel:+1-{national}",
        "0111" + national,
    ):
        assert normalize_e164(form) == expected


@given(st.text(max_size=20))
def test_is_canonical_agrees_with_normalize(text: str) -> None:
    assert is_canonical_e164(text) == (normalize_e164(text) == text)


@pytest.mark.parametrize(
    ("user", "prefix", "expected"),
    [
        ("7788#14155550100", "7788#", "14155550100"),
        ("14155550100", "7788#", "14155550100"),  # absent: unchanged
        ("14155550100", "", "14155550100"),
        ("7788#", "7788#", ""),
        ("778814155550100", "7788#", "778814155550100"),
    ],
)
def test_strip_tech_prefix(user: str, prefix: str, expected: str) -> None:
    assert strip_tech_prefix(user, prefix) == expected


def _index() -> NumberIndex:
    pbx = Trunk("pbx", "acme")
    other = Trunk("pbx", "globex")
    numbers = [
        Number("+14155550100", customer="acme", trunk="pbx"),
        Number("+14155550101", customer="globex", trunk="pbx"),
        Number("+14155550102"),  # inventory
        Number("+14155550103", customer="acme", application="ivr"),
        Number("+14155550104", customer="acme", trunk="gone"),
        Number("+14155550100", customer="globex", trunk="pbx"),  # duplicate
        Number("14155550105"),  # not canonical
        Number("+1 415 555 0106"),
    ]
    return NumberIndex(numbers, [Customer("acme", trunks=(pbx,)), Customer("globex", trunks=(other,))])


def test_lookup_and_trunk_for() -> None:
    idx = _index()
    n = idx.lookup("+14155550100")
    assert n is not None and n.customer == "acme"  # the duplicate did not replace it
    trunk = idx.trunk_for(n)
    assert trunk is not None and trunk.customer == "acme"
    n2 = idx.lookup("+14155550101")
    assert n2 is not None
    t2 = idx.trunk_for(n2)
    assert t2 is not None and t2.customer == "globex"  # same trunk name, right customer
    assert idx.trunk("acme", "pbx") is trunk


def test_lookup_misses() -> None:
    idx = _index()
    assert idx.lookup("+14155559999") is None
    assert idx.lookup("14155550100") is None  # callers normalise first
    assert idx.lookup("") is None
    assert idx.lookup("14155550105") is None  # the non-canonical row was skipped


def test_trunk_for_unassigned_or_other_destination() -> None:
    idx = _index()
    for e164 in ("+14155550102", "+14155550103", "+14155550104"):
        n = idx.lookup(e164)
        assert n is not None
        assert idx.trunk_for(n) is None
    assert idx.trunk_for(Number("+14155550199", trunk="pbx")) is None  # no customer


def test_index_reports_problems_instead_of_failing() -> None:
    idx = _index()
    assert len(idx) == 5
    text = "\n".join(idx.problems)
    assert "+14155550100: duplicate" in text
    assert "'14155550105': not canonical" in text
    assert "'+1 415 555 0106': not canonical" in text


def test_duplicate_trunk_is_reported() -> None:
    t1, t2 = Trunk("pbx", "acme", max_calls=1), Trunk("pbx", "acme", max_calls=2)
    idx = NumberIndex([], [Customer("acme", trunks=(t1, t2))])
    assert idx.trunk("acme", "pbx") is t1
    assert any("duplicate" in p for p in idx.problems)
