"""Every knob of the SBC: environment (``SBC_*``), an optional TOML file, and CLI flags.

Precedence, highest first: command-line flags, environment variables, the TOML file
(``--config FILE`` or ``SBC_CONFIG``), defaults. Everything is validated at start; a bad value
stops the program with a message naming the setting.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .workers import MAX_WORKERS

# RFC 3261 §17.1.1.1 timer defaults (seconds).
DEFAULT_T1 = 0.5
DEFAULT_T2 = 4.0
DEFAULT_T4 = 5.0
# Kamailio's tcp_connection_lifetime default is 120 s; SIP over TCP from PBXs is often kept
# open with CRLF keep-alives every 30-60 s, so 300 s of silence is a dead connection.
DEFAULT_TCP_IDLE_TIMEOUT = 300.0
# One source opening more connections than this is a misbehaving client or an attack
# (a PBX needs one or a handful). Kamailio has no default limit; OpenSIPS uses per-IP limits.
DEFAULT_MAX_CONNECTIONS_PER_SOURCE = 64
# RTP port range: 20000 apart gives 5000 calls × 4 ports (RTP+RTCP per leg × 2 legs).
DEFAULT_RTP_PORTS = "20000-39999"
# URL schemes redis-py connects with: TCP, TLS, and a Unix socket.
REDIS_SCHEMES = ("redis", "rediss", "unix")
# An admin API key shorter than this is guessable; 32 characters of base64 would be 192 bits,
# 24 still leaves ~128 bits when the operator picks random characters (OWASP asks for >= 128).
API_ADMIN_KEY_MIN_LEN = 24


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """One SIP listener: transport, address and port."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"

    @property
    def family(self) -> socket.AddressFamily:
        """The address family of the listener's socket."""
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


def parse_listen(text: str, default_port: int = 5060) -> list[ListenSpec]:
    """Parse ``[udp:|tcp:]HOST[:PORT]`` (IPv6 in brackets). Without a prefix, UDP and TCP.

    Raises ValueError with a message naming the bad part.
    """
    text = text.strip()
    transports = ["udp", "tcp"]
    for prefix in ("udp:", "tcp:", "tls:"):
        if text.lower().startswith(prefix):
            transports = [prefix[:-1]]
            text = text[len(prefix) :]
            break
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unterminated IPv6 reference in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after the address")
    else:
        host, _, port_text = text.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"{host!r} is not an IP address") from None
        host = "127.0.0.1"
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port {port_text!r}")
        port = int(port_text)
    return [ListenSpec(t, host, port) for t in transports]


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"IP"``, ``"IP:PORT"`` or ``"[IPv6]:PORT"`` as (ip, port); raises ValueError otherwise."""
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not a nameserver IP[:PORT]") from None
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return host, port


def parse_port_range(text: str) -> tuple[int, int]:
    """Parse ``MIN-MAX``; both even-aligned ports usable for RTP. Raises ValueError."""
    lo, sep, hi = text.partition("-")
    if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
        raise ValueError(f"expected MIN-MAX, got {text!r}")
    a, b = int(lo), int(hi)
    if not 1024 <= a < b <= 65535:
        raise ValueError(f"range {a}-{b} must satisfy 1024 <= MIN < MAX <= 65535")
    return a, b


class Settings(BaseSettings):
    """The SBC's configuration. Field names map to env ``SBC_<NAME>`` and TOML keys."""

    model_config = SettingsConfigDict(env_prefix="SBC_", extra="forbid", validate_default=True)

    sip_listen: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"],
        description="SIP listeners, [udp:|tcp:]HOST:PORT",
    )
    workers: int = Field(
        1,
        ge=1,
        le=MAX_WORKERS,
        description="Worker processes sharing the SIP listeners, each on its own core (sbc.workers);"
        " more than 1 needs the SIP steering program (built with clang and libbpf, loaded with CAP_BPF)",
    )
    api_listen: str = Field("127.0.0.1:8080", description="REST API and /metrics, HOST:PORT ('' disables)")
    api_admin_key: str | None = Field(
        None,
        min_length=API_ADMIN_KEY_MIN_LEN,
        repr=False,
        description="Bearer key that may do everything through the API (random and logged once if unset)",
    )
    db: str = Field("sqlite:///sbc.db", description="Store URL: sqlite:///FILE or postgresql://...")
    rtp_ip: str = Field("127.0.0.1", description="Address the RTP relay binds")
    rtp_advertised_ip: str | None = Field(None, description="Address written into SDP when behind NAT")
    rtp_ports: str = Field(DEFAULT_RTP_PORTS, description="RTP port range MIN-MAX")
    rtp_port_quarantine: float = Field(
        2.0,
        ge=0,
        le=60,
        description=(
            "Seconds a freed relay port waits before reuse (late packets of the old call never reach"
            " a new one). Each call holds 4 ports: the range sustains (ports / 4) / (hold + this) calls/s"
        ),
    )
    rtp_kernel_forward: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "Relay latched IPv4 RTP in the kernel (a BPF program on the relay address's interface):"
            " auto when the build and the kernel allow it (root, Linux 6.6+), on = refuse to start"
            " without it, off = every packet through the relay threads"
        ),
    )
    advertised_host: str | None = Field(None, description="Host written into Via/Contact when behind NAT")
    t1: float = Field(DEFAULT_T1, gt=0, le=10)
    t2: float = Field(DEFAULT_T2, gt=0, le=60)
    t4: float = Field(DEFAULT_T4, gt=0, le=60)
    max_message_size: int = Field(65535, ge=1500, le=1 << 20)
    tcp_idle_timeout: float = Field(DEFAULT_TCP_IDLE_TIMEOUT, gt=0)
    max_connections_per_source: int = Field(DEFAULT_MAX_CONNECTIONS_PER_SOURCE, ge=1)
    user_agent: str = Field("sbc/0.1", description="Server/User-Agent header value")
    no_response_timeout: float = Field(
        4.0, gt=0, le=32, description="Seconds without any response before failover"
    )
    ring_timeout: float = Field(120.0, gt=0, description="Seconds of ringing before an attempt is cancelled")
    max_call_duration: float = Field(4 * 3600.0, gt=0, description="Longest call before the SBC hangs up")
    limit_reject_code: int = Field(503, ge=400, le=699, description="Response to a call over a limit")
    provision_poll_interval: float = Field(1.0, gt=0, description="Seconds between store version checks")
    redis_url: str = Field(
        "",
        description="Redis for cluster-wide limits and carrier health, redis://HOST:PORT/DB ('' = this node alone)",
    )
    redis_prefix: str = Field(
        "sbc",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Prefix of this cluster's Redis keys: clusters sharing one Redis need different ones",
    )
    realm: str = Field("sbc", min_length=1, description="Digest realm offered to trunks")
    dns_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Nameservers for gateway and target host names, IP[:PORT] (default: the system's)",
    )
    auth_algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["MD5", "SHA-256"],
        description=(
            "Digest challenges offered, most preferred first (MD5, SHA-256). MD5 leads by default:"
            " many PBXs and SIPp answer the first challenge whatever its algorithm (RFC 8760 2.4)"
        ),
    )
    auth_secret: str | None = Field(
        None,
        description="Secret for digest nonces; set the same on every node of a cluster (random if unset)",
    )
    media_anchoring: bool = Field(True, description="Relay RTP through the SBC (rewrite SDP to its ports)")
    media_timeout: float = Field(60.0, gt=0, description="No RTP this long on an answered call: hang up")
    media_hold_timeout: float = Field(3600.0, gt=0, description="The same for a call on hold")
    overload_protection: bool = Field(
        True, description="Shed new calls when the event loop lags or CPU saturates"
    )
    overload_lag_ms: float = Field(100.0, gt=0, description="Event loop lag that counts as overload")
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    @field_validator("sip_listen", "dns_servers", "auth_algorithms", mode="before")
    @classmethod
    def _split_list(cls, v: Any) -> Any:
        """A list setting given as one string (env, flag): items separated by spaces or commas."""
        if isinstance(v, str):
            return [p for p in v.replace(",", " ").split() if p]
        return v

    @field_validator("dns_servers")
    @classmethod
    def _check_dns(cls, v: list[str]) -> list[str]:
        for item in v:
            parse_nameserver(item)
        return v

    @field_validator("auth_algorithms")
    @classmethod
    def _check_algorithms(cls, v: list[str]) -> list[str]:
        known = {"MD5": "MD5", "SHA-256": "SHA-256"}
        out = []
        for item in v:
            name = known.get(item.upper())
            if name is None:
                raise ValueError(f"{item!r} is not a digest algorithm: MD5 or SHA-256")
            if name not in out:
                out.append(name)
        if not out:
            raise ValueError("at least one digest algorithm is needed")
        return out

    @field_validator("sip_listen")
    @classmethod
    def _check_listen(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one SIP listener is needed")
        for item in v:
            parse_listen(item)
        return v

    @field_validator("rtp_ports")
    @classmethod
    def _check_ports(cls, v: str) -> str:
        parse_port_range(v)
        return v

    @field_validator("rtp_ip", "rtp_advertised_ip")
    @classmethod
    def _check_ip(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.ip_address(v)
        return v

    @field_validator("redis_url")
    @classmethod
    def _check_redis(cls, v: str) -> str:
        scheme = v.partition("://")[0].lower() if "://" in v else ""
        if v and scheme not in REDIS_SCHEMES:
            raise ValueError(f"expected {' or '.join(s + '://...' for s in REDIS_SCHEMES)}")
        return v

    @field_validator("api_listen")
    @classmethod
    def _check_api(cls, v: str) -> str:
        if v:
            host, sep, port = v.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected HOST:PORT, got {v!r}")
        return v

    @property
    def listeners(self) -> list[ListenSpec]:
        out: list[ListenSpec] = []
        for item in self.sip_listen:
            out.extend(parse_listen(item))
        return out

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _TOML_PATH.get("path") or os.environ.get("SBC_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)


_TOML_PATH: dict[str, str | None] = {"path": None}

#: Settings whose values never appear in error messages.
SECRET_SETTINGS = frozenset({"api_admin_key", "auth_secret", "redis_url"})  # a Redis URL may hold a password


class ConfigError(Exception):
    """A setting is invalid; the message names each bad setting and why."""


def load_settings(overrides: dict[str, Any] | None = None, toml_file: str | None = None) -> Settings:
    """Build :class:`Settings` from flags (``overrides``), env and TOML; raise ConfigError."""
    if toml_file is not None and not Path(toml_file).is_file():
        raise ConfigError(f"config file {toml_file!r} not found")
    _TOML_PATH["path"] = toml_file
    try:
        return Settings(**{k: v for k, v in (overrides or {}).items() if v is not None})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            shown = "<hidden>" if loc in SECRET_SETTINGS else repr(err.get("input"))
            lines.append(f"{loc}: {err['msg']} (got {shown})")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    finally:
        _TOML_PATH["path"] = None
