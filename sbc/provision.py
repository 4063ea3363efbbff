"""The declarative provision file: validate it whole, then apply it to the store in one transaction.

``sbc provision FILE.yaml --db URL`` makes the store hold exactly what the file lists: carriers,
customers with their trunks, numbers and routes are created, updated or deleted, matched by their
natural keys (carrier name, customer name, (customer, trunk name), e164, (prefix, customer)).

The REST API (``sbc.api``) writes the same tables. What the file does to what the API made:

* **numbers**: the file is the whole truth, like for every kind it lists: numbers it does not
  list are deleted, the number inventory (numbers without a customer) included, and each listed
  number gets exactly the customer and destination the file gives (a trunk, an ``application``
  or a ``media_endpoint``). Manage numbers with the file or with the API, not both.
* **applications** and **API keys** are not in the file: they are created through the API and
  the file leaves them alone. A number may name an application of its customer that already
  exists in the store; a customer the file deletes takes its applications and keys with it.

Contracts:

* **Refused whole, with paths.** A file with any problem changes nothing. :class:`ProvisionError`
  lists every problem found, each with the path of the offending key, e.g.
  ``customers[0].trunks[1].allowed_cidrs[0]: '10.0.0.300/8' is not a valid CIDR``. Shape and value
  problems are all reported together; cross-reference problems (unknown carrier, duplicate name,
  ...) are reported once the shape is right, since they cannot be checked on a broken shape.
* **All four top-level keys are required.** A kind left out would otherwise mean "delete all of
  them"; an operator who wants that writes ``numbers: []``.
* **Atomic.** :func:`apply_provision` runs in one database transaction; if anything fails nothing
  is applied.
* **Version.** A transaction that changes something bumps ``store_version`` by exactly one. A
  file that matches the store already (re-applying the same file) changes nothing, reports zero
  counts and leaves the version alone, so other nodes do not rebuild an identical snapshot.
* **Secrets.** Passwords are never echoed in error messages or in reprs of the parsed document.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from routing.model import DEFAULT_FAILOVER_CODES
from sbc.sip.errors import SIPParseError
from sbc.sip.uri import SipURI, parse_uri
from sbc.store.schema import (
    CREDENTIAL_MAX_LEN,
    HOST_MAX_LEN,
    NAME_MAX_LEN,
    PREFIX_MAX_LEN,
    PRIORITY_MAX,
    SQL_INT_MAX,
    TECH_PREFIX_MAX_LEN,
    TRANSPORTS,
    URI_MAX_LEN,
    URL_MAX_LEN,
    WEIGHT_MAX,
    ApplicationRow,
    CarrierRow,
    CustomerRow,
    GatewayRow,
    NumberRow,
    RouteCarrierRow,
    RouteRow,
    TrunkCredentialRow,
    TrunkRow,
    TrunkTargetRow,
)
from sbc.store.store import Store, StoreError, bump_version

# --- limits -----------------------------------------------------------------------------------

#: E.164: a country code never starts with 0 and a full number has at most 15 digits
#: (ITU-T E.164 §6.1); 8 is the shortest international DID we accept as provisionable.
E164_MIN_DIGITS = 8
E164_MAX_DIGITS = 15
#: RFC 3261 §19.1.2 default ports: 5060 for UDP/TCP, 5061 for TLS.
SIP_DEFAULT_PORT = 5060
SIPS_DEFAULT_PORT = 5061
PORT_MIN = 1
PORT_MAX = 65535
#: Failover triggers are final failure responses: 1xx is not final, 2xx is success and 3xx is
#: a redirect the B2BUA follows or relays, so only 4xx..6xx make sense.
FAILOVER_CODE_MIN = 400
FAILOVER_CODE_MAX = 699
#: OPTIONS probing: 0 disables it; otherwise at least 1 s (faster would be a flood, Kamailio's
#: dispatcher ds_ping_interval is commonly 10-30 s) and at most an hour (slower is no health check).
PROBE_INTERVAL_MIN_S = 1.0
PROBE_INTERVAL_MAX_S = 3600.0
#: Calls per second limit ceiling: far above any single trunk or carrier; a larger value is a typo.
MAX_CPS_LIMIT = 100_000.0
#: Digest passwords shorter than this are brute-forced by SIP scanners within hours
#: (friendly-scanner/sipvicious campaigns against port 5060 are continuous).
PASSWORD_MIN_LEN = 8

#: Exit codes of :func:`provision_main`.
EXIT_OK = 0
EXIT_STORE_ERROR = 1
EXIT_BAD_FILE = 2

#: The kinds counted in a :class:`ProvisionReport`, in application order.
KINDS: tuple[str, ...] = ("carriers", "customers", "trunks", "numbers", "routes")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_E164_RE = re.compile(rf"^\+[1-9][0-9]{{{E164_MIN_DIGITS - 1},{E164_MAX_DIGITS - 1}}}$")
_PREFIX_RE = re.compile(r"^[0-9]*$")
_TECH_PREFIX_RE = re.compile(r"^[0-9#*]*$")
_TIME_WINDOW_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])$")
_HOST_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# Digest usernames: visible ASCII except '"' and '\' (they need quoting in the header) and ':'
# (HA1 = H(username ":" realm ":" password) would become ambiguous).
_USERNAME_RE = re.compile(r"^[!#-9;-\[\]-~]+$")
_PASSWORD_RE = re.compile(r"^[ -~]+$")


# --- errors -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProvisionIssue:
    """One problem of a provision file: where (``path``) and what (``message``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ProvisionError(Exception):
    """A provision file was refused; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: list[ProvisionIssue]) -> None:
        self.issues: tuple[ProvisionIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


# --- single-value checks (used as pydantic validators) ----------------------------------------


def _name(value: str) -> str:
    if not value or len(value) > NAME_MAX_LEN or not _NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: 1 to {NAME_MAX_LEN} characters, letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return value


def _is_hostname(value: str) -> bool:
    if not value or len(value) > HOST_MAX_LEN:
        return False
    labels = value.split(".")
    # An all-numeric last label is a mistyped IPv4 address (10.0.0.300), not a DNS name.
    return all(_HOST_LABEL_RE.match(label) for label in labels) and not labels[-1].isdigit()


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _is_hostname(value):
            raise ValueError(f"{value!r} is not an IP address or host name") from None
    return value


def _cidr(value: str) -> str:
    """Validate an IPv4/IPv6 network and return its canonical text (a bare address becomes /32 or /128)."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid CIDR") from None
    if net.network_address != ipaddress.ip_interface(value).ip:
        raise ValueError(f"{value!r} has host bits set; did you mean '{net}'?")
    return str(net)


def _e164(value: str) -> str:
    if not _E164_RE.match(value):
        raise ValueError(
            f"{value!r} is not an E.164 number: '+' then {E164_MIN_DIGITS} to {E164_MAX_DIGITS} digits, "
            "the first not 0"
        )
    return value


def _prefix(value: str) -> str:
    if len(value) > PREFIX_MAX_LEN or not _PREFIX_RE.match(value):
        raise ValueError(f"{value!r} is not a route prefix: up to {PREFIX_MAX_LEN} digits, no '+'")
    return value


def _tech_prefix(value: str) -> str:
    if len(value) > TECH_PREFIX_MAX_LEN or not _TECH_PREFIX_RE.match(value):
        raise ValueError(f"{value!r} is not a tech prefix: up to {TECH_PREFIX_MAX_LEN} of 0-9, '#', '*'")
    return value


def _time_window(value: str) -> str:
    match = _TIME_WINDOW_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a time window 'HH:MM-HH:MM' (UTC, 24 h)")
    if match.group(1, 2) == match.group(3, 4):
        raise ValueError(f"{value!r} starts and ends at the same time; leave time_window out for always")
    return value


def _username(value: str) -> str:
    if len(value) > CREDENTIAL_MAX_LEN or not _USERNAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid digest username: 1 to {CREDENTIAL_MAX_LEN} visible ASCII characters "
            "other than '\"', '\\' and ':'"
        )
    return value


def _password(value: str) -> str:
    # The value itself never appears in the message.
    if not PASSWORD_MIN_LEN <= len(value) <= CREDENTIAL_MAX_LEN:
        raise ValueError(f"password must be {PASSWORD_MIN_LEN} to {CREDENTIAL_MAX_LEN} characters long")
    if not _PASSWORD_RE.match(value):
        raise ValueError("password must be printable ASCII")
    return value


def check_sip_uri(value: str) -> str:
    """Validate a trunk target with the project's SIP URI parser (RFC 3261 §19.1).

    Beyond syntax: only sip:/sips:, a port other than 0, transport (if given) udp/tcp/tls as the
    SBC speaks them towards customers, no sips: over UDP, and no ``?headers`` (they would be copied
    into every INVITE sent to the target).
    """
    if len(value) > URI_MAX_LEN:
        raise ValueError(f"{value[:40]!r}... is longer than {URI_MAX_LEN} characters")
    try:
        uri = parse_uri(value, what="target")
    except SIPParseError as exc:
        raise ValueError(f"{value!r} is not a valid SIP URI ({exc.reason})") from None
    if not isinstance(uri, SipURI):
        raise ValueError(f"{value!r} is not a sip: or sips: URI")
    if uri.port == 0:
        raise ValueError(f"{value!r}: port 0 is not a port")
    if uri.headers:
        raise ValueError(f"{value!r}: URI headers ('?...') are not allowed in a target")
    transport = uri.transport
    if "transport" in uri.params and transport not in TRANSPORTS:
        raise ValueError(f"{value!r}: transport {uri.params['transport']!r} is not udp, tcp or tls")
    if uri.scheme == "sips" and transport == "udp":
        raise ValueError(f"{value!r}: sips requires TLS, not transport=udp (RFC 3261 §26.2.2)")
    return value


#: Schemes of AI media stream endpoints a number can be delivered to (DESIGN.md: WebSocket or QUIC).
MEDIA_ENDPOINT_SCHEMES: tuple[str, ...] = ("ws", "wss", "quic")


def check_url(value: str, schemes: tuple[str, ...], what: str) -> str:
    """Validate an absolute URL with one of ``schemes`` and a valid host; return it unchanged.

    Refused: other schemes, no or bad host, a port outside 1..65535, user:password@ (secrets do
    not belong in a URL that is echoed back by the API), whitespace or control characters, and
    URLs longer than :data:`URL_MAX_LEN`.
    """
    shown = value if len(value) <= 60 else value[:57] + "..."
    if len(value) > URL_MAX_LEN:
        raise ValueError(f"{what} {shown!r} is longer than {URL_MAX_LEN} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{what} {shown!r} contains whitespace or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"{what} {shown!r} is not a valid URL") from None
    if parts.scheme.lower() not in schemes:
        raise ValueError(f"{what} {shown!r} must start with " + ", ".join(f"{x}://" for x in schemes))
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{what} {shown!r} must not contain user:password@")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"{what} {shown!r} has no host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _is_hostname(host):
            raise ValueError(f"{what} {shown!r}: {host!r} is not an IP address or host name") from None
    if port == 0:
        raise ValueError(f"{what} {shown!r}: port 0 is not a port")
    return value


def _media_endpoint(value: str) -> str:
    return check_url(value, MEDIA_ENDPOINT_SCHEMES, "media endpoint")


def _probe_interval(value: float) -> float:
    if value != 0 and not PROBE_INTERVAL_MIN_S <= value <= PROBE_INTERVAL_MAX_S:
        raise ValueError(
            f"{value!r} must be 0 (no probing) or {PROBE_INTERVAL_MIN_S:g} to {PROBE_INTERVAL_MAX_S:g} seconds"
        )
    return value


def _quoted(what: str, example: str, *, echo: bool = True) -> Callable[[Any], Any]:
    """Before-validator: refuse a YAML non-string where a string is needed, explaining why.

    YAML 1.1 reads ``+14155550100`` as the integer 14155550100 and ``0044`` as octal 36, so a
    number or prefix must be quoted; silently converting back would corrupt it.
    """

    def check(value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            shown = f" (YAML read {value!r} as a number)" if echo else ""
            raise ValueError(f"{what} must be a quoted string, e.g. '{example}'{shown}")
        return value

    return check


Name = Annotated[str, AfterValidator(_name)]
Host = Annotated[str, AfterValidator(_host)]
Cidr = Annotated[str, AfterValidator(_cidr)]
E164 = Annotated[str, BeforeValidator(_quoted("an E.164 number", "+14155550100")), AfterValidator(_e164)]
Prefix = Annotated[str, BeforeValidator(_quoted("a prefix", "44")), AfterValidator(_prefix)]
TechPrefix = Annotated[str, BeforeValidator(_quoted("a tech prefix", "1234#")), AfterValidator(_tech_prefix)]
TimeWindow = Annotated[str, AfterValidator(_time_window)]
Username = Annotated[str, BeforeValidator(_quoted("a username", "1001")), AfterValidator(_username)]
Password = Annotated[
    str, BeforeValidator(_quoted("a password", "s3cret-pw", echo=False)), AfterValidator(_password)
]
SipUri = Annotated[str, AfterValidator(check_sip_uri)]
MediaEndpoint = Annotated[str, AfterValidator(_media_endpoint)]
Port = Annotated[int, Field(ge=PORT_MIN, le=PORT_MAX)]
Priority = Annotated[int, Field(ge=0, le=PRIORITY_MAX)]
Weight = Annotated[int, Field(ge=0, le=WEIGHT_MAX)]
MaxCalls = Annotated[int, Field(ge=0, le=SQL_INT_MAX)]
MaxCps = Annotated[float, Field(ge=0, le=MAX_CPS_LIMIT)]
FailoverCode = Annotated[int, Field(ge=FAILOVER_CODE_MIN, le=FAILOVER_CODE_MAX)]
ProbeInterval = Annotated[float, Field(ge=0), AfterValidator(_probe_interval)]


# --- the document model -----------------------------------------------------------------------


class _Spec(BaseModel):
    """Base of every provision-file object: unknown keys refused, no type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GatewaySpec(_Spec):
    """``carriers[].gateways[]``. ``port`` defaults to 5061 for TLS and 5060 otherwise."""

    host: Host
    port: Port = SIP_DEFAULT_PORT
    transport: Literal["udp", "tcp", "tls"] = "udp"
    priority: Priority = 10
    weight: Weight = 100

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and "port" not in data and data.get("transport") == "tls":
            return {**data, "port": SIPS_DEFAULT_PORT}
        return data


class CarrierSpec(_Spec):
    """``carriers[]``."""

    name: Name
    gateways: list[GatewaySpec] = []
    inbound_cidrs: list[Cidr] = []
    tech_prefix: TechPrefix = ""
    strip_plus: bool = False
    failover_codes: list[FailoverCode] = list(DEFAULT_FAILOVER_CODES)
    probe_interval_s: ProbeInterval = 0.0
    max_calls: MaxCalls | None = None
    max_cps: MaxCps | None = None


class CredentialSpec(_Spec):
    """``customers[].trunks[].credentials[]``; the password is kept out of ``repr``."""

    username: Username
    password: Password = Field(repr=False)


class TargetSpec(_Spec):
    """``customers[].trunks[].targets[]``."""

    uri: SipUri
    priority: Priority = 10
    weight: Weight = 100


class TrunkSpec(_Spec):
    """``customers[].trunks[]``."""

    name: Name
    allowed_cidrs: list[Cidr] = []
    credentials: list[CredentialSpec] = []
    targets: list[TargetSpec] = []
    max_calls: MaxCalls | None = None
    max_cps: MaxCps | None = None


class CustomerSpec(_Spec):
    """``customers[]``."""

    name: Name
    max_calls: MaxCalls | None = None
    max_cps: MaxCps | None = None
    trunks: list[TrunkSpec] = []


class NumberSpec(_Spec):
    """``numbers[]``: a DID, in the inventory when ``customer`` is absent.

    At most one destination: ``trunk``, ``application`` (an application of the customer that
    exists in the store: applications are made through the API) or ``media_endpoint``.
    """

    e164: E164
    customer: Name | None = None
    trunk: Name | None = None
    application: Name | None = None
    media_endpoint: MediaEndpoint | None = None


class RouteCarrierSpec(_Spec):
    """``routes[].carriers[]``."""

    name: Name
    priority: Priority = 10
    weight: Weight = 100


class RouteSpec(_Spec):
    """``routes[]``: ``prefix`` "" is the default route (matches every number)."""

    prefix: Prefix
    customer: Name | None = None
    time_window: TimeWindow | None = None
    carriers: list[RouteCarrierSpec] = Field(min_length=1)


class ProvisionDoc(_Spec):
    """A whole provision file. Validating this checks shape and values; use :func:`parse_provision`
    (or :func:`load_provision_file`) to also check cross references."""

    carriers: list[CarrierSpec]
    customers: list[CustomerSpec]
    numbers: list[NumberSpec]
    routes: list[RouteSpec]


# --- error rendering --------------------------------------------------------------------------


def render_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic ``loc`` as a path: ``('customers', 0, 'trunks')`` -> ``customers[0].trunks``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The spec model that the object at ``loc`` is validated against, if any."""
    current: Any = ProvisionDoc
    for part in loc:
        while get_origin(current) is Annotated:
            current = get_args(current)[0]
        if isinstance(part, int):
            if get_origin(current) is not list:
                return None
            current = get_args(current)[0]
        else:
            if (
                not (isinstance(current, type) and issubclass(current, BaseModel))
                or part not in current.model_fields
            ):
                return None
            current = current.model_fields[part].annotation
    while get_origin(current) is Annotated:
        current = get_args(current)[0]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _issue_from_pydantic(error: Mapping[str, Any]) -> ProvisionIssue:
    loc = tuple(error["loc"])
    path = render_path(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = f"; allowed: {', '.join(parent.model_fields)}" if parent else ""
        return ProvisionIssue(path, f"unknown key{allowed}")
    if kind == "missing":
        if len(loc) == 1 and loc[0] in KINDS:
            return ProvisionIssue(
                path, "required; write it as [] to provision none (leaving it out would delete all)"
            )
        return ProvisionIssue(path, "required key missing")
    message = str(error["msg"])
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    elif "password" not in loc:
        message = f"{message} (got {error.get('input')!r})"
    return ProvisionIssue(path, message)


# --- cross-reference checks -------------------------------------------------------------------


def check_consistency(doc: ProvisionDoc) -> list[ProvisionIssue]:
    """Check what single values cannot: uniqueness and cross references. Returns the issues found.

    Refused: duplicate carrier/customer names, trunk names within a customer, credential usernames
    across all trunks, e164s, (prefix, customer) routes, carriers within a route, identical gateways
    within a carrier, identical target URIs within a trunk, repeated CIDRs in a list, the same
    inbound CIDR on two carriers (the source address would not identify the carrier), repeated
    failover codes; a number whose customer or trunk does not exist, whose trunk belongs to
    another customer, or which names a trunk without a customer; a route naming an unknown
    customer, an unknown carrier, or a carrier without gateways.
    """
    issues: list[ProvisionIssue] = []

    def dup(seen: dict[Any, str], key: Any, path: str, what: str) -> None:
        if key in seen:
            issues.append(ProvisionIssue(path, f"duplicate {what} (first at {seen[key]})"))
        else:
            seen[key] = path

    carriers: dict[str, str] = {}
    inbound: dict[str, str] = {}
    for ci, carrier in enumerate(doc.carriers):
        base = f"carriers[{ci}]"
        dup(carriers, carrier.name, f"{base}.name", f"carrier name {carrier.name!r}")
        gateways: dict[tuple[str, int, str], str] = {}
        for gi, gw in enumerate(carrier.gateways):
            dup(gateways, (gw.host.lower(), gw.port, gw.transport), f"{base}.gateways[{gi}]", "gateway")
        local: dict[str, str] = {}
        for ni, cidr in enumerate(carrier.inbound_cidrs):
            path = f"{base}.inbound_cidrs[{ni}]"
            if cidr in local:
                dup(local, cidr, path, f"CIDR {cidr}")
            elif cidr in inbound:
                issues.append(ProvisionIssue(path, f"{cidr} is already an inbound CIDR of {inbound[cidr]}"))
            else:
                local[cidr] = path
                inbound[cidr] = f"carrier {carrier.name!r}"
        codes: dict[int, str] = {}
        for fi, code in enumerate(carrier.failover_codes):
            dup(codes, code, f"{base}.failover_codes[{fi}]", f"failover code {code}")
    has_gateways: dict[str, bool] = {}
    for carrier in doc.carriers:  # a duplicate name is reported above; judge by the first one
        has_gateways.setdefault(carrier.name, bool(carrier.gateways))

    customers: dict[str, str] = {}
    trunks_of: dict[str, set[str]] = {}
    usernames: dict[str, str] = {}
    for ui, customer in enumerate(doc.customers):
        base = f"customers[{ui}]"
        dup(customers, customer.name, f"{base}.name", f"customer name {customer.name!r}")
        names: dict[str, str] = {}
        for ti, trunk in enumerate(customer.trunks):
            tbase = f"{base}.trunks[{ti}]"
            dup(
                names, trunk.name, f"{tbase}.name", f"trunk name {trunk.name!r} in customer {customer.name!r}"
            )
            cidrs: dict[str, str] = {}
            for ai, cidr in enumerate(trunk.allowed_cidrs):
                dup(cidrs, cidr, f"{tbase}.allowed_cidrs[{ai}]", f"CIDR {cidr}")
            for ki, cred in enumerate(trunk.credentials):
                dup(
                    usernames,
                    cred.username,
                    f"{tbase}.credentials[{ki}].username",
                    f"username {cred.username!r}",
                )
            uris: dict[str, str] = {}
            for xi, target in enumerate(trunk.targets):
                dup(uris, target.uri, f"{tbase}.targets[{xi}].uri", f"target {target.uri!r}")
        trunks_of.setdefault(customer.name, set()).update(names)

    e164s: dict[str, str] = {}
    for ni, number in enumerate(doc.numbers):
        base = f"numbers[{ni}]"
        dup(e164s, number.e164, f"{base}.e164", f"number {number.e164}")
        if number.customer is None:
            if number.trunk is not None:
                issues.append(
                    ProvisionIssue(f"{base}.trunk", "a trunk needs a customer: add the customer key")
                )
        elif number.customer not in customers:
            issues.append(ProvisionIssue(f"{base}.customer", f"unknown customer {number.customer!r}"))
        elif number.trunk is not None and number.trunk not in trunks_of[number.customer]:
            issues.append(
                ProvisionIssue(f"{base}.trunk", f"customer {number.customer!r} has no trunk {number.trunk!r}")
            )
        destinations = [k for k in ("trunk", "application", "media_endpoint") if getattr(number, k) is not None]
        if len(destinations) > 1:
            issues.append(
                ProvisionIssue(
                    f"{base}.{destinations[1]}",
                    f"a number has one destination; {' and '.join(destinations)} are both given",
                )
            )
        if number.customer is None:
            for key in ("application", "media_endpoint"):
                if getattr(number, key) is not None:
                    issues.append(
                        ProvisionIssue(f"{base}.{key}", f"{key} needs a customer: add the customer key")
                    )

    routes: dict[tuple[str, str | None], str] = {}
    for ri, route in enumerate(doc.routes):
        base = f"routes[{ri}]"
        scope = f"customer {route.customer!r}" if route.customer else "no customer"
        dup(routes, (route.prefix, route.customer), f"{base}.prefix", f"route {route.prefix!r} for {scope}")
        if route.customer is not None and route.customer not in customers:
            issues.append(ProvisionIssue(f"{base}.customer", f"unknown customer {route.customer!r}"))
        used: dict[str, str] = {}
        for ci, rc in enumerate(route.carriers):
            path = f"{base}.carriers[{ci}].name"
            dup(used, rc.name, path, f"carrier {rc.name!r} in this route")
            if rc.name not in carriers:
                issues.append(ProvisionIssue(path, f"unknown carrier {rc.name!r}"))
            elif not has_gateways[rc.name]:
                issues.append(ProvisionIssue(path, f"carrier {rc.name!r} has no gateways to route to"))
    return issues


def parse_provision(data: object) -> ProvisionDoc:
    """Validate a parsed document (the YAML's top-level mapping) completely.

    Returns the :class:`ProvisionDoc`; raises :class:`ProvisionError` listing every issue.
    """
    if not isinstance(data, dict):
        got = "an empty document" if data is None else f"a {type(data).__name__}"
        raise ProvisionError(
            [
                ProvisionIssue(
                    "", f"the document must be a mapping with carriers, customers, numbers, routes; got {got}"
                )
            ]
        )
    try:
        doc = ProvisionDoc.model_validate(data)
    except ValidationError as exc:
        raise ProvisionError([_issue_from_pydantic(e) for e in exc.errors(include_url=False)]) from None
    issues = check_consistency(doc)
    if issues:
        raise ProvisionError(issues)
    return doc


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (plain PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_provision_file(path: str | os.PathLike[str]) -> ProvisionDoc:
    """Read, parse and fully validate a YAML provision file.

    Raises :class:`ProvisionError`: for an unreadable file (path = the file name), a YAML error
    (path = ``FILE:LINE:COLUMN``, 1-based), duplicate keys, or any validation issue.
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ProvisionError([ProvisionIssue(name, f"cannot read: {reason}")]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ProvisionError([ProvisionIssue(where, f"YAML error: {detail}")]) from None
    except yaml.YAMLError as exc:
        raise ProvisionError([ProvisionIssue(name, f"YAML error: {exc}")]) from None
    return parse_provision(data)


# --- applying ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProvisionReport:
    """What :func:`apply_provision` did: counts per kind (see :data:`KINDS`) and the store version after it."""

    version: int
    created: Mapping[str, int]
    updated: Mapping[str, int]
    deleted: Mapping[str, int]

    @property
    def changed(self) -> bool:
        """True when anything was created, updated or deleted."""
        return any(any(counts.values()) for counts in (self.created, self.updated, self.deleted))

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (the CLI prints it on one line)."""
        return {
            "version": self.version,
            "changed": self.changed,
            "created": dict(self.created),
            "updated": dict(self.updated),
            "deleted": dict(self.deleted),
        }


@dataclass(slots=True)
class _Tally:
    created: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    updated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def changed(self) -> bool:
        return any(any(c.values()) for c in (self.created, self.updated, self.deleted))


@dataclass(slots=True)
class _State:
    """Rows of the store as loaded at the start of the transaction, plus what must go at the end."""

    carriers: dict[str, CarrierRow]
    customers: dict[str, CustomerRow]
    trunks: dict[tuple[str, str], TrunkRow] = field(default_factory=dict)
    doomed_trunks: list[TrunkRow] = field(default_factory=list)


def _set_fields(row: Any, values: Mapping[str, Any]) -> bool:
    """Assign the values that differ; return True when any did."""
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


def _carrier_fields(spec: CarrierSpec) -> dict[str, Any]:
    return {
        "tech_prefix": spec.tech_prefix,
        "strip_plus": spec.strip_plus,
        "failover_codes": list(spec.failover_codes),
        "inbound_cidrs": list(spec.inbound_cidrs),
        "probe_interval_s": spec.probe_interval_s,
        "max_calls": spec.max_calls,
        "max_cps": spec.max_cps,
    }


def _gateway_rows(spec: CarrierSpec) -> list[GatewayRow]:
    return [
        GatewayRow(
            position=i, host=g.host, port=g.port, transport=g.transport, priority=g.priority, weight=g.weight
        )
        for i, g in enumerate(spec.gateways)
    ]


def _apply_carriers(session: Session, doc: ProvisionDoc, state: _State, tally: _Tally) -> None:
    """Create and update carriers (with their gateways); deletion happens in :func:`_delete_unlisted`."""
    for spec in doc.carriers:
        row = state.carriers.get(spec.name)
        if row is None:
            row = CarrierRow(name=spec.name, **_carrier_fields(spec))
            row.gateways = _gateway_rows(spec)
            session.add(row)
            state.carriers[spec.name] = row
            tally.created["carriers"] += 1
            continue
        changed = _set_fields(row, _carrier_fields(spec))
        have = [(g.host, g.port, g.transport, g.priority, g.weight) for g in row.gateways]
        want = [(g.host, g.port, g.transport, g.priority, g.weight) for g in spec.gateways]
        if have != want:
            row.gateways = _gateway_rows(spec)
            changed = True
        tally.updated["carriers"] += changed
    session.flush()


def _apply_customers(session: Session, doc: ProvisionDoc, state: _State, tally: _Tally) -> None:
    """Create and update customers and their trunks, credentials and targets.

    Credentials are replaced in two flushes (old ones removed everywhere first) because a
    username may move from one trunk to another and usernames are unique across trunks.
    """
    listed = {c.name for c in doc.customers}
    for name, row in state.customers.items():
        for trunk in row.trunks:
            state.trunks[(name, trunk.name)] = trunk
            if name not in listed:
                state.doomed_trunks.append(trunk)

    new_credentials: list[tuple[TrunkRow, TrunkSpec]] = []
    for spec in doc.customers:
        row = state.customers.get(spec.name)
        if row is None:
            row = CustomerRow(name=spec.name, max_calls=spec.max_calls, max_cps=spec.max_cps)
            session.add(row)
            state.customers[spec.name] = row
            tally.created["customers"] += 1
        else:
            tally.updated["customers"] += _set_fields(
                row, {"max_calls": spec.max_calls, "max_cps": spec.max_cps}
            )
        listed_trunks = {t.name for t in spec.trunks}
        state.doomed_trunks.extend(t for t in row.trunks if t.name not in listed_trunks)
        for tspec in spec.trunks:
            values = {
                "allowed_cidrs": list(tspec.allowed_cidrs),
                "max_calls": tspec.max_calls,
                "max_cps": tspec.max_cps,
            }
            targets = [(t.uri, t.priority, t.weight) for t in tspec.targets]
            trunk = state.trunks.get((spec.name, tspec.name))
            if trunk is None:
                trunk = TrunkRow(customer=row, name=tspec.name, **values)
                trunk.targets = [
                    TrunkTargetRow(position=i, uri=u, priority=p, weight=w)
                    for i, (u, p, w) in enumerate(targets)
                ]
                session.add(trunk)
                state.trunks[(spec.name, tspec.name)] = trunk
                new_credentials.append((trunk, tspec))
                tally.created["trunks"] += 1
                continue
            changed = _set_fields(trunk, values)
            if [(t.uri, t.priority, t.weight) for t in trunk.targets] != targets:
                trunk.targets = [
                    TrunkTargetRow(position=i, uri=u, priority=p, weight=w)
                    for i, (u, p, w) in enumerate(targets)
                ]
                changed = True
            if [(c.username, c.password) for c in trunk.credentials] != [
                (c.username, c.password) for c in tspec.credentials
            ]:
                trunk.credentials.clear()
                new_credentials.append((trunk, tspec))
                changed = True
            tally.updated["trunks"] += changed
    for trunk in state.doomed_trunks:
        trunk.credentials.clear()
    session.flush()
    for trunk, tspec in new_credentials:
        trunk.credentials.extend(
            TrunkCredentialRow(position=i, username=c.username, password=c.password)
            for i, c in enumerate(tspec.credentials)
        )
    session.flush()


def _apply_numbers(session: Session, doc: ProvisionDoc, state: _State, tally: _Tally) -> None:
    """Create, update and delete numbers; afterwards no number points at a trunk about to go.

    Raises :class:`ProvisionError` (the caller's transaction is then rolled back) when a number
    names an application its customer does not have in the store.
    """
    current = {n.e164: n for n in session.scalars(select(NumberRow))}
    listed = {n.e164 for n in doc.numbers}
    applications = {
        (customer_id, name): app_id
        for app_id, customer_id, name in session.execute(
            select(ApplicationRow.id, ApplicationRow.customer_id, ApplicationRow.name)
        )
    }
    missing = [
        ProvisionIssue(
            f"numbers[{i}].application",
            f"customer {spec.customer!r} has no application {spec.application!r} "
            "(applications are created through the API)",
        )
        for i, spec in enumerate(doc.numbers)
        if spec.customer
        and spec.application
        and (state.customers[spec.customer].id, spec.application) not in applications
    ]
    if missing:
        raise ProvisionError(missing)
    for e164, row in current.items():
        if e164 not in listed:
            session.delete(row)
            tally.deleted["numbers"] += 1
    for spec in doc.numbers:
        customer = state.customers[spec.customer] if spec.customer else None
        trunk = state.trunks[(spec.customer, spec.trunk)] if spec.customer and spec.trunk else None
        values = {
            "customer_id": customer.id if customer else None,
            "trunk_id": trunk.id if trunk else None,
            "application_id": applications[(customer.id, spec.application)]
            if customer and spec.application
            else None,
            "media_endpoint": spec.media_endpoint,
        }
        row = current.get(spec.e164)
        if row is None:
            session.add(NumberRow(e164=spec.e164, **values))
            tally.created["numbers"] += 1
        else:
            tally.updated["numbers"] += _set_fields(row, values)
    session.flush()


def _apply_routes(session: Session, doc: ProvisionDoc, state: _State, tally: _Tally) -> None:
    """Create, update and delete routes; route carriers are replaced in two flushes (unique per route)."""
    rows = session.scalars(
        select(RouteRow).options(
            selectinload(RouteRow.customer),
            selectinload(RouteRow.carriers).selectinload(RouteCarrierRow.carrier),
        )
    ).all()
    current = {(r.prefix, r.customer.name if r.customer else None): r for r in rows}
    listed = {(r.prefix, r.customer) for r in doc.routes}
    for key, row in current.items():
        if key not in listed:
            session.delete(row)
            tally.deleted["routes"] += 1
    refill: list[tuple[RouteRow, RouteSpec]] = []
    for spec in doc.routes:
        row = current.get((spec.prefix, spec.customer))
        if row is None:
            row = RouteRow(
                prefix=spec.prefix,
                customer=state.customers[spec.customer] if spec.customer else None,
                time_window=spec.time_window,
            )
            session.add(row)
            refill.append((row, spec))
            tally.created["routes"] += 1
            continue
        changed = _set_fields(row, {"time_window": spec.time_window})
        have = [(rc.carrier.name, rc.priority, rc.weight) for rc in row.carriers]
        if have != [(rc.name, rc.priority, rc.weight) for rc in spec.carriers]:
            row.carriers.clear()
            refill.append((row, spec))
            changed = True
        tally.updated["routes"] += changed
    session.flush()
    for row, spec in refill:
        row.carriers.extend(
            RouteCarrierRow(
                carrier=state.carriers[rc.name], position=i, priority=rc.priority, weight=rc.weight
            )
            for i, rc in enumerate(spec.carriers)
        )
    session.flush()


def _delete_unlisted(session: Session, doc: ProvisionDoc, state: _State, tally: _Tally) -> None:
    """Delete trunks, customers and carriers the file no longer lists (last: numbers and routes
    that referenced them are already gone or repointed)."""
    listed_customers = {c.name for c in doc.customers}
    for trunk in state.doomed_trunks:
        session.delete(trunk)
        tally.deleted["trunks"] += 1
    for name, row in state.customers.items():
        if name not in listed_customers:
            session.delete(row)
            tally.deleted["customers"] += 1
    listed_carriers = {c.name for c in doc.carriers}
    for name, row in state.carriers.items():
        if name not in listed_carriers:
            session.delete(row)
            tally.deleted["carriers"] += 1
    session.flush()


def _apply_sync(session: Session, doc: ProvisionDoc) -> ProvisionReport:
    """The whole apply, inside the caller's transaction (run through ``AsyncSession.run_sync``)."""
    version = bump_version(session)  # first: takes the write lock before anything is read
    state = _State(
        carriers={
            c.name: c for c in session.scalars(select(CarrierRow).options(selectinload(CarrierRow.gateways)))
        },
        customers={
            c.name: c
            for c in session.scalars(
                select(CustomerRow).options(
                    selectinload(CustomerRow.trunks).selectinload(TrunkRow.credentials),
                    selectinload(CustomerRow.trunks).selectinload(TrunkRow.targets),
                )
            )
        },
    )
    tally = _Tally()
    _apply_carriers(session, doc, state, tally)
    _apply_customers(session, doc, state, tally)
    _apply_numbers(session, doc, state, tally)
    _apply_routes(session, doc, state, tally)
    _delete_unlisted(session, doc, state, tally)
    return ProvisionReport(
        version=version if tally.changed else version - 1,
        created=MappingProxyType(tally.created),
        updated=MappingProxyType(tally.updated),
        deleted=MappingProxyType(tally.deleted),
    )


async def apply_provision(store: Store, doc: ProvisionDoc | Mapping[str, Any]) -> ProvisionReport:
    """Make the store hold exactly what ``doc`` lists, in one transaction.

    ``doc`` is a :class:`ProvisionDoc` or a plain mapping (validated with :func:`parse_provision`).
    Returns the counts of created/updated/deleted objects per kind and the resulting version.
    Raises :class:`ProvisionError` for an invalid document (nothing touched) and SQLAlchemy errors
    if the database fails; in every failure case the transaction is rolled back and the store is
    exactly as before. When nothing differs the transaction is rolled back too, so the version
    does not move.
    """
    if not isinstance(doc, ProvisionDoc):
        doc = parse_provision(dict(doc))
    else:
        issues = check_consistency(doc)
        if issues:
            raise ProvisionError(issues)
    async with store.session() as session:
        try:
            report = await session.run_sync(_apply_sync, doc)
        except BaseException:
            await session.rollback()
            raise
        if report.changed:
            await session.commit()
        else:
            await session.rollback()
    return report


# --- CLI --------------------------------------------------------------------------------------


def _describe_db_error(exc: BaseException) -> str:
    """A one-line description of a store failure without SQL parameters (they may hold passwords)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {exc.orig}"
    return f"{type(exc).__name__}: {exc}"


async def _apply_file(doc: ProvisionDoc, db_url: str) -> ProvisionReport:
    store = await Store.open(db_url)
    try:
        return await apply_provision(store, doc)
    finally:
        await store.close()


def provision_main(path: str, db_url: str) -> int:
    """``sbc provision FILE --db URL``: validate and apply a provision file.

    On success prints one JSON line (file, version, changed, counts) on stdout and returns 0.
    A bad file prints one issue per line on stderr and returns 2 (:data:`EXIT_BAD_FILE`); a store
    failure prints one line on stderr and returns 1 (:data:`EXIT_STORE_ERROR`). Must be called
    outside a running event loop.
    """
    try:
        doc = load_provision_file(path)
        report = asyncio.run(_apply_file(doc, db_url))
    except ProvisionError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return EXIT_BAD_FILE
    except (StoreError, SQLAlchemyError, OSError) as exc:
        print(f"store error: {_describe_db_error(exc)}", file=sys.stderr)
        return EXIT_STORE_ERROR
    print(json.dumps({"file": path, **report.to_json()}, separators=(",", ":")))
    return EXIT_OK


__all__ = [
    "EXIT_BAD_FILE",
    "EXIT_OK",
    "EXIT_STORE_ERROR",
    "KINDS",
    "MEDIA_ENDPOINT_SCHEMES",
    "CarrierSpec",
    "CredentialSpec",
    "CustomerSpec",
    "GatewaySpec",
    "NumberSpec",
    "ProvisionDoc",
    "ProvisionError",
    "ProvisionIssue",
    "ProvisionReport",
    "RouteCarrierSpec",
    "RouteSpec",
    "TargetSpec",
    "TrunkSpec",
    "apply_provision",
    "check_consistency",
    "check_sip_uri",
    "check_url",
    "load_provision_file",
    "parse_provision",
    "provision_main",
    "render_path",
]
