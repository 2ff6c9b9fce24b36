"""Plotly figures of the dashboards (CONSOLE.md §3.1, §3.2): plain rows in, ``go.Figure`` out.

No Flask, no database: the blueprint reads the rollups (``webapp.services.rollups``/``sla``) and
passes rows here; tests read the figures' data back. Every figure names its window in its title and
draws its thresholds (labelled horizontal lines, gauge steps, target markers). Figures use the
empty ``"none"`` template with a few explicit styles, so each one is a few hundred bytes of JSON
instead of Plotly's ~10 kB default template.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import plotly.graph_objects as go  # type: ignore[import-untyped]

GRID: Final = "#e5e7eb"
OK: Final = "#16a34a"
WARN: Final = "#f59e0b"
BAD: Final = "#dc2626"
INFO: Final = "#2563eb"
MUTED: Final = "#6b7280"
SERIES: Final = ("#2563eb", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#ea580c", "#4b5563", "#ca8a04")


def _layout(title: str, *, height: int = 300, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "template": "none",
        "title": {"text": title, "font": {"size": 14}, "x": 0.01, "xanchor": "left"},
        "height": height,
        "margin": {"l": 56, "r": 24, "t": 44, "b": 40},
        "font": {"family": "system-ui, sans-serif", "size": 12, "color": "#111827"},
        "paper_bgcolor": "#fff",
        "plot_bgcolor": "#fff",
        "legend": {"orientation": "h", "y": -0.18},
        "xaxis": {"gridcolor": GRID},
        "yaxis": {"gridcolor": GRID, "rangemode": "tozero"},
    }
    layout.update(extra)
    return layout


def _line(
    layout: dict[str, Any],
    y: float,
    label: str,
    color: str,
    dash: str = "dash",
    *,
    log: bool = False,
    axis: str = "",
) -> None:
    """A labelled threshold line across the plot (on a log axis the label sits at log10(y)).

    Written into ``layout`` as plain shape/annotation dicts (what ``add_hline`` makes), so the
    figure is validated once when built, not once per line (``add_hline`` costs ~15 ms each).
    """
    xref, yref = f"x{axis} domain", f"y{axis}"
    layout.setdefault("shapes", []).append(
        {
            "type": "line",
            "xref": xref,
            "x0": 0,
            "x1": 1,
            "yref": yref,
            "y0": y,
            "y1": y,
            "line": {"color": color, "dash": dash, "width": 1.5},
        }
    )
    if label:
        layout.setdefault("annotations", []).append(
            {
                "xref": xref,
                "x": 0,
                "yref": yref,
                "y": math.log10(y) if log else y,
                "text": label,
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "bottom",
                "font": {"color": color, "size": 11},
            }
        )


def _span(layout: dict[str, Any], span: tuple[datetime, datetime] | None) -> None:
    """Show the whole window on the time axis, even where it has no data yet."""
    if span is not None:
        layout["xaxis"] = {
            **layout["xaxis"],
            "range": [span[0].isoformat(), span[1].isoformat()],
            "type": "date",
        }


def _figure(traces: list[dict[str, Any]], layout: dict[str, Any]) -> go.Figure:
    return go.Figure(data=traces, layout=layout)


def _label(value: object) -> str:
    """Text from the data (processor names, decline codes, states) as Plotly's pseudo-HTML, escaped."""
    return html.escape(str(value), quote=False)


def _iso(moments: Iterable[datetime]) -> list[str]:
    return [m.isoformat() for m in moments]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# --------------------------------------------------------------------------- manager: ops


def _scatter(x: list[Any], y: list[Any], name: str, **extra: Any) -> dict[str, Any]:
    return {"type": "scatter", "x": x, "y": y, "name": name, "mode": "lines+markers", **extra}


def decision_latency(
    hours: Sequence[datetime],
    p50: Sequence[float | None],
    p95: Sequence[float | None],
    p99: Sequence[float | None],
    *,
    window: str,
    slo_ms: float,
    alert_ms: float,
    high_ms: float,
    span: tuple[datetime, datetime] | None = None,
) -> go.Figure:
    """Decision latency P50/P95/P99 per hour (ms) against the SLO, alert and HIGH lines."""
    layout = _layout(f"Decision latency P50/P95/P99 (ms) · {window}")
    # Log scale from 1 ms to 10 s, one label per decade: the SLO, alert and HIGH lines all stay visible.
    layout["yaxis"] = {**layout["yaxis"], "type": "log", "title": {"text": "ms"}, "range": [0, 4], "dtick": 1}
    x = _iso(hours)
    traces = [
        _scatter(x, [_ms(v) for v in values], name, line={"color": color})
        for name, values, color in (("P50", p50, OK), ("P95", p95, WARN), ("P99", p99, INFO))
    ]
    _line(layout, slo_ms, f"SLO {slo_ms:g} ms", OK, log=True)
    _line(layout, alert_ms, f"alert {alert_ms:g} ms", WARN, log=True)
    _line(layout, high_ms, f"HIGH {high_ms:g} ms", BAD, log=True)
    _span(layout, span)
    return _figure(traces, layout)


def error_rate(
    hours: Sequence[datetime],
    rates_pct: Sequence[float | None],
    *,
    window: str,
    slo_pct: float,
    critical_pct: float,
    span: tuple[datetime, datetime] | None = None,
) -> go.Figure:
    """Background error rate per hour (%) with the SLO and critical bands."""
    layout = _layout(f"Error rate (%) · {window}")
    top = max([critical_pct * 1.25, *(r for r in rates_pct if r is not None)])
    layout["yaxis"] = {**layout["yaxis"], "title": {"text": "%"}, "range": [0, top]}
    _line(layout, slo_pct, f"SLO {slo_pct:g} %", WARN)
    _line(layout, critical_pct, f"critical {critical_pct:g} %", BAD)
    _span(layout, span)
    return _figure([_scatter(_iso(hours), list(rates_pct), "error rate")], layout)


def queue_depth(
    moments: Sequence[datetime],
    depth: Sequence[float],
    *,
    window: str,
    capacity: int,
    high_water_pct: float,
    span: tuple[datetime, datetime] | None = None,
) -> go.Figure:
    """Event queue depth as % of capacity, with the high-water line."""
    layout = _layout(f"Event queue depth (% of {capacity}) · {window}")
    layout["yaxis"] = {**layout["yaxis"], "title": {"text": "% of capacity"}, "range": [0, 100]}
    pct = [round(100.0 * d / capacity, 2) for d in depth]
    trace = _scatter(_iso(moments), pct, "queue", mode="lines", customdata=list(depth), fill="tozeroy")
    _line(layout, high_water_pct, f"{high_water_pct:g} %", BAD)
    _span(layout, span)
    return _figure([trace], layout)


@dataclass(frozen=True)
class BoxStats:
    """The five numbers of a precomputed box (seconds)."""

    governor: str
    low: float | None
    q1: float | None
    median: float | None
    q3: float | None
    high: float | None
    count: int


def response_times(boxes: Sequence[BoxStats], *, window: str, limit_ms: float) -> go.Figure:
    """Per-governor decision time as boxes (P5, P25, P50, P75, P99 in ms) against the 2 s line."""
    layout = _layout(f"Governor response time (ms; whiskers P5–P99) · {window}")
    layout["yaxis"] = {**layout["yaxis"], "title": {"text": "ms"}}
    traces = [
        {
            "type": "box",
            "name": _label(b.governor),
            "x": [_label(b.governor)],
            "q1": [_ms(b.q1)],
            "median": [_ms(b.median)],
            "q3": [_ms(b.q3)],
            "lowerfence": [_ms(b.low)],
            "upperfence": [_ms(b.high)],
            "marker": {"color": SERIES[i % len(SERIES)]},
            "showlegend": False,
        }
        for i, b in enumerate(boxes)
    ]
    _line(layout, limit_ms, f"{limit_ms / 1000:g} s", BAD)
    return _figure(traces, layout)


# --------------------------------------------------------------------------- manager: SLA, subscriptions


@dataclass(frozen=True)
class TierBar:
    """One tier's SLA numbers for the grouped bars."""

    tier: str
    mean_uptime_pct: float | None
    uptime_target_pct: float | None
    mean_p99_ms: float | None
    p99_target_ms: float | None
    uptime_met_pct: float | None
    p99_met_pct: float | None


def sla_by_tier(tiers: Sequence[TierBar], *, window: str) -> go.Figure:
    """Per tier: share of customer periods meeting uptime and latency (bars, left) against 100 %, and
    the mean uptime against the tier's target (bars and markers, right)."""
    names = [_label(t.tier) for t in tiers]
    low = min([t.uptime_target_pct for t in tiers if t.uptime_target_pct] + [99.0]) - 1.0
    layout = _layout(f"SLA achievement by tier · {window}", height=340, barmode="group")
    layout["margin"] = {"l": 56, "r": 24, "t": 76, "b": 40}
    layout["xaxis"] = {"domain": [0, 0.46], "gridcolor": GRID}
    layout["yaxis"] = {"range": [0, 105], "gridcolor": GRID}
    layout["xaxis2"] = {"domain": [0.54, 1], "anchor": "y2", "gridcolor": GRID}
    layout["yaxis2"] = {"range": [max(0.0, low), 100.05], "anchor": "x2", "gridcolor": GRID}
    layout["annotations"] = [
        {"text": text, "x": x, "xref": "paper", "y": 1.0, "yref": "paper", "yanchor": "bottom",
         "xanchor": "center", "showarrow": False, "font": {"size": 13}}
        for text, x in (("Periods meeting target (%)", 0.23), ("Mean uptime (%) vs tier target", 0.77))
    ]  # fmt: skip
    traces = [
        {"type": "bar", "x": names, "y": [t.uptime_met_pct for t in tiers], "name": "uptime met",
         "marker": {"color": INFO}},
        {"type": "bar", "x": names, "y": [t.p99_met_pct for t in tiers], "name": "latency met",
         "marker": {"color": "#7c3aed"}},
        {"type": "bar", "x": names, "y": [t.mean_uptime_pct for t in tiers], "name": "mean uptime",
         "marker": {"color": OK}, "xaxis": "x2", "yaxis": "y2"},
        {"type": "scatter", "x": names, "y": [t.uptime_target_pct for t in tiers], "name": "uptime target",
         "mode": "markers", "xaxis": "x2", "yaxis": "y2",
         "marker": {"symbol": "line-ew-open", "size": 28, "line": {"width": 3, "color": BAD}}},
    ]  # fmt: skip
    _line(layout, 100, "", BAD)
    return _figure(traces, layout)


def subscription_states(counts: Mapping[str, int], *, window: str) -> go.Figure:
    """Subscriptions per state (pie)."""
    labels = [s for s in counts if counts[s] > 0]
    trace = {
        "type": "pie",
        "labels": [_label(s) for s in labels],
        "values": [counts[s] for s in labels],
        "hole": 0.45,
        "sort": False,
        "textinfo": "label+percent",
    }
    return _figure([trace], _layout(f"Subscription states · {window}", showlegend=False))


def churn_and_conversion(
    weeks: Sequence[datetime],
    churn_pct: Sequence[float | None],
    conversion_pct: Sequence[float | None],
    *,
    window: str,
    churn_limit_pct: float,
    conversion_goal_pct: float,
) -> go.Figure:
    """Weekly churn and trial conversion (%), with the 5 % churn and 20 % conversion lines."""
    layout = _layout(f"Churn and trial conversion (% per week) · {window}")
    layout["yaxis"] = {**layout["yaxis"], "title": {"text": "%"}}
    x = _iso(weeks)
    traces = [
        _scatter(x, list(churn_pct), "churn", line={"color": BAD}),
        _scatter(x, list(conversion_pct), "trial conversion", line={"color": OK}),
    ]
    _line(layout, churn_limit_pct, f"churn {churn_limit_pct:g} %", BAD)
    _line(layout, conversion_goal_pct, f"conversion {conversion_goal_pct:g} %", OK, dash="dot")
    return _figure(traces, layout)


def approval_ages(classes: Mapping[str, int], *, window: str, warn_h: float, escalate_h: float) -> go.Figure:
    """Pending entitlement approvals by age class (OK / WARN / ESCALATE)."""
    names = ["OK", "WARN", "ESCALATE"]
    trace = {
        "type": "bar",
        "x": names,
        "y": [classes.get(n, 0) for n in names],
        "marker": {"color": [OK, WARN, BAD]},
        "text": [classes.get(n, 0) for n in names],
        "textposition": "auto",
    }
    title = f"Entitlement approvals waiting · {window} (WARN > {warn_h:g} h, ESCALATE > {escalate_h:g} h)"
    return _figure([trace], _layout(title, height=260))


# --------------------------------------------------------------------------- finance


def payment_gauges(
    rates: Mapping[str, tuple[int, int]], *, window: str, red_pct: float, green_pct: float
) -> go.Figure:
    """One gauge per processor: success % over the window; red < 98, yellow < 99, green ≥ 99."""
    processors = sorted(rates) or ["no payments"]
    layout = _layout(f"Payment success rate by processor · {window}", height=320)
    layout["margin"] = {"l": 30, "r": 30, "t": 110, "b": 10}
    layout["title"] = {**layout["title"], "y": 0.98, "yanchor": "top"}
    n = len(processors)
    traces = []
    for i, name in enumerate(processors):
        ok, attempts = rates.get(name, (0, 0))
        value = round(100.0 * ok / attempts, 2) if attempts else None
        colour = MUTED if value is None else OK if value >= green_pct else WARN if value >= red_pct else BAD
        traces.append(
            {
                "type": "indicator",
                "mode": "gauge+number",
                "value": value,
                "number": {"suffix": " %", "valueformat": ".2f"},
                "title": {
                    "text": f"{_label(name)}<br><span style='font-size:11px'>{ok}/{attempts} paid</span>"
                },
                "domain": {"x": [i / n + 0.02, (i + 1) / n - 0.02], "y": [0, 1]},
                "gauge": {
                    "axis": {"range": [90, 100]},
                    "bar": {"color": colour},
                    "steps": [
                        {"range": [90, red_pct], "color": "#fee2e2"},
                        {"range": [red_pct, green_pct], "color": "#fef3c7"},
                        {"range": [green_pct, 100], "color": "#dcfce7"},
                    ],
                    "threshold": {"line": {"color": BAD, "width": 3}, "thickness": 0.8, "value": red_pct},
                },
            }
        )
    return _figure(traces, layout)


def recovery_rate(
    weeks: Sequence[datetime], rates_pct: Sequence[float | None], *, window: str, goal_pct: float
) -> go.Figure:
    """Weekly recovery rate: failed invoices later paid, % of invoices that failed; 70 % line."""
    layout = _layout(f"Recovery rate (% per week) · {window}")
    layout["yaxis"] = {**layout["yaxis"], "title": {"text": "%"}, "range": [0, 105]}
    _line(layout, goal_pct, f"goal {goal_pct:g} %", OK)
    return _figure([_scatter(_iso(weeks), list(rates_pct), "recovered")], layout)


def failure_reasons(
    days: Sequence[datetime],
    by_reason: Mapping[str, Sequence[int]],
    *,
    window: str,
    alert_per_day: float | None = None,
) -> go.Figure:
    """Declined payments per day, stacked by decline reason."""
    layout = _layout(f"Payment failures by reason (per day) · {window}", barmode="stack", showlegend=True)
    layout["yaxis"] = {**layout["yaxis"], "title": {"text": "declines"}}
    x = _iso(days)
    traces = [
        {
            "type": "bar",
            "x": x,
            "y": list(by_reason[reason]),
            "name": _label(reason),
            "marker": {"color": SERIES[i % len(SERIES)]},
        }
        for i, reason in enumerate(sorted(by_reason))
    ]
    if alert_per_day is not None:
        _line(layout, alert_per_day, f"{alert_per_day:g}/day", BAD)
    return _figure(traces, layout)


def as_json(fig: go.Figure) -> str:
    """The figure as JSON for a ``data-figure`` attribute (``static/js/charts.js`` draws it)."""
    return str(fig.to_json())
