"""Plotly figures of the dashboards (CONSOLE.md §3.1, §3.2): plain rows in, ``go.Figure`` out.

No Flask, no database: the blueprint reads the rollups (``webapp.services.rollups``/``sla``) and
passes rows here; tests read the figures' data back. Every figure names its window in its title and
draws its thresholds (``add_hline`` lines with a label, gauge steps, target markers). Figures use the
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
from plotly.subplots import make_subplots  # type: ignore[import-untyped]

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


def _line(fig: go.Figure, y: float, label: str, color: str, dash: str = "dash", *, log: bool = False) -> None:
    """A labelled threshold line across the plot (on a log axis the label sits at log10(y))."""
    line = {"color": color, "dash": dash, "width": 1.5}
    if not log:
        fig.add_hline(
            y=y,
            line=line,
            annotation={"text": label, "font": {"color": color, "size": 11}},
            annotation_position="top left",
        )
        return
    fig.add_hline(y=y, line=line)
    fig.add_annotation(
        x=0,
        xref="x domain",
        y=math.log10(y),
        yref="y",
        text=label,
        showarrow=False,
        xanchor="left",
        yanchor="bottom",
        font={"color": color, "size": 11},
    )


def _span(fig: go.Figure, span: tuple[datetime, datetime] | None) -> None:
    """Show the whole window on the time axis, even where it has no data yet."""
    if span is not None:
        fig.update_xaxes(range=[span[0].isoformat(), span[1].isoformat()], type="date")


def _label(value: object) -> str:
    """Text from the data (processor names, decline codes, states) as Plotly's pseudo-HTML, escaped."""
    return html.escape(str(value), quote=False)


def _iso(moments: Iterable[datetime]) -> list[str]:
    return [m.isoformat() for m in moments]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# --------------------------------------------------------------------------- manager: ops


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
    fig = go.Figure(layout=_layout(f"Decision latency P50/P95/P99 (ms) · {window}"))
    x = _iso(hours)
    for name, values, color in (("P50", p50, OK), ("P95", p95, WARN), ("P99", p99, INFO)):
        fig.add_trace(
            go.Scatter(
                x=x, y=[_ms(v) for v in values], name=name, mode="lines+markers", line={"color": color}
            )
        )
    _line(fig, slo_ms, f"SLO {slo_ms:g} ms", OK, log=True)
    _line(fig, alert_ms, f"alert {alert_ms:g} ms", WARN, log=True)
    _line(fig, high_ms, f"HIGH {high_ms:g} ms", BAD, log=True)
    # Log scale from 1 ms to 10 s, one label per decade: the SLO, alert and HIGH lines all stay visible.
    fig.update_yaxes(type="log", title_text="ms", range=[0, 4], dtick=1)
    _span(fig, span)
    return fig


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
    fig = go.Figure(layout=_layout(f"Error rate (%) · {window}"))
    fig.add_trace(go.Scatter(x=_iso(hours), y=list(rates_pct), name="error rate", mode="lines+markers"))
    _line(fig, slo_pct, f"SLO {slo_pct:g} %", WARN)
    _line(fig, critical_pct, f"critical {critical_pct:g} %", BAD)
    top = max([critical_pct * 1.25, *(r for r in rates_pct if r is not None)])
    fig.update_yaxes(title_text="%", range=[0, top])
    _span(fig, span)
    return fig


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
    fig = go.Figure(layout=_layout(f"Event queue depth (% of {capacity}) · {window}"))
    pct = [round(100.0 * d / capacity, 2) for d in depth]
    fig.add_trace(
        go.Scatter(x=_iso(moments), y=pct, name="queue", mode="lines", customdata=list(depth), fill="tozeroy")
    )
    _line(fig, high_water_pct, f"{high_water_pct:g} %", BAD)
    fig.update_yaxes(title_text="% of capacity", range=[0, 100])
    _span(fig, span)
    return fig


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
    fig = go.Figure(layout=_layout(f"Governor response time (ms; whiskers P5–P99) · {window}"))
    for i, b in enumerate(boxes):
        fig.add_trace(
            go.Box(
                name=_label(b.governor),
                x=[_label(b.governor)],
                q1=[_ms(b.q1)],
                median=[_ms(b.median)],
                q3=[_ms(b.q3)],
                lowerfence=[_ms(b.low)],
                upperfence=[_ms(b.high)],
                marker={"color": SERIES[i % len(SERIES)]},
                showlegend=False,
            )
        )
    _line(fig, limit_ms, f"{limit_ms / 1000:g} s", BAD)
    fig.update_yaxes(title_text="ms")
    return fig


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
    """Per tier: share of customer periods meeting uptime and latency (bars) against 100 %, and the
    mean uptime / p99 against the tier targets (markers)."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Periods meeting target (%)", "Mean uptime (%) vs tier target"),
    )
    names = [_label(t.tier) for t in tiers]
    fig.add_trace(
        go.Bar(x=names, y=[t.uptime_met_pct for t in tiers], name="uptime met", marker={"color": INFO}), 1, 1
    )
    fig.add_trace(
        go.Bar(x=names, y=[t.p99_met_pct for t in tiers], name="latency met", marker={"color": "#7c3aed"}),
        1,
        1,
    )
    fig.add_trace(
        go.Bar(x=names, y=[t.mean_uptime_pct for t in tiers], name="mean uptime", marker={"color": OK}), 1, 2
    )
    fig.add_trace(
        go.Scatter(
            x=names,
            y=[t.uptime_target_pct for t in tiers],
            name="uptime target",
            mode="markers",
            marker={"symbol": "line-ew-open", "size": 28, "line": {"width": 3, "color": BAD}},
        ),
        1,
        2,
    )
    fig.add_hline(y=100, line={"color": BAD, "dash": "dash", "width": 1}, row=1, col=1)
    fig.update_layout(**_layout(f"SLA achievement by tier · {window}", height=340, barmode="group"))
    fig.update_layout(margin={"l": 56, "r": 24, "t": 76, "b": 40})
    fig.update_yaxes(range=[0, 105], row=1, col=1, gridcolor=GRID)
    low = min([t.uptime_target_pct for t in tiers if t.uptime_target_pct] + [99.0]) - 1.0
    fig.update_yaxes(range=[max(0.0, low), 100.05], row=1, col=2, gridcolor=GRID)
    return fig


def subscription_states(counts: Mapping[str, int], *, window: str) -> go.Figure:
    """Subscriptions per state (pie)."""
    labels = [s for s in counts if counts[s] > 0]
    fig = go.Figure(
        go.Pie(
            labels=[_label(s) for s in labels],
            values=[counts[s] for s in labels],
            hole=0.45,
            sort=False,
            textinfo="label+percent",
        ),
        layout=_layout(f"Subscription states · {window}", showlegend=False),
    )
    return fig


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
    fig = go.Figure(layout=_layout(f"Churn and trial conversion (% per week) · {window}"))
    x = _iso(weeks)
    fig.add_trace(go.Scatter(x=x, y=list(churn_pct), name="churn", mode="lines+markers", line={"color": BAD}))
    fig.add_trace(
        go.Scatter(
            x=x, y=list(conversion_pct), name="trial conversion", mode="lines+markers", line={"color": OK}
        )
    )
    _line(fig, churn_limit_pct, f"churn {churn_limit_pct:g} %", BAD)
    _line(fig, conversion_goal_pct, f"conversion {conversion_goal_pct:g} %", OK, dash="dot")
    fig.update_yaxes(title_text="%")
    return fig


def approval_ages(classes: Mapping[str, int], *, window: str, warn_h: float, escalate_h: float) -> go.Figure:
    """Pending entitlement approvals by age class (OK / WARN / ESCALATE)."""
    names = ["OK", "WARN", "ESCALATE"]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[classes.get(n, 0) for n in names],
            marker={"color": [OK, WARN, BAD]},
            text=[classes.get(n, 0) for n in names],
            textposition="auto",
        ),
        layout=_layout(
            f"Entitlement approvals waiting · {window} (WARN > {warn_h:g} h, ESCALATE > {escalate_h:g} h)",
            height=260,
        ),
    )
    return fig


# --------------------------------------------------------------------------- finance


def payment_gauges(
    rates: Mapping[str, tuple[int, int]], *, window: str, red_pct: float, green_pct: float
) -> go.Figure:
    """One gauge per processor: success % over the window; red < 98, yellow < 99, green ≥ 99."""
    processors = sorted(rates) or ["no payments"]
    fig = go.Figure(layout=_layout(f"Payment success rate by processor · {window}", height=320))
    fig.update_layout(margin={"l": 30, "r": 30, "t": 110, "b": 10}, title={"y": 0.98, "yanchor": "top"})
    n = len(processors)
    for i, name in enumerate(processors):
        ok, attempts = rates.get(name, (0, 0))
        value = round(100.0 * ok / attempts, 2) if attempts else None
        colour = MUTED if value is None else OK if value >= green_pct else WARN if value >= red_pct else BAD
        fig.add_trace(
            go.Indicator(
                mode="gauge+number",
                value=value,
                number={"suffix": " %", "valueformat": ".2f"},
                title={"text": f"{_label(name)}<br><span style='font-size:11px'>{ok}/{attempts} paid</span>"},
                domain={"x": [i / n + 0.02, (i + 1) / n - 0.02], "y": [0, 1]},
                gauge={
                    "axis": {"range": [90, 100]},
                    "bar": {"color": colour},
                    "steps": [
                        {"range": [90, red_pct], "color": "#fee2e2"},
                        {"range": [red_pct, green_pct], "color": "#fef3c7"},
                        {"range": [green_pct, 100], "color": "#dcfce7"},
                    ],
                    "threshold": {"line": {"color": BAD, "width": 3}, "thickness": 0.8, "value": red_pct},
                },
            )
        )
    return fig


def recovery_rate(
    weeks: Sequence[datetime], rates_pct: Sequence[float | None], *, window: str, goal_pct: float
) -> go.Figure:
    """Weekly recovery rate: failed invoices later paid, % of invoices that failed; 70 % line."""
    fig = go.Figure(layout=_layout(f"Recovery rate (% per week) · {window}"))
    fig.add_trace(go.Scatter(x=_iso(weeks), y=list(rates_pct), name="recovered", mode="lines+markers"))
    _line(fig, goal_pct, f"goal {goal_pct:g} %", OK)
    fig.update_yaxes(title_text="%", range=[0, 105])
    return fig


def failure_reasons(
    days: Sequence[datetime],
    by_reason: Mapping[str, Sequence[int]],
    *,
    window: str,
    alert_per_day: float | None = None,
) -> go.Figure:
    """Declined payments per day, stacked by decline reason."""
    fig = go.Figure(
        layout=_layout(f"Payment failures by reason (per day) · {window}", barmode="stack", showlegend=True)
    )
    x = _iso(days)
    for i, reason in enumerate(sorted(by_reason)):
        fig.add_trace(
            go.Bar(
                x=x, y=list(by_reason[reason]), name=_label(reason), marker={"color": SERIES[i % len(SERIES)]}
            )
        )
    if alert_per_day is not None:
        _line(fig, alert_per_day, f"{alert_per_day:g}/day", BAD)
    fig.update_yaxes(title_text="declines")
    return fig


def as_json(fig: go.Figure) -> str:
    """The figure as JSON for a ``data-figure`` attribute (``static/js/charts.js`` draws it)."""
    return str(fig.to_json())
