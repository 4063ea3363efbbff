"""Test-wide settings.

Hypothesis runs without its per-example deadline: the machine is shared (2 cores, other
jobs), so wall-clock deadlines would make property tests fail on load rather than on bugs.
Performance is measured by loadtest/, never by a timed unit test.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("sbc", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sbc")

# Store tests on SQLite and PostgreSQL, cluster tests on Redis (scripts/services.sh starts both).
from tests.pg_fixtures import db_url, pg_url, redis_prefix, redis_url  # noqa: E402, F401
