"""The provisioning model as plain immutable values that routing decisions read.

The store (``sbc.store``) loads these from SQLite/PostgreSQL into a :class:`Snapshot`; routing
functions take a snapshot and never do I/O. Names follow ``DESIGN.md`` and the provision file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# RFC 3261 failover practice: a carrier that times out (408) or fails (5xx) is worth retrying
# elsewhere; 486/487/6xx are final for the caller. Carriers may override this list.
DEFAULT_FAILOVER_CODES: tuple[int, ...] = (408, 500, 502, 503, 504)


@dataclass(frozen=True, slots=True)
class Gateway:
    """One signalling address of a carrier."""

    host: str
    port: int = 5060
    transport: str = "udp"  # udp | tcp | tls
    priority: int = 10  # lower is tried first
    weight: int = 100  # share among gateways of equal priority


@dataclass(frozen=True, slots=True)
class Carrier:
    """A PSTN carrier: where outbound calls go and where inbound calls come from."""

    name: str
    gateways: tuple[Gateway, ...] = ()
    inbound_cidrs: tuple[str, ...] = ()
    tech_prefix: str = ""
    strip_plus: bool = False
    failover_codes: tuple[int, ...] = DEFAULT_FAILOVER_CODES
    probe_interval_s: float = 0.0  # 0 = no OPTIONS probing
    max_calls: int | None = None
    max_cps: float | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Credential:
    """Digest credentials a trunk may authenticate with."""

    username: str
    password: str


@dataclass(frozen=True, slots=True)
class TrunkTarget:
    """Where inbound calls to a trunk's numbers are delivered."""

    uri: str  # e.g. "sip:pbx.example.com:5060;transport=udp"
    priority: int = 10
    weight: int = 100


@dataclass(frozen=True, slots=True)
class Trunk:
    """A customer's SIP trunk."""

    name: str
    customer: str
    allowed_cidrs: tuple[str, ...] = ()
    credentials: tuple[Credential, ...] = ()
    targets: tuple[TrunkTarget, ...] = ()
    max_calls: int | None = None
    max_cps: float | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Customer:
    """A tenant: owns trunks, numbers and (later) applications and API keys."""

    name: str
    max_calls: int | None = None
    max_cps: float | None = None
    trunks: tuple[Trunk, ...] = ()
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Number:
    """An E.164 DID. ``customer``/``trunk`` are None while the number sits in the inventory."""

    e164: str  # "+14155550100"
    customer: str | None = None
    trunk: str | None = None
    application: str | None = None
    media_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class Application:
    """A customer's programmable call handler, the destination of numbers naming it.

    Exactly one of ``call_hook`` (a webhook asked what to do with each call, ``fallback_url``
    when it fails) and ``flow`` (an inline list of actions, each a JSON object with an
    ``action`` key) is set. ``signing_secret`` keys the HMAC signature of webhook requests.
    """

    name: str
    customer: str
    call_hook: str | None = None
    fallback_url: str | None = None
    status_hook: str | None = None
    signing_secret: str | None = field(default=None, repr=False)
    # Left out of the hash: the actions are dicts; equality still compares them.
    flow: tuple[dict[str, object], ...] | None = field(default=None, hash=False)
    id: int | None = None


@dataclass(frozen=True, slots=True)
class RouteCarrier:
    """A carrier's place in a route."""

    name: str
    priority: int = 10
    weight: int = 100


@dataclass(frozen=True, slots=True)
class Route:
    """An outbound least-cost-routing entry.

    ``prefix`` is matched against the E.164 number without its '+'. ``customer`` limits the route
    to one customer's calls. ``time_window`` is "HH:MM-HH:MM" in UTC (may wrap midnight) or None.
    """

    prefix: str
    carriers: tuple[RouteCarrier, ...]
    customer: str | None = None
    time_window: str | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything routing needs, as of one store version. Replaced whole when the store changes."""

    carriers: tuple[Carrier, ...] = ()
    customers: tuple[Customer, ...] = ()
    numbers: tuple[Number, ...] = ()
    routes: tuple[Route, ...] = ()
    version: int = 0
    applications: tuple[Application, ...] = ()
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)
