"""Relational schema of the provisioning store and the CDR table (SQLAlchemy 2 declarative ORM).

The tables mirror the data model of ``DESIGN.md`` and the frozen dataclasses of
:mod:`routing.model`; :class:`sbc.store.store.Store` turns rows into those dataclasses.

Portability contract: only types that behave the same on SQLite and PostgreSQL are used
(``Integer``, ``String``, ``Boolean``, ``Float``, ``JSON`` and :class:`UtcDateTime`); constraint
names come from :data:`NAMING_CONVENTION` so later Alembic migrations can address them on both.

Integrity rules the database itself enforces (so a buggy writer cannot break routing):

* natural keys are unique: carrier name, customer name, (customer, trunk name), credential
  username (globally: a digest username must identify exactly one trunk), number e164, and
  (route prefix, customer) -- including the customer-less case, through a partial unique index,
  because a plain UNIQUE treats NULLs as distinct on both SQLite and PostgreSQL;
* a number assigned to a trunk must be assigned to that trunk's customer: ``numbers`` carries a
  composite foreign key ``(customer_id, trunk_id) -> trunks(customer_id, id)``;
* children (gateways, credentials, targets, route carriers) go with their parent
  (``ON DELETE CASCADE``); rows that *reference* provisioning (numbers, route carriers) block the
  deletion of what they reference (``RESTRICT``), so deleting a trunk that still has numbers fails
  instead of silently leaving DIDs pointing nowhere;
* ``store_version`` has exactly one row (``id = 1``).

CDRs store names, not foreign keys: a CDR must outlive the carrier or customer it mentions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# --- limits shared by the schema and the provision-file validation (sbc.provision) -----------

#: Carrier, customer, trunk and API-key names: they appear in metrics labels, log lines and REST
#: paths, so they are short identifiers. 64 is PostgreSQL's identifier length (NAMEDATALEN - 1).
NAME_MAX_LEN = 64
#: A DNS name is at most 253 characters in text form (RFC 1035 §2.3.4, 255 octets on the wire).
HOST_MAX_LEN = 253
#: Digest usernames and passwords: RFC 3261 sets no limit; 128 is far above what PBXs and
#: carriers use (Asterisk's pjsip caps auth fields well below that) and bounds HA1 input.
CREDENTIAL_MAX_LEN = 128
#: SIP URIs of trunk targets; RFC 3261 has no limit, 512 leaves room for parameters while
#: keeping one bad line of YAML from storing kilobytes.
URI_MAX_LEN = 512
#: E.164 allows at most 15 digits (ITU-T E.164 §6.1), so "+" and 15 digits.
E164_MAX_LEN = 16
#: A route prefix is a leading part of an E.164 number, so at most 15 digits.
PREFIX_MAX_LEN = 15
#: Technical prefixes some carriers require (e.g. "1234#"): short digit strings in practice.
TECH_PREFIX_MAX_LEN = 16
#: "HH:MM-HH:MM".
TIME_WINDOW_LEN = 11
#: SIP transports a gateway may use (RFC 3261 §18 plus TLS per §26.2); WebSocket is customer-side.
TRANSPORTS: tuple[str, ...] = ("udp", "tcp", "tls")
#: Column width of a transport name ("udp", "tcp", "tls"; room for "ws"/"wss"/"sctp" later).
TRANSPORT_MAX_LEN = 8
#: Column width of a CDR's end reason (short phrases chosen by the call engine).
CDR_REASON_MAX_LEN = 64
#: Column width of the CDR enumerations (direction, disposition, hangup_by): longest is "no_answer".
CDR_ENUM_MAX_LEN = 16
#: A SHA-256 digest in hex (API keys are stored only as this digest).
SHA256_HEX_LEN = 64
#: Priority and weight follow DNS SRV (RFC 2782), where both are 16-bit unsigned integers.
PRIORITY_MAX = 65535
WEIGHT_MAX = 65535
#: Largest value of a SQL INTEGER on every backend (signed 32 bit); bounds max_calls.
SQL_INT_MAX = 2**31 - 1
#: Webhook URLs of applications and media endpoint URLs: 2048 is the practical URL limit of
#: browsers and most HTTP servers (and of sitemaps.org), far above any real webhook address.
URL_MAX_LEN = 2048
#: A webhook signing secret: HMAC keys longer than the hash block (64 bytes for SHA-256) are
#: hashed first (RFC 2104 §2), so more than a few hundred characters adds nothing but storage.
SECRET_MAX_LEN = 256

# Constraint names follow one convention so migrations can refer to them on SQLite and PostgreSQL.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: The only row of ``store_version``.
STORE_VERSION_ROW_ID = 1


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL has ``timestamptz``; SQLite stores text without an offset and returns naive values.
    This type refuses naive datetimes on the way in (an unknown offset would silently shift CDR
    times), stores UTC, and always returns an aware ``datetime`` in UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to UTC; raise ValueError for a naive one."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: give it a timezone")
        value = value.astimezone(UTC)
        if dialect.name == "postgresql":
            return value
        return value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the stored value as an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base holding the shared :class:`MetaData`."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {datetime: UtcDateTime()}


def _transport_check() -> str:
    return "transport IN (" + ", ".join(f"'{t}'" for t in TRANSPORTS) + ")"


class StoreVersionRow(Base):
    """Single-row counter bumped by every provisioning transaction that changes something.

    Other nodes of a cluster poll it (``Store.version()``) and reload their snapshot when it moves.
    """

    __tablename__ = "store_version"
    __table_args__ = (CheckConstraint(f"id = {STORE_VERSION_ROW_ID}", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class CarrierRow(Base):
    """A PSTN carrier (``routing.model.Carrier``)."""

    __tablename__ = "carriers"
    __table_args__ = (
        CheckConstraint("probe_interval_s >= 0", name="probe_interval_nonneg"),
        CheckConstraint("max_calls IS NULL OR max_calls >= 0", name="max_calls_nonneg"),
        CheckConstraint("max_cps IS NULL OR max_cps >= 0", name="max_cps_nonneg"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LEN), unique=True, nullable=False)
    tech_prefix: Mapped[str] = mapped_column(String(TECH_PREFIX_MAX_LEN), nullable=False, default="")
    strip_plus: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # JSON lists: read whole into the snapshot, never queried by element.
    failover_codes: Mapped[list[int]] = mapped_column(JSON, nullable=False)
    inbound_cidrs: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    probe_interval_s: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    max_calls: Mapped[int | None] = mapped_column(Integer)
    max_cps: Mapped[float | None] = mapped_column(Float)

    gateways: Mapped[list[GatewayRow]] = relationship(
        back_populates="carrier",
        order_by="GatewayRow.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class GatewayRow(Base):
    """One signalling address of a carrier; ``position`` keeps the provisioned order."""

    __tablename__ = "gateways"
    __table_args__ = (
        CheckConstraint("port BETWEEN 1 AND 65535", name="port_range"),
        CheckConstraint(_transport_check(), name="transport"),
        CheckConstraint("priority >= 0 AND weight >= 0", name="prio_weight_nonneg"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    carrier_id: Mapped[int] = mapped_column(
        ForeignKey("carriers.id", ondelete="CASCADE"), nullable=False, index=True
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    host: Mapped[str] = mapped_column(String(HOST_MAX_LEN), nullable=False)
    port: Mapped[int] = mapped_column(Integer, nullable=False)
    transport: Mapped[str] = mapped_column(String(TRANSPORT_MAX_LEN), nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    weight: Mapped[int] = mapped_column(Integer, nullable=False)

    carrier: Mapped[CarrierRow] = relationship(back_populates="gateways")


class CustomerRow(Base):
    """A tenant (``routing.model.Customer``)."""

    __tablename__ = "customers"
    __table_args__ = (
        CheckConstraint("max_calls IS NULL OR max_calls >= 0", name="max_calls_nonneg"),
        CheckConstraint("max_cps IS NULL OR max_cps >= 0", name="max_cps_nonneg"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LEN), unique=True, nullable=False)
    max_calls: Mapped[int | None] = mapped_column(Integer)
    max_cps: Mapped[float | None] = mapped_column(Float)

    trunks: Mapped[list[TrunkRow]] = relationship(
        back_populates="customer",
        order_by="TrunkRow.name",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class TrunkRow(Base):
    """A customer's SIP trunk (``routing.model.Trunk``)."""

    __tablename__ = "trunks"
    __table_args__ = (
        UniqueConstraint("customer_id", "name", name="uq_trunks_customer_name"),
        # Target of the composite foreign key from numbers: (customer_id, id) is unique because
        # id alone is; the explicit constraint is what SQL requires of a referenced column set.
        UniqueConstraint("customer_id", "id", name="uq_trunks_customer_id_id"),
        CheckConstraint("max_calls IS NULL OR max_calls >= 0", name="max_calls_nonneg"),
        CheckConstraint("max_cps IS NULL OR max_cps >= 0", name="max_cps_nonneg"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LEN), nullable=False)
    allowed_cidrs: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    max_calls: Mapped[int | None] = mapped_column(Integer)
    max_cps: Mapped[float | None] = mapped_column(Float)

    customer: Mapped[CustomerRow] = relationship(back_populates="trunks")
    credentials: Mapped[list[TrunkCredentialRow]] = relationship(
        back_populates="trunk",
        order_by="TrunkCredentialRow.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    targets: Mapped[list[TrunkTargetRow]] = relationship(
        back_populates="trunk",
        order_by="TrunkTargetRow.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class TrunkCredentialRow(Base):
    """Digest credentials of a trunk.

    The password is stored as given (not as HA1): :class:`routing.model.Credential` carries the
    password, the realm is not fixed by configuration yet, and RFC 8760 needs one HA1 per
    algorithm (MD5, SHA-256, SHA-512/256) per realm -- a realm change would invalidate every
    stored HA1 and require all customers to re-send passwords. Protect the database accordingly.
    """

    __tablename__ = "trunk_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trunk_id: Mapped[int] = mapped_column(
        ForeignKey("trunks.id", ondelete="CASCADE"), nullable=False, index=True
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    # Unique across all trunks: digest authentication finds the trunk by username.
    username: Mapped[str] = mapped_column(String(CREDENTIAL_MAX_LEN), unique=True, nullable=False)
    password: Mapped[str] = mapped_column(String(CREDENTIAL_MAX_LEN), nullable=False)

    trunk: Mapped[TrunkRow] = relationship(back_populates="credentials")


class TrunkTargetRow(Base):
    """Where inbound calls for a trunk are delivered (``routing.model.TrunkTarget``)."""

    __tablename__ = "trunk_targets"
    __table_args__ = (CheckConstraint("priority >= 0 AND weight >= 0", name="prio_weight_nonneg"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trunk_id: Mapped[int] = mapped_column(
        ForeignKey("trunks.id", ondelete="CASCADE"), nullable=False, index=True
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    uri: Mapped[str] = mapped_column(String(URI_MAX_LEN), nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    weight: Mapped[int] = mapped_column(Integer, nullable=False)

    trunk: Mapped[TrunkRow] = relationship(back_populates="targets")


class ApplicationRow(Base):
    """A customer's programmable call handler (``routing.model.Application``).

    Either webhooks (``call_hook`` asked what to do with each call, ``fallback_url`` when it fails,
    ``status_hook`` told about call progress, requests signed with ``signing_secret``) or an inline
    ``flow`` (a JSON list of actions): exactly one of ``call_hook`` and ``flow`` is set, which the
    database enforces so no writer can store an application that routing could not run.
    The signing secret is stored as given: it is an HMAC key the SBC must use, not a password it
    only verifies.
    """

    __tablename__ = "applications"
    __table_args__ = (
        UniqueConstraint("customer_id", "name", name="uq_applications_customer_name"),
        # Target of the composite foreign key from numbers (see TrunkRow).
        UniqueConstraint("customer_id", "id", name="uq_applications_customer_id_id"),
        CheckConstraint("(call_hook IS NULL) <> (flow IS NULL)", name="hook_xor_flow"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LEN), nullable=False)
    call_hook: Mapped[str | None] = mapped_column(String(URL_MAX_LEN))
    fallback_url: Mapped[str | None] = mapped_column(String(URL_MAX_LEN))
    status_hook: Mapped[str | None] = mapped_column(String(URL_MAX_LEN))
    signing_secret: Mapped[str | None] = mapped_column(String(SECRET_MAX_LEN))
    # none_as_null: "no flow" must be SQL NULL (the check above), not the JSON text 'null'.
    flow: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))

    customer: Mapped[CustomerRow] = relationship()


#: At most one destination per number: a trunk, an application or a media endpoint.
_ONE_DESTINATION = (
    "(CASE WHEN trunk_id IS NULL THEN 0 ELSE 1 END"
    " + CASE WHEN application_id IS NULL THEN 0 ELSE 1 END"
    " + CASE WHEN media_endpoint IS NULL THEN 0 ELSE 1 END) <= 1"
)


class NumberRow(Base):
    """An E.164 DID (``routing.model.Number``); numbers in the inventory have no customer.

    An assigned number has a customer and at most one destination: a trunk, an application
    (both of that customer, enforced by composite foreign keys) or a media endpoint URL
    (``ws://``, ``wss://``, ``quic://``). A customer without a destination is allowed (the
    provision file can express it); the API always assigns exactly one.
    """

    __tablename__ = "numbers"
    __table_args__ = (
        ForeignKeyConstraint(
            ["customer_id", "trunk_id"],
            ["trunks.customer_id", "trunks.id"],
            name="fk_numbers_trunk_of_customer",
        ),
        ForeignKeyConstraint(
            ["customer_id", "application_id"],
            ["applications.customer_id", "applications.id"],
            name="fk_numbers_application_of_customer",
        ),
        # A composite foreign key with a NULL column is not checked (MATCH SIMPLE), hence these.
        CheckConstraint("trunk_id IS NULL OR customer_id IS NOT NULL", name="trunk_needs_customer"),
        CheckConstraint(
            "application_id IS NULL OR customer_id IS NOT NULL", name="application_needs_customer"
        ),
        CheckConstraint("media_endpoint IS NULL OR customer_id IS NOT NULL", name="media_needs_customer"),
        CheckConstraint(_ONE_DESTINATION, name="one_destination"),
        # A customer's numbers, and the inventory (customer_id NULL), in e164 order: listing and
        # prefix search of available numbers are one range scan of this index, no sort.
        Index("ix_numbers_customer_e164", "customer_id", "e164"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # unique=True creates the index DID lookups and prefix searches (range scans) use.
    e164: Mapped[str] = mapped_column(String(E164_MAX_LEN), unique=True, nullable=False)
    # Indexed by ix_numbers_customer_e164 (its leading column serves foreign-key checks too).
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    trunk_id: Mapped[int | None] = mapped_column(Integer, index=True)
    application_id: Mapped[int | None] = mapped_column(Integer, index=True)
    media_endpoint: Mapped[str | None] = mapped_column(String(URL_MAX_LEN))


class RouteRow(Base):
    """An outbound LCR entry (``routing.model.Route``)."""

    __tablename__ = "routes"
    __table_args__ = (
        UniqueConstraint("prefix", "customer_id", name="uq_routes_prefix_customer"),
        # NULL customer_id rows are distinct to the constraint above; this partial index makes the
        # global (customer-less) routes unique per prefix on SQLite and PostgreSQL alike.
        Index(
            "uq_routes_prefix_global",
            "prefix",
            unique=True,
            sqlite_where=text("customer_id IS NULL"),
            postgresql_where=text("customer_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(PREFIX_MAX_LEN), nullable=False)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    time_window: Mapped[str | None] = mapped_column(String(TIME_WINDOW_LEN))

    customer: Mapped[CustomerRow | None] = relationship()
    carriers: Mapped[list[RouteCarrierRow]] = relationship(
        back_populates="route",
        order_by="RouteCarrierRow.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class RouteCarrierRow(Base):
    """A carrier's place in a route."""

    __tablename__ = "route_carriers"
    __table_args__ = (
        UniqueConstraint("route_id", "carrier_id", name="uq_route_carriers_route_carrier"),
        CheckConstraint("priority >= 0 AND weight >= 0", name="prio_weight_nonneg"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    route_id: Mapped[int] = mapped_column(ForeignKey("routes.id", ondelete="CASCADE"), nullable=False)
    carrier_id: Mapped[int] = mapped_column(ForeignKey("carriers.id"), nullable=False, index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    weight: Mapped[int] = mapped_column(Integer, nullable=False)

    route: Mapped[RouteRow] = relationship(back_populates="carriers")
    carrier: Mapped[CarrierRow] = relationship()


class CdrRow(Base):
    """A finished call (see :class:`sbc.store.cdr.CdrRecord` for the field contract).

    Free-text columns are unbounded ``String`` (VARCHAR without length on PostgreSQL): a CDR must
    never be lost because a caller sent a long display name.
    """

    __tablename__ = "cdrs"
    __table_args__ = (
        Index("ix_cdrs_customer_setup", "customer", "setup_time"),
        Index("ix_cdrs_carrier_setup", "carrier", "setup_time"),
        # The API's number filter matches caller or callee: one index each (OR of two lookups).
        Index("ix_cdrs_caller_setup", "caller", "setup_time"),
        Index("ix_cdrs_callee_setup", "callee", "setup_time"),
    )

    # 64-bit on PostgreSQL: at 1,500 calls per second a 32-bit serial runs out in 16 days. SQLite
    # keeps INTEGER, the only type that aliases its rowid (and so auto-increments).
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    call_id: Mapped[str] = mapped_column(String, nullable=False, index=True)
    direction: Mapped[str] = mapped_column(String(CDR_ENUM_MAX_LEN), nullable=False)
    caller: Mapped[str] = mapped_column(String, nullable=False)
    callee: Mapped[str] = mapped_column(String, nullable=False)
    customer: Mapped[str | None] = mapped_column(String, index=True)
    carrier: Mapped[str | None] = mapped_column(String)
    trunk: Mapped[str | None] = mapped_column(String)
    gateway: Mapped[str | None] = mapped_column(String)
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    setup_time: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, index=True)
    answer_time: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_time: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    duration_s: Mapped[float] = mapped_column(Float, nullable=False)
    disposition: Mapped[str] = mapped_column(String(CDR_ENUM_MAX_LEN), nullable=False)
    sip_code: Mapped[int] = mapped_column(Integer, nullable=False)
    hangup_by: Mapped[str | None] = mapped_column(String(CDR_ENUM_MAX_LEN))
    #: Why the call ended, in words ("bye", "media timeout", "no ACK from caller", ...).
    end_reason: Mapped[str] = mapped_column(String(CDR_REASON_MAX_LEN), default="")
    media: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class ApiKeyRow(Base):
    """An API key for the REST API (``sbc.api.auth``).

    Only a SHA-256 hex digest of the key is stored (a key is 256 random bits, so a plain hash is
    enough: there is nothing to brute-force); ``customer_id`` NULL means an operator (admin) key.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(NAME_MAX_LEN), nullable=False)
    key_sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


__all__ = [
    "CREDENTIAL_MAX_LEN",
    "E164_MAX_LEN",
    "HOST_MAX_LEN",
    "NAME_MAX_LEN",
    "PREFIX_MAX_LEN",
    "PRIORITY_MAX",
    "SECRET_MAX_LEN",
    "SQL_INT_MAX",
    "STORE_VERSION_ROW_ID",
    "TECH_PREFIX_MAX_LEN",
    "TIME_WINDOW_LEN",
    "TRANSPORTS",
    "URI_MAX_LEN",
    "URL_MAX_LEN",
    "WEIGHT_MAX",
    "ApiKeyRow",
    "ApplicationRow",
    "Base",
    "CarrierRow",
    "CdrRow",
    "CustomerRow",
    "GatewayRow",
    "NumberRow",
    "RouteCarrierRow",
    "RouteRow",
    "StoreVersionRow",
    "TrunkCredentialRow",
    "TrunkRow",
    "TrunkTargetRow",
    "UtcDateTime",
]
