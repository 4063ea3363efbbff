"""Transaction timer configuration (RFC 3261 §17, Table 4; RFC 6026 §8.4).

All values are seconds. :class:`TimerConfig` holds the three base values a deployment may tune
(T1, T2, T4) plus the §17.2.1 automatic ``100 Trying`` delay; every other timer is derived from them
exactly as RFC 3261 Table 4 says. The transaction layer asks for a timer with the transport's
reliability: on TCP/TLS/WS the retransmission timers (A, E, G) are not used and the "wait for
retransmissions" timers (D, I, J, K) are zero, so the transaction leaves Completed/Confirmed at once.
"""

from __future__ import annotations

from dataclasses import dataclass

# RFC 3261 §17.1.1.1 / Table 4: T1, the RTT estimate, defaults to 500 ms.
DEFAULT_T1 = 0.5
# RFC 3261 Table 4: T2, the maximum retransmit interval for non-INVITE requests and INVITE responses.
DEFAULT_T2 = 4.0
# RFC 3261 Table 4: T4, the maximum time a message remains in the network.
DEFAULT_T4 = 5.0
# RFC 3261 §17.2.1: a server INVITE transaction MUST send 100 Trying when the TU has not sent a
# provisional within 200 ms.
DEFAULT_TRYING_DELAY = 0.2
# RFC 3261 Table 4: Timers B, F, H, J are 64*T1; RFC 6026 §8.4: Timers L and M are 64*T1 too.
TIMEOUT_FACTOR = 64
# RFC 3261 §17.1.1.2 / Table 4: Timer D is "> 32 s for UDP", 0 s for reliable transports.
TIMER_D_UNRELIABLE = 32.0


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """The tunable base timers; derived timers are methods so a change of T1 moves them all.

    ``trying_delay`` is how long an INVITE server transaction waits for the TU's first response
    before sending ``100 Trying`` itself (RFC 3261 §17.2.1); ``None`` leaves 100 Trying to the TU,
    ``0`` sends it as soon as the INVITE arrives.
    """

    t1: float = DEFAULT_T1
    t2: float = DEFAULT_T2
    t4: float = DEFAULT_T4
    trying_delay: float | None = DEFAULT_TRYING_DELAY

    def __post_init__(self) -> None:
        if self.t1 <= 0 or self.t2 < self.t1 or self.t4 < 0:
            raise ValueError(f"need 0 < T1 <= T2 and T4 >= 0, got {self.t1}/{self.t2}/{self.t4}")
        if self.trying_delay is not None and self.trying_delay < 0:
            raise ValueError("trying_delay must be >= 0 or None")

    @property
    def timeout(self) -> float:
        """Timers B, F, H, J (unreliable), L and M: 64*T1 (RFC 3261 Table 4, RFC 6026 §8.4)."""
        return TIMEOUT_FACTOR * self.t1

    def timer_d(self, reliable: bool) -> float:
        """Timer D: wait for response retransmissions, >= 32 s on UDP, 0 on TCP/TLS (§17.1.1.2).

        With a T1 above 0.5 s the server's Timer H (64*T1) outlasts 32 s, so D follows it.
        """
        return 0.0 if reliable else max(TIMER_D_UNRELIABLE, self.timeout)

    def timer_i(self, reliable: bool) -> float:
        """Timer I: wait for ACK retransmissions, T4 on UDP, 0 on TCP/TLS (§17.2.1)."""
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        """Timer J: wait for non-INVITE request retransmissions, 64*T1 on UDP, 0 on TCP/TLS (§17.2.2)."""
        return 0.0 if reliable else self.timeout

    def timer_k(self, reliable: bool) -> float:
        """Timer K: wait for response retransmissions, T4 on UDP, 0 on TCP/TLS (§17.1.2.2)."""
        return 0.0 if reliable else self.t4
