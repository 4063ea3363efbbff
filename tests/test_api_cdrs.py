"""``/v1/cdrs``: filters (time, number, customer, disposition...), pages, CSV export, isolation."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

from sbc.store.cdr import CdrAttempt, CdrRecord
from sbc.store.store import CDR_PAGE_MAX
from tests import api_support
from tests.api_support import ADMIN, Env, World, bearer

# The shared fixtures, assigned (not imported) so linters see them used.
env = api_support.env
world = api_support.world

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def cdr(minute: int, **kw: object) -> CdrRecord:
    """A CDR set up ``minute`` minutes after T0 (answered 60 s unless the disposition says not)."""
    setup = T0 + timedelta(minutes=minute)
    answered = kw.get("disposition", "answered") == "answered"
    values: dict[str, object] = {
        "call_id": f"c{minute}@test",
        "direction": "inbound",
        "caller": "+12125550199",
        "callee": "+14155550100",
        "customer": "acme",
        "carrier": "telco",
        "trunk": "pbx",
        "gateway": "192.0.2.10:5060",
        "setup_time": setup,
        "answer_time": setup + timedelta(seconds=2) if answered else None,
        "end_time": setup + timedelta(seconds=62),
        "disposition": "answered",
        "sip_code": 200 if answered else 486,
        "hangup_by": "caller" if answered else None,
        "attempts": (CdrAttempt(carrier="telco", gateway="192.0.2.10:5060", code=200 if answered else 486),),
        "media": {"a": {"mos": 4.3}},
    }
    values.update(kw)
    return CdrRecord(**values)  # type: ignore[arg-type]


async def seed(env: Env) -> None:
    await env.store.write_cdrs(
        [
            cdr(0),
            cdr(1, disposition="busy"),
            cdr(2, caller="12125550199", callee="+14155550177"),  # caller as signalled, without '+'
            cdr(3, customer="globex", trunk="pbx", callee="+14155550101"),
            cdr(
                4,
                direction="outbound",
                caller="+14155550100",
                callee="+442079460000",
                disposition="no_answer",
            ),
            cdr(5, customer="globex", callee="+14155550101", disposition="failed"),
        ]
    )


async def ids(env: Env, key: str | None = None, **params: object) -> list[str]:
    page = await env.ok("GET", "/v1/cdrs", params=params, **({"key": key} if key else {}))
    return [c["call_id"] for c in page["items"]]


async def test_list_is_newest_first_with_full_records(env: Env) -> None:
    await seed(env)
    page = await env.ok("GET", "/v1/cdrs")
    assert [c["call_id"] for c in page["items"]] == [f"c{m}@test" for m in (5, 4, 3, 2, 1, 0)]
    oldest = page["items"][-1]
    assert oldest["setup_time"] == "2026-03-01T12:00:00Z" and oldest["answer_time"] == "2026-03-01T12:00:02Z"
    assert oldest["duration_s"] == 60.0 and oldest["media"] == {"a": {"mos": 4.3}}
    assert oldest["attempts"] == [
        {"carrier": "telco", "gateway": "192.0.2.10:5060", "code": 200, "reason": ""}
    ]
    assert await env.ok("GET", f"/v1/cdrs/{oldest['id']}") == oldest
    await env.ok("GET", "/v1/cdrs/424242", 404)


async def test_filters(env: Env) -> None:
    await seed(env)
    assert await ids(env, since="2026-03-01T12:02:00Z", until="2026-03-01T12:04:00Z") == [
        "c3@test",
        "c2@test",
    ]
    assert await ids(env, since="2026-03-01T12:04:00") == ["c5@test", "c4@test"]  # no offset: UTC
    assert await ids(env, since="2026-03-01T13:04:00+01:00") == ["c5@test", "c4@test"]
    assert await ids(env, customer="globex") == ["c5@test", "c3@test"]
    assert await ids(env, disposition="busy") == ["c1@test"]
    assert await ids(env, direction="outbound") == ["c4@test"]
    assert await ids(env, call_id="c2@test") == ["c2@test"]
    # number: caller or callee, in any spelling, matching CDRs that kept the number as signalled
    assert await ids(env, number="+14155550101") == ["c5@test", "c3@test"]
    assert await ids(env, number="1 415 555 0100") == ["c4@test", "c1@test", "c0@test"]
    assert await ids(env, number="+12125550199") == ["c5@test", "c3@test", "c2@test", "c1@test", "c0@test"]
    assert await ids(env, number="+14155550177", customer="acme") == ["c2@test"]
    assert await ids(env, number="unknown-thing") == []
    for params, key in (
        ({"disposition": "maybe"}, "disposition"),
        ({"since": "yesterday"}, "since"),
        ({"limit": 1001}, "limit"),
    ):
        r = await env.client.get("/v1/cdrs", params=params, headers=ADMIN)
        assert r.status_code == 422 and r.json()["extra"][0]["key"] == key, r.text


async def test_pagination(env: Env) -> None:
    await env.store.write_cdrs([cdr(m) for m in range(25)])
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = await env.ok("GET", "/v1/cdrs", params={"limit": 10, "offset": offset})
        seen += [c["call_id"] for c in page["items"]]
        offset = page["next_offset"]
    assert seen == [f"c{m}@test" for m in range(24, -1, -1)]


async def test_largest_page_knows_whether_more_exist(env: Env) -> None:
    await env.store.write_cdrs([cdr(m, call_id=f"x{m}") for m in range(CDR_PAGE_MAX + 1)])
    page = await env.ok("GET", "/v1/cdrs", params={"limit": CDR_PAGE_MAX})
    assert len(page["items"]) == CDR_PAGE_MAX and page["next_offset"] == CDR_PAGE_MAX
    last = await env.ok("GET", "/v1/cdrs", params={"limit": CDR_PAGE_MAX, "offset": CDR_PAGE_MAX})
    assert [c["call_id"] for c in last["items"]] == ["x0"] and last["next_offset"] is None


async def test_customer_key_sees_only_its_cdrs(env: Env, world: World) -> None:
    await seed(env)
    assert await ids(env, key=world.globex_key) == ["c5@test", "c3@test"]
    assert await ids(env, key=world.globex_key, customer="acme") == []
    assert await ids(env, key=world.acme_key, number="+14155550101") == []
    acme_cdr = (await env.ok("GET", "/v1/cdrs", params={"customer": "acme"}))["items"][0]
    await env.ok("GET", f"/v1/cdrs/{acme_cdr['id']}", 404, key=world.globex_key)
    await env.ok("GET", f"/v1/cdrs/{acme_cdr['id']}", key=world.acme_key)
    r = await env.client.get("/v1/cdrs.csv", params={"customer": "acme"}, headers=bearer(world.globex_key))
    assert r.status_code == 200 and len(r.text.strip().splitlines()) == 1  # header only


async def test_csv_export(env: Env) -> None:
    await seed(env)
    r = await env.client.get("/v1/cdrs.csv", params={"customer": "acme"}, headers=ADMIN)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith('attachment; filename="cdrs-')
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["call_id"] for row in rows] == ["c4@test", "c2@test", "c1@test", "c0@test"]
    first = rows[-1]
    assert first["setup_time"] == "2026-03-01T12:00:00+00:00" and first["duration_s"] == "60.0"
    assert json.loads(first["attempts"])[0]["code"] == 200 and json.loads(first["media"]) == {
        "a": {"mos": 4.3}
    }
    assert rows[2]["answer_time"] == "" and rows[2]["disposition"] == "busy"
    assert "\r\n" in r.text  # RFC 4180 line breaks
    accept = await env.client.get(
        "/v1/cdrs", params={"customer": "acme"}, headers={**ADMIN, "Accept": "text/csv"}
    )
    assert accept.status_code == 200 and accept.headers["content-type"].startswith("text/csv")
    assert accept.text == r.text


async def test_csv_streams_past_one_store_page(env: Env) -> None:
    total = CDR_PAGE_MAX * 2 + 5
    await env.store.write_cdrs([cdr(m, call_id=f"k{m}") for m in range(total)])
    r = await env.client.get("/v1/cdrs.csv", headers=ADMIN)
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == total
    assert len({row["id"] for row in rows}) == total
    assert rows[0]["call_id"] == f"k{total - 1}" and rows[-1]["call_id"] == "k0"
