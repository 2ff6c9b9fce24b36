"""Dashboards: every page and fragment for its roles (403 for the others), pages vs htmx fragments,
and the charts' numbers against the hand-computed history of ``tests/services/test_rollups.py``."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.services.test_rollups import LATER, NOW, T0, _instance, seed_history
from tests.web.conftest import MadeUser
from webapp.blueprints import dashboards
from webapp.db import Database
from webapp.metrics import observe_decision
from webapp.services.rollups import flush_decision_latency, refresh_rollups
from webapp.services.users import TOTP_REQUIRED_ROLES

OPS_URLS = (
    "/dashboards/",
    "/dashboards/panels/latency",
    "/dashboards/panels/errors",
    "/dashboards/panels/queue",
    "/dashboards/panels/response",
    "/dashboards/panels/states",
    "/dashboards/panels/stuck",
    "/dashboards/panels/sla",
    "/dashboards/panels/subscriptions",
    "/dashboards/panels/approvals",
)
FINANCE_URLS = (
    "/dashboards/finance/",
    "/dashboards/finance/payments",
    "/dashboards/finance/recovery",
    "/dashboards/finance/failures",
)
FINANCE_ROLES = ("finance", "manager", "admin", "compliance", "auditor")
_FIGURE = re.compile(r'id="chart-([a-z]+)-(\d+)" data-figure="([^"]*)"')


def world(db: Database) -> None:
    """The rollup fixture history, three pending entitlements of known ages, and a refresh at LATER."""
    seed_history(db)
    with db.session() as s:
        s.add_all(
            [
                _instance("ent-ok", "entitlement", "pending_approval", entered_at=LATER - timedelta(hours=1)),
                _instance(
                    "ent-warn", "entitlement", "pending_approval", entered_at=LATER - timedelta(hours=13)
                ),
                _instance(
                    "ent-esc",
                    "entitlement",
                    "pending_approval",
                    customer="c-2",
                    entered_at=LATER - timedelta(hours=30),
                ),
            ]
        )
    with db.session() as s:
        flush_decision_latency(s, LATER)  # whatever this process observed before: not this test's
    for seconds in (0.05, 0.3, 0.3, 0.7, 3.0):
        observe_decision("zz_dashboard_test", seconds)
    with db.session() as s:
        refresh_rollups(s, LATER)


@pytest.fixture
def at_later(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    def set_now(moment: datetime) -> None:
        monkeypatch.setattr(dashboards, "utcnow", lambda: moment)

    set_now(LATER)
    return set_now


def _signed_in(client: FlaskClient, make_user: Callable[..., MadeUser], login: Any, role: str) -> None:
    user = make_user(f"{role}@staff.test", [role], totp=role in TOTP_REQUIRED_ROLES)
    response = login(client, user.email, totp=user.totp_secret)
    assert response.status_code == 302 and "/auth/" not in response.location, response.location


def _figures(body: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name, _i, raw in _FIGURE.findall(body):
        out.setdefault(name, []).append(json.loads(html.unescape(raw)))
    return out


def _fragment(client: FlaskClient, url: str) -> str:
    response = client.get(url, headers={"HX-Request": "true"})
    assert response.status_code == 200, (url, response.status_code)
    return response.get_data(as_text=True)


@pytest.mark.parametrize("role", ["support", "finance", "manager", "admin", "compliance", "auditor"])
def test_every_page_and_fragment_renders_for_its_roles_and_refuses_the_others(
    client: FlaskClient,
    make_user: Callable[..., MadeUser],
    login: Any,
    web_db: Database,
    role: str,
    at_later: Any,
) -> None:
    world(web_db)
    _signed_in(client, make_user, login, role)
    for url in OPS_URLS:  # CONSOLE.md §1.2: the ops/SLA dashboard is for every role
        assert client.get(url).status_code == 200, url
    for url in FINANCE_URLS:  # finance dashboard: not support
        status = client.get(url).status_code
        assert status == (200 if role in FINANCE_ROLES else 403), (url, status)


def test_anonymous_visitors_are_sent_to_sign_in(client: FlaskClient, web_db: Database) -> None:
    for url in (*OPS_URLS, *FINANCE_URLS):
        response = client.get(url)
        assert response.status_code in (302, 401), url
        if response.status_code == 302:
            assert "/auth/sign-in" in response.location


def test_a_fragment_is_a_block_for_htmx_and_a_page_otherwise(
    client: FlaskClient, make_user: Callable[..., MadeUser], login: Any, web_db: Database, at_later: Any
) -> None:
    world(web_db)
    _signed_in(client, make_user, login, "manager")
    fragment = client.get("/dashboards/panels/latency", headers={"HX-Request": "true"})
    assert "<html" not in fragment.get_data(as_text=True)
    assert 'id="panel-latency"' in fragment.get_data(as_text=True)
    assert "HX-Request" in fragment.headers["Vary"]
    page = client.get("/dashboards/panels/latency")
    body = page.get_data(as_text=True)
    assert "<html" in body and 'id="panel-latency"' in body and "js/charts.js" in body
    index = client.get("/dashboards/").get_data(as_text=True)
    # Every panel is a self-loading fragment that names its URL and refreshes every minute.
    for url in OPS_URLS[1:]:
        assert f'hx-get="{url}"' in index
    assert index.count('hx-trigger="load, every 60s"') == len(OPS_URLS) - 1
    assert 'id="link-approvals" href="/approvals"' in index
    assert 'id="link-finance-charts"' in index


def test_ops_charts_show_the_hand_computed_numbers(
    client: FlaskClient, make_user: Callable[..., MadeUser], login: Any, web_db: Database, at_later: Any
) -> None:
    world(web_db)
    _signed_in(client, make_user, login, "manager")

    # Governor response time: the five observations of zz_dashboard_test (see test_rollups for the
    # interpolation): P50 0.4375 s, P99 4.85 s; P25 rank 1.25 → (0.25, 0.5] 0.25 + 0.25 × 0.25/2.
    box = next(
        t for t in _figures(_fragment(client, "/dashboards/panels/response"))["response"][0]["data"]
        if t["name"] == "zz_dashboard_test"
    )  # fmt: skip
    assert box["type"] == "box"
    assert box["median"] == [437.5]
    assert box["upperfence"] == [4850.0]
    assert box["q1"] == [281.2]
    figure = _figures(_fragment(client, "/dashboards/panels/response"))["response"][0]
    assert "last 24 h" in figure["layout"]["title"]["text"]
    assert any(s.get("y0") == 2000.0 for s in figure["layout"]["shapes"])  # the 2 s line

    latency = _figures(_fragment(client, "/dashboards/panels/latency"))["latency"][0]
    lines = {s["y0"] for s in latency["layout"]["shapes"]}
    assert {500.0, 1000.0, 5000.0} <= lines
    assert "last 24 h" in latency["layout"]["title"]["text"]

    states = _fragment(client, "/dashboards/panels/states")
    # Subscription trial: 1800 s and 7200 s → P50 1800 s = 30m, P99 7128 s = 1h 58m.
    row = re.search(
        r'data-governor="subscription" data-state="trial" data-p99-seconds="([^"]+)">(.*?)</tr>', states, re.S
    )
    assert row is not None
    assert float(row.group(1)) == pytest.approx(7128.0)
    assert ">30m<" in row.group(2) and ">1h 58m<" in row.group(2)

    sla = _fragment(client, "/dashboards/panels/sla")
    assert 'id="violation-c-1-2026-02"' in sla
    assert "c-2" not in re.search(r'id="sla-violations">(.*?)</table>', sla, re.S).group(1)  # type: ignore[union-attr]
    assert re.search(r'data-tier="professional">.*?data-cents="900">9.00<', sla, re.S)
    sla_fig = _figures(sla)["sla"][0]
    uptime = next(t for t in sla_fig["data"] if t["name"] == "mean uptime")
    target = next(t for t in sla_fig["data"] if t["name"] == "uptime target")
    tiers = uptime["x"]
    assert uptime["y"][tiers.index("professional")] == pytest.approx(99.5)
    assert target["y"][tiers.index("professional")] == pytest.approx(99.9)
    met = next(t for t in sla_fig["data"] if t["name"] == "uptime met")
    assert met["y"][tiers.index("starter")] == 100.0 and met["y"][tiers.index("professional")] == 0.0

    stuck = _fragment(client, "/dashboards/panels/stuck")
    assert 'id="stuck-inv-1"' in stuck and "10m ago" in stuck
    assert re.search(r'data-governor="billing"><span class="muted small">[^<]*</span><strong>1<', stuck)

    approvals = _fragment(client, "/dashboards/panels/approvals")
    for cls in ("OK", "WARN", "ESCALATE"):
        assert re.search(rf'data-class="{cls}"><span class="muted small">{cls}</span><strong>1<', approvals)
    order = re.findall(r'id="pending-(ent-[a-z]+)" data-class="([A-Z]+)"', approvals)
    assert order == [("ent-esc", "ESCALATE"), ("ent-warn", "WARN"), ("ent-ok", "OK")]
    assert 'id="approval-queue-link" href="/approvals"' in approvals
    bars = _figures(approvals)["approvals"][0]["data"][0]
    assert bars["x"] == ["OK", "WARN", "ESCALATE"] and bars["y"] == [1, 1, 1]

    subs = _figures(_fragment(client, "/dashboards/panels/subscriptions"))["subscriptions"]
    pie = subs[0]["data"][0]
    assert dict(zip(pie["labels"], pie["values"], strict=True)) == {"cancelled": 1, "trial_ended": 1}
    trend = {t["name"]: t for t in subs[1]["data"]}
    # Week of T0 (Mon 2026-02-23): sub-1 converted (trial → active), sub-2's trial ended: 1 of 2 = 50 %.
    week = trend["trial conversion"]["x"].index("2026-02-23T00:00:00+00:00")
    assert trend["trial conversion"]["y"][week] == 50.0
    assert {s["y0"] for s in subs[1]["layout"]["shapes"]} == {5.0, 20.0}


def test_finance_charts_show_the_hand_computed_numbers(
    client: FlaskClient, make_user: Callable[..., MadeUser], login: Any, web_db: Database, at_later: Any
) -> None:
    world(web_db)
    _signed_in(client, make_user, login, "finance")
    at_later(T0 + timedelta(hours=2, minutes=5))  # window: T0+1h onwards (this and the previous hour)
    payments = _fragment(client, "/dashboards/finance/payments")
    gauges = _figures(payments)["payments"][0]["data"]
    # inv-1 declined at T0+1h, inv-2 paid at T0+1h10 (both sandbox); inv-1's stripe payment is later.
    assert [(g["type"], g["value"]) for g in gauges] == [("indicator", 50.0)]
    steps = [s["range"] for s in gauges[0]["gauge"]["steps"]]
    assert steps == [[90, 98.0], [98.0, 99.0], [99.0, 100]]
    assert re.search(
        r'data-processor="sandbox"><td>sandbox</td><td class="num">1</td><td class="num">2</td>', payments
    )

    at_later(NOW)
    recovery = _figures(_fragment(client, "/dashboards/finance/recovery"))["recovery"][0]
    line = recovery["data"][0]
    week = line["x"].index("2026-02-23T00:00:00+00:00")
    assert line["y"][week] == 100.0  # one invoice failed and was paid on retry 1
    assert [s["y0"] for s in recovery["layout"]["shapes"]] == [70.0]

    failures = _fragment(client, "/dashboards/finance/failures")
    bars = _figures(failures)["failures"][0]["data"]
    assert [(b["name"], sum(b["y"])) for b in bars] == [("insufficient_funds", 1)]
    assert bars[0]["y"][bars[0]["x"].index("2026-02-28T00:00:00+00:00")] == 1


def test_text_from_the_data_is_escaped_in_the_figures() -> None:
    """Processor names and decline codes come from webhooks: Plotly reads labels as pseudo-HTML."""
    from webapp import dashboard_charts as charts

    evil = "<img src=x onerror=alert(1)>"
    gauge = charts.payment_gauges({evil: (1, 1)}, window="w", red_pct=98, green_pct=99).to_plotly_json()
    assert "<img" not in gauge["data"][0]["title"]["text"]
    assert "&lt;img src=x onerror=alert(1)&gt;" in gauge["data"][0]["title"]["text"]
    bars = charts.failure_reasons([LATER], {evil: [1]}, window="w").to_plotly_json()
    assert bars["data"][0]["name"] == "&lt;img src=x onerror=alert(1)&gt;"


def test_panels_read_rollups_never_the_history(
    client: FlaskClient,
    make_user: Callable[..., MadeUser],
    login: Any,
    web_db: Database,
    web_runtime: Any,
    at_later: Any,
) -> None:
    """Every statement a dashboard request runs: no history table, no unfiltered instance scan."""
    from sqlalchemy import event

    world(web_db)
    _signed_in(client, make_user, login, "manager")
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    engine = web_runtime.db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        for url in (*OPS_URLS[1:], *FINANCE_URLS[1:]):
            _fragment(client, url)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    reads = [s for s in seen if s.startswith("SELECT")]
    assert reads
    for statement in reads:
        for raw in ("FROM transitions", "JOIN transitions", "FROM effect_runs", "FROM audit_entries"):
            assert raw not in statement, statement
        if "FROM governor_instances" in statement:  # the two live queues: indexed conditions only
            assert "governor_instances.timeout_at <" in statement or (
                "governor_instances.governor =" in statement and "governor_instances.state =" in statement
            ), statement


def test_a_web_node_flushes_its_decision_latencies_after_requests(
    client: FlaskClient, web_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staff actions are decided on web nodes, which never run the rollup refresh: they flush after
    requests (at most once a minute), so the dashboards' latency charts include them."""
    from webapp.models.rollups import RollupDecisionLatency
    from webapp.services import rollups

    with web_db.session() as s:
        flush_decision_latency(s, datetime.now(UTC))  # baseline: whatever this process saw before
        s.execute(RollupDecisionLatency.__table__.delete())
    observe_decision("web_flush_test", 0.3)
    observe_decision("web_flush_test", 0.7)
    monkeypatch.setattr(rollups, "_last_flush", 0.0)  # this process has not flushed for a minute
    client.get("/healthz")
    with web_db.session() as s:
        rows = s.query(RollupDecisionLatency).filter_by(governor="web_flush_test").all()
        assert [r.count for r in rows] == [2]
    observe_decision("web_flush_test", 0.7)
    client.get("/healthz")  # within the minute: not flushed again yet
    with web_db.session() as s:
        assert s.query(RollupDecisionLatency).filter_by(governor="web_flush_test").one().count == 2
