"""UAS request checks of RFC 3261 §8.2 and §16.3, as a pure function.

Before the SBC acts on a new request it asks :func:`check_request`, which returns the
response RFC 3261 prescribes for a request it must refuse (416, 420, 415, 406, 483, 501...)
or None when the request may be processed. The SBC also stamps the top Via with
``received``/``rport`` (:func:`stamp_via`) and addresses responses by :func:`response_destination`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SIPParseError
from .headers import split_commas, via_view
from .message import MANDATORY_REQUEST_HEADERS, SINGLE_VALUE_HEADERS, Request, Response, make_response
from .uri import SipURI, TelURI

# Methods this SBC implements (advertised in Allow on 200 OK to OPTIONS, 405 and 501).
ALLOWED_METHODS: tuple[str, ...] = (
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "REGISTER",
    "NOTIFY",
)
# Extensions we understand (Supported, and what Require may name without a 420).
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset({"100rel", "timer", "replaces", "norefersub", "path"})
# Bodies the B2BUA can handle: SDP (possibly inside multipart), and SIP INFO DTMF payloads.
ACCEPTED_CONTENT_TYPES: tuple[str, ...] = (
    "application/sdp",
    "multipart/mixed",
    "multipart/alternative",
    "multipart/related",
    "application/dtmf-relay",
    "application/dtmf",
)
# What our responses carry: SDP. An Accept header that admits none of these gets 406.
PRODUCED_CONTENT_TYPES: tuple[str, ...] = ("application/sdp",)
# RFC 3261 §20.2 / §20.1: content codings we accept ("identity" only; no compression).
ACCEPTED_ENCODINGS: tuple[str, ...] = ("identity",)
# Requests that never get a 420/415 check: ACK has no response, CANCEL must not be refused (§9.2).
_NO_EXTENSION_CHECK = frozenset({"ACK", "CANCEL"})


@dataclass(frozen=True, slots=True)
class UasPolicy:
    """What the SBC's UAS core accepts; the defaults are the product's."""

    allowed_methods: tuple[str, ...] = ALLOWED_METHODS
    supported: frozenset[str] = SUPPORTED_EXTENSIONS
    accepted_types: tuple[str, ...] = ACCEPTED_CONTENT_TYPES
    produced_types: tuple[str, ...] = PRODUCED_CONTENT_TYPES
    accepted_encodings: tuple[str, ...] = ACCEPTED_ENCODINGS
    extra_headers: tuple[tuple[str, str], ...] = field(default=())

    @property
    def allow_header(self) -> str:
        return ", ".join(self.allowed_methods)

    @property
    def accept_header(self) -> str:
        return ", ".join(self.accepted_types)


def _media_range_matches(accept_value: str, produced: tuple[str, ...]) -> bool:
    # The str/list annotations on locals here and below are for the compiled build (setup.py):
    # Cython then compares and searches them in C. Plain Python ignores them.
    item: str
    media: str
    for item in split_commas(accept_value):
        media = item.split(";", 1)[0].strip().lower()
        if media in ("*/*", ""):
            return True
        if media.endswith("/*") and any(p.startswith(media[:-1]) for p in produced):
            return True
        if media in produced:
            return True
    return False


def check_request(
    request: Request,
    policy: UasPolicy,
    to_tag: str,
    forwarding: bool,
) -> Response | None:
    """Return the response that refuses ``request``, or None when it may be processed.

    ``forwarding`` says whether the SBC would send this request on (an INVITE to a number,
    an OPTIONS to someone else's URI); only then does Max-Forwards 0 earn a 483.
    ``to_tag`` goes on any final response built here. Checks follow RFC 3261 §8.2 order:
    method (501/405), URI scheme (416), Max-Forwards (483), extensions (420), content (415),
    and Accept (406). Raises SIPParseError when a header it must read is malformed.
    """
    problem = semantic_problem(request)
    if problem is not None:
        return make_response(request, 400, problem, to_tag=to_tag)
    method: str = request.method
    if method not in policy.allowed_methods:
        # §8.2.1: a method we do not know at all is 501; REFER/SUBSCRIBE... are known but not
        # allowed here, and RFC 3261 calls that 405. Both carry Allow.
        status = 405 if method in _KNOWN_METHODS else 501
        return make_response(request, status, to_tag=to_tag, headers=[("Allow", policy.allow_header)])
    if method == "ACK":
        return None
    uri = request.ruri
    if not isinstance(uri, (SipURI, TelURI)):
        return make_response(request, 416, to_tag=to_tag)
    if forwarding:
        mf: str = request.get("Max-Forwards")
        if mf is not None and int(mf.strip()) == 0:
            return make_response(request, 483, to_tag=to_tag)
    if method not in _NO_EXTENSION_CHECK:
        unknown = [
            tag
            for name in ("Require", "Proxy-Require")
            for tag in request.values(name)
            if tag.lower() not in policy.supported
        ]
        if unknown:
            return make_response(request, 420, to_tag=to_tag, headers=[("Unsupported", ", ".join(unknown))])
        if request.body or request.get("Content-Type"):
            ctype: str = request.content_type
            if ctype is not None and ctype not in policy.accepted_types:
                return make_response(request, 415, to_tag=to_tag, headers=[("Accept", policy.accept_header)])
            encodings: list = request.values("Content-Encoding")
            # A loop, not any(genexpr): a cpdef function (checks.pxd) cannot hold a closure.
            for e in encodings:
                if e.lower() not in policy.accepted_encodings:
                    return make_response(
                        request,
                        415,
                        to_tag=to_tag,
                        headers=[("Accept-Encoding", ", ".join(policy.accepted_encodings))],
                    )
        accept: str = request.get("Accept")
        if (
            accept is not None
            and method in ("INVITE", "OPTIONS", "UPDATE")
            and not _media_range_matches(",".join(request.get_all("Accept")), policy.produced_types)
        ):
            return make_response(
                request, 406, to_tag=to_tag, headers=[("Accept", ", ".join(policy.produced_types))]
            )
    return None


def semantic_problem(request: Request) -> str | None:
    """Why a syntactically valid request must still get 400, or None.

    RFC 3261 §8.1.1 mandatory headers missing (RFC 4475 §3.3.1), a single-value header given
    twice (§7.3.1, RFC 4475 §3.3.8), several Content-Length values (RFC 4475 §3.3.9).
    The text is used as the 400's reason phrase.
    """
    name: str
    value: str
    missing: list = request.missing(MANDATORY_REQUEST_HEADERS)
    if missing:
        return "Missing " + ", ".join(missing)
    seen: set[str] = set()
    for name, value in request.headers:
        if name in SINGLE_VALUE_HEADERS:
            if name in seen or (name in _NO_COMMA_HEADERS and "," in value):
                return f"Multiple {name} values"
            seen.add(name)
    return None


# Single-value headers whose grammar has no comma, so a comma means two values.
_NO_COMMA_HEADERS = frozenset({"Content-Length", "Max-Forwards", "CSeq", "Expires", "Call-ID"})

# Methods defined by RFCs that this SBC does not handle (405 rather than 501).
_KNOWN_METHODS = frozenset({"SUBSCRIBE", "REFER", "MESSAGE", "PUBLISH"})


def stamp_via(request: Request, source_host: str, source_port: int, *, force_rport: bool = False) -> None:
    """Add ``received`` and fill ``rport`` on the top Via (RFC 3261 §18.2.1, RFC 3581 §4).

    ``received`` is added when sent-by differs from the packet's source address, and always
    when rport applies. ``force_rport`` treats every request as if it asked for rport, so that
    responses go back to the address and port the request came from (Kamailio's
    ``force_rport()``: customers behind NAT rarely ask). Leaves the request unchanged when the
    Via is already right. Raises SIPParseError when the top Via is malformed.
    """
    for i, (n, v) in enumerate(request.headers):
        if n != "Via":
            continue
        seen = via_view(v)[0]  # shared: read here, copied only if it changes
        params: dict = seen.params
        rport = force_rport or "rport" in params
        needs_received = rport or seen.host.strip("[]").lower() != source_host.lower()
        add_received = needs_received and params.get("received") != source_host
        fill_rport = rport and not params.get("rport")
        if add_received or fill_rport:
            top = seen.copy()
            if fill_rport and "rport" not in top.params:
                top.params["rport"] = None  # placed before a received added next
            if add_received:
                top.params["received"] = source_host
            if fill_rport:
                top.params["rport"] = str(source_port)
            rest = split_commas(v)[1:]
            request.headers[i] = ("Via", ", ".join([str(top), *rest]))
            request._cache.clear()
        return
    raise SIPParseError("missing Via")


def response_destination(response: Response, default_port: int = 5060) -> tuple[str, int]:
    """Where a response goes over an unreliable transport (RFC 3261 §18.2.2, RFC 3581 §4).

    To ``received`` (or sent-by) at ``rport`` (or the sent-by port, or ``default_port``).
    Raises SIPParseError when the top Via is missing or malformed.
    """
    top = via_view(response.top_via)[0]
    host = top.params.get("received") or top.host
    rport = top.params.get("rport")
    port = int(rport) if rport else top.port or default_port
    return host.strip("[]"), port
