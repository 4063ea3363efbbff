"""Dialled-number normalisation and the inbound DID index.

Everything downstream (DID lookup, LCR, CDRs) speaks canonical E.164: ``"+"`` followed by 7 to 15
digits, first digit not ``0``. This module is the one place where the many ways a number arrives in
a Request-URI user part (``tel:`` form, national NANP digits, ``00``/``011`` international prefixes,
visual separators) are turned into that form, so the rules are written down once.

Normalisation rules of :func:`normalize_e164`, applied in this order:

1. Surrounding whitespace is dropped; a leading ``tel:`` scheme (any case) is dropped; anything from
   the first ``;`` on (URI parameters such as ``;phone-context=`` or ``;npdi``) is dropped.
2. In a ``+`` number a parenthesised ``(0)`` is removed: it is the national trunk prefix written
   inside international notation (``+44 (0)20 7946 0000``) and is never dialled from abroad.
   Then RFC 3966 visual separators ``- . ( )`` and spaces are removed.
3. What is left must be an optional leading ``+`` and ASCII digits only; otherwise ``None``
   (``*``, ``#``, letters, a ``+`` in the middle, non-ASCII digits are not numbers).
4. The international form is found:

   * ``+DIGITS``: the digits are the international number.
   * ``00DIGITS``: ITU-T E.164 international prefix, used by most of the world.
   * ``011DIGITS``: the NANP international prefix; only when the default country code is ``1``
     (elsewhere ``011`` is an ordinary national prefix, e.g. a UK area code).
   * default country code ``1`` and ten digits ``NXXNXXXXXX`` (N = 2-9): NANP national form,
     ``1`` is prepended.
   * default country code ``1`` and any other bare digits: they must already be ``1NXXNXXXXXX``;
     anything else is ``None`` because the NANP dialling plan needs ``011`` or ``+`` for
     international calls and a seven-digit local number has no area code we could infer.
   * any other default country code: bare digits are taken as an international number sent
     without its ``+`` (what many carriers and PBXs send: ``442079460000``). National forms with a
     trunk prefix (``0...``) are not guessed: whether the ``0`` is part of the number differs by
     country (dropped in the UK, kept in Italy).

5. The international number must be 7 to 15 digits and must not start with ``0`` (no country code
   does). Numbers in country code ``1`` must be exactly ``1NXXNXXXXXX``.
"""

from __future__ import annotations

from collections.abc import Iterable

from routing.model import Customer, Number, Snapshot, Trunk

# ITU-T E.164 §6: an international number is at most 15 digits (country code included).
MAX_E164_DIGITS = 15
# Shortest assigned international numbers are 7 digits: e.g. Niue (+683) and Tokelau (+690) use
# 4-digit subscriber numbers after a 3-digit country code.
MIN_E164_DIGITS = 7
# A SIP user part is unbounded in theory; anything much longer than a number with separators and
# URI parameters is garbage, and refusing it early keeps the work per INVITE bounded.
MAX_DIALLED_CHARS = 256
# NANP (country code 1): NPA-NXX-XXXX, ten national digits (ATIS-0300076, NANP numbering plan).
NANP_NATIONAL_DIGITS = 10
# RFC 3966 §3 visual-separator characters, plus the space people and PBXs insert.
VISUAL_SEPARATORS = "-.() "
# "+44 (0)20 ...": the national trunk prefix shown in international notation, not dialled.
TRUNK_PREFIX_IN_INTERNATIONAL = "(0)"
# ITU-T Recommendation E.164 international prefix used by most countries.
ITU_INTERNATIONAL_PREFIX = "00"
# NANP international prefix (only meaningful when the default country code is "1").
NANP_INTERNATIONAL_PREFIX = "011"
NANP_COUNTRY_CODE = "1"

_SEPARATOR_TABLE = str.maketrans("", "", VISUAL_SEPARATORS)


def _is_ascii_digits(s: str) -> bool:
    """True when ``s`` is non-empty and every character is an ASCII digit. ``str.isdigit`` alone is
    not enough (it accepts Arabic-Indic digits, superscripts...), but restricted to ASCII it is
    exactly ``[0-9]+``, and both checks run in C."""
    return s.isascii() and s.isdigit()


def _is_nanp_national(national: str) -> bool:
    """True for a ten-digit NANP number NPA-NXX-XXXX whose NPA and NXX start with 2-9."""
    return (
        len(national) == NANP_NATIONAL_DIGITS
        and _is_ascii_digits(national)
        and national[0] not in "01"
        and national[3] not in "01"
    )


def _valid_international(digits: str) -> bool:
    """Rule 5 of the module docstring: length, no leading zero, NANP shape for country code 1."""
    if not (MIN_E164_DIGITS <= len(digits) <= MAX_E164_DIGITS) or not _is_ascii_digits(digits):
        return False
    if digits[0] == "0":
        return False
    if digits.startswith(NANP_COUNTRY_CODE):
        return _is_nanp_national(digits[1:])
    return True


def is_canonical_e164(number: str) -> bool:
    """True when ``number`` is already canonical ``+E164``, i.e. ``normalize_e164(number) ==
    number``; a cheaper check for values that should be canonical (provisioned numbers)."""
    return number[:1] == "+" and _valid_international(number[1:])


def normalize_e164(number: str, default_country_code: str = NANP_COUNTRY_CODE) -> str | None:
    """Turn a dialled user part into canonical ``+E164``, or ``None`` when it cannot be a number.

    The rules are listed in the module docstring. The function is total: it never raises for any
    ``number`` string and is idempotent (``normalize_e164(normalize_e164(x)) == normalize_e164(x)``
    for every ``x`` it accepts). ``default_country_code`` must be 1 to 3 ASCII digits not starting
    with ``0``; anything else raises ``ValueError`` because it is a configuration error, not a bad
    number.
    """
    if not (
        1 <= len(default_country_code) <= 3
        and _is_ascii_digits(default_country_code)
        and default_country_code[0] != "0"
    ):
        raise ValueError(f"default_country_code must be 1-3 digits, not {default_country_code!r}")
    if not isinstance(number, str) or len(number) > MAX_DIALLED_CHARS:
        return None
    s = number.strip()
    if s[:4].lower() == "tel:":
        s = s[4:]
    s = s.split(";", 1)[0].strip()
    if s.startswith("+"):
        s = s.replace(TRUNK_PREFIX_IN_INTERNATIONAL, "")
    s = s.translate(_SEPARATOR_TABLE)
    if not s:
        return None
    nanp = default_country_code == NANP_COUNTRY_CODE
    if s[0] == "+":
        digits = s[1:]
    elif not _is_ascii_digits(s):
        return None
    elif s.startswith(ITU_INTERNATIONAL_PREFIX):
        digits = s[len(ITU_INTERNATIONAL_PREFIX) :]
    elif nanp and s.startswith(NANP_INTERNATIONAL_PREFIX):
        digits = s[len(NANP_INTERNATIONAL_PREFIX) :]
    elif nanp and _is_nanp_national(s):
        digits = NANP_COUNTRY_CODE + s
    elif nanp and not s.startswith(NANP_COUNTRY_CODE):
        return None
    else:
        digits = s
    return "+" + digits if _valid_international(digits) else None


def strip_tech_prefix(user: str, tech_prefix: str) -> str:
    """Remove a carrier's technical prefix (e.g. ``"7788#"``) from the front of a user part.

    Carriers that expect a tech prefix on calls we send often put the same prefix on calls they
    send us. Returns ``user`` without the prefix when it starts with it, and ``user`` unchanged
    otherwise (including an empty prefix), because a carrier may send some calls without it.
    """
    if tech_prefix and user.startswith(tech_prefix):
        return user[len(tech_prefix) :]
    return user


class NumberIndex:
    """The DID inventory keyed by canonical E.164, for inbound calls.

    Built once per snapshot (O(numbers + trunks)); :meth:`lookup` and :meth:`trunk_for` are single
    dict lookups, O(1). Entries the store should never have let in (an ``e164`` that is not
    canonical, a duplicate) are skipped and described in :attr:`problems` instead of failing the
    whole build, so one bad row cannot stop every other number from routing.
    """

    __slots__ = ("_by_e164", "_trunks", "problems")

    def __init__(self, numbers: Iterable[Number], customers: Iterable[Customer]) -> None:
        problems: list[str] = []
        by_e164: dict[str, Number] = {}
        for n in numbers:
            if not is_canonical_e164(n.e164):
                problems.append(f"number {n.e164!r}: not canonical +E164, skipped")
            elif n.e164 in by_e164:
                problems.append(f"number {n.e164}: duplicate, first entry kept")
            else:
                by_e164[n.e164] = n
        trunks: dict[tuple[str, str], Trunk] = {}
        for c in customers:
            for t in c.trunks:
                key = (c.name, t.name)
                if key in trunks:
                    problems.append(f"trunk {c.name}/{t.name}: duplicate, first entry kept")
                else:
                    trunks[key] = t
        self._by_e164 = by_e164
        self._trunks = trunks
        self.problems: tuple[str, ...] = tuple(problems)

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> NumberIndex:
        """Index ``snapshot.numbers`` and the trunks of ``snapshot.customers``."""
        return cls(snapshot.numbers, snapshot.customers)

    def __len__(self) -> int:
        return len(self._by_e164)

    def lookup(self, e164: str) -> Number | None:
        """The provisioned number for canonical ``e164`` (``"+14155550100"``), or ``None``.

        Callers normalise first (:func:`normalize_e164`); a non-canonical string simply misses.
        """
        return self._by_e164.get(e164)

    def trunk_for(self, number: Number) -> Trunk | None:
        """The trunk ``number`` is assigned to, or ``None`` when it is in the inventory, assigned to
        another destination (application, media endpoint), or names a trunk that does not exist in
        its customer."""
        if number.customer is None or number.trunk is None:
            return None
        return self._trunks.get((number.customer, number.trunk))

    def trunk(self, customer: str, name: str) -> Trunk | None:
        """The trunk called ``name`` of ``customer``, or ``None``."""
        return self._trunks.get((customer, name))
