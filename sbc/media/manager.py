"""Media sessions of calls over the native relay: allocate, point at peers, anchor SDP, free.

One relay session per media stream (m= line) of a call. The caller faces the relay's leg A and
the callee leg B; an SDP from one side sets that side's peer, and the copy for the other side
names the relay's ports on the other side's leg. Everything here is synchronous and cheap (the
relay's control calls do not block); packets never come near Python.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from rtp_relay_ext import LEG_A, LEG_B, PoolExhausted, RelayEngine, RelayError

from ..sip.errors import SIPParseError
from ..sip.sdp import SessionDescription, _parse
from .anchor import StreamPeer, anchor, describe

log = logging.getLogger(__name__)

SIDE_LEG = {"a": LEG_A, "b": LEG_B}


class MediaError(Exception):
    """Media could not be anchored (no ports left, unusable SDP): the call must be refused (488/503)."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class CallMedia:
    """The relay sessions of one call, by m= line index.

    ``quiet`` remembers, per (m= line index, side), whether that side's latest SDP lets the
    stream go silent (hold, recvonly): the relay's hold timeout applies while either side's
    does. One flag per session would be overwritten by the answer: a hold offer (sendonly) is
    answered recvonly, which alone does not look like a hold.
    """

    sessions: list[int | None] = field(default_factory=list)
    freed: bool = False
    quiet: dict[tuple[int, str], bool] = field(default_factory=dict)

    def __init__(
        self,
        sessions: list[int | None] | None = None,
        freed: bool = False,
        quiet: dict[tuple[int, str], bool] | None = None,
    ) -> None:
        # Written out, not generated: see sbc/sip/uri.pxd.
        self.sessions = [] if sessions is None else sessions
        self.freed = freed
        self.quiet = {} if quiet is None else quiet


class MediaManager:
    """Anchors every call's media in ``engine``; ``advertised_ip`` is what SDP names.

    ``batch_wakes`` batches the relay's wake-ups: an allocation leaves its relay worker unwoken
    and :meth:`wake_owed` wakes every worker owed one, once the input at hand is done (``sbc run``
    calls it at each flush, once per UDP batch). Waking the worker per allocation was 5 % of the
    signalling thread at 700 calls/s (py-spy --native: the eventfd write, and the woken thread
    taking the CPU). Without ``batch_wakes`` each allocation wakes its worker at once.
    """

    def __init__(self, engine: RelayEngine, advertised_ip: str, batch_wakes: bool = False) -> None:
        self.engine = engine
        self.advertised_ip = advertised_ip
        self.by_session: dict[int, object] = {}
        self.batch_wakes = batch_wakes
        self._owed = False  # an allocation since the last wake_owed() left a worker unwoken

    def wake_owed(self) -> None:
        """Wake the relay workers that allocations left unwoken since the last call: their new
        sessions' sockets are armed before the SDP naming them goes out. Cheap when none are."""
        if self._owed:
            self._owed = False
            self.engine.wake_owed()

    def rewrite(self, media: CallMedia, side: str, body: bytes, owner: object) -> bytes:
        """Take an SDP (offer or answer) from ``side`` ('a' caller, 'b' callee); return the SDP
        for the other side, pointing at the relay.

        Allocates the sessions a new m= line needs, points ``side``'s leg of each at the address
        the SDP gives (re-INVITEs move it, hold keeps the latch), marks a session held while
        either side's latest SDP for it is a hold or recvonly (the hold timeout applies), and
        remembers ``owner`` (the call) for media events. Raises MediaError: 488 for SDP that
        cannot be parsed, 503 when the relay has no ports left.
        """
        try:
            sdp = _parse(SessionDescription, body)  # SessionDescription.parse, called directly
        except SIPParseError as e:
            raise MediaError(f"bad SDP: {e.reason}", 488) from None
        peer: StreamPeer
        peers: list = describe(sdp)
        leg = SIDE_LEG[side]
        other = LEG_B if leg == LEG_A else LEG_A
        ports: list[tuple[int, int] | None] = []
        sessions: list = media.sessions
        quiet: dict = media.quiet
        for peer in peers:
            while len(sessions) <= peer.index:
                sessions.append(None)
            sid = sessions[peer.index]
            if peer.declined:
                ports.append(None)
                continue
            if sid is None:
                try:
                    sid = self.engine.allocate(
                        clock_rate=peer.clock_rate, dtmf_pt=peer.dtmf_pt, defer_wake=self.batch_wakes
                    )
                    self._owed = self._owed or self.batch_wakes
                except PoolExhausted:
                    raise MediaError("no relay ports left", 503) from None
                except RelayError as e:
                    # Out of file descriptors (RLIMIT_NOFILE: 4 per session) or socket memory:
                    # a capacity limit like the port range, not a fault of this call.
                    log.warning("relay cannot open a session: %s", e)
                    raise MediaError(f"relay cannot open sockets: {e}", 503) from None
                sessions[peer.index] = sid
                self.by_session[sid] = owner
            try:
                if peer.address is not None:
                    rtcp = (peer.address, peer.rtcp_port) if peer.rtcp_port and not peer.rtcp_mux else None
                    self.engine.set_peer(
                        sid, leg, (peer.address, peer.rtp_port), rtcp, rtcp_mux=peer.rtcp_mux
                    )
                quiet[(peer.index, side)] = peer.quiet
                held = quiet.get((peer.index, "a"), False) or quiet.get((peer.index, "b"), False)
                self.engine.set_hold(sid, held)
            except (RelayError, ValueError) as e:
                raise MediaError(f"relay refused the peer: {e}", 488) from None
            pair = self.engine.ports(sid)[other]
            ports.append(pair)
        return anchor(sdp, self.advertised_ip, ports)

    def restart_idle(self, media: CallMedia) -> None:
        """Start the call's media-timeout clock afresh (it was answered)."""
        if media.freed:
            return
        for sid in media.sessions:
            if sid is not None:
                try:
                    self.engine.restart_idle(sid)
                except RelayError:
                    continue

    def stats(self, media: CallMedia) -> dict:
        """Per-stream statistics of a live call (for the API and metrics)."""
        out = {}
        for i, sid in enumerate(media.sessions):
            if sid is not None:
                try:
                    out[str(i)] = _summary(self.engine.stats(sid))
                except RelayError:
                    continue
        return out

    def free(self, media: CallMedia) -> dict:
        """Release the call's sessions; return their final statistics (for the CDR)."""
        if media.freed:
            return {}
        media.freed = True
        by_session: dict = self.by_session
        out = {}
        for i, sid in enumerate(media.sessions):
            if sid is None:
                continue
            by_session.pop(sid, None)
            try:
                out[str(i)] = _summary(self.engine.free(sid, stats_only=True))
            except RelayError:
                log.warning("relay session %s was already gone", sid)
        return out

    def owner(self, session_id: int) -> object | None:
        """The call a relay session belongs to."""
        return self.by_session.get(session_id)


# The per-direction figures a CDR keeps (the engine reports more).
# dtmf_packets: the RFC 4733 telephone-event packets among them (digits were sent that way);
# kernel_forwarded: of the packets relayed, those the kernel fast path carried.
_CDR_KEYS = ("packets", "bytes", "lost", "jitter_ms", "out_of_order", "duplicates", "dtmf_packets", "mos",
             "kernel_forwarded")  # fmt: skip


def _summary(info: dict) -> dict:
    return {
        direction: {k: info[direction].get(k) for k in _CDR_KEYS if k in info[direction]}
        for direction in ("a_to_b", "b_to_a")
        if direction in info
    }
