"""Whether one SBC process should be sent new calls: the checks behind ``/readyz``.

Apart from :mod:`sbc.api.ops` (which serves them and documents what each check means) so that a
worker of ``sbc run --workers N`` that serves no API can answer readiness to worker 0
(:mod:`sbc.workers.control`) without importing the web stack.
"""

from __future__ import annotations

from typing import Any


def readiness(app: Any) -> dict[str, str | None]:
    """Each readiness check of ``app`` (an :class:`sbc.app.SbcApp`) by name: None when it passes,
    else why not. Reads only attributes; never raises for a missing one (that check fails instead).

    ``app`` provides ``settings`` (``listeners``, ``overload_protection``), ``store``, ``udp``
    (bound UDP listeners), ``tcp`` (``locals``: bound TCP addresses), ``provisioning_version``
    (-1 until loaded), ``stopping`` and ``overload`` (``overloaded``).
    """
    settings = getattr(app, "settings", None)
    checks: dict[str, str | None] = {}
    checks["shutdown"] = "shutting down" if getattr(app, "stopping", False) else None
    checks["store"] = None if getattr(app, "store", None) is not None else "store not open"
    wanted = len(getattr(settings, "listeners", ()) or ())
    tcp = getattr(app, "tcp", None)
    bound = len(getattr(app, "udp", None) or ()) + len(getattr(tcp, "locals", None) or ())
    if wanted == 0 or bound < wanted:
        checks["sip_listeners"] = f"{bound} of {wanted} SIP listeners bound"
    else:
        checks["sip_listeners"] = None
    version = getattr(app, "provisioning_version", -1)
    checks["provisioning"] = "provisioning not loaded" if version is None or version < 0 else None
    guard = getattr(app, "overload", None)
    protecting = bool(getattr(settings, "overload_protection", False))
    overloaded = protecting and guard is not None and bool(guard.overloaded)
    checks["overload"] = "overloaded: shedding new calls" if overloaded else None
    return checks
