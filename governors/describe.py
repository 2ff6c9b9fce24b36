"""Governor definitions as plain data (JSON-ready dicts) and as Markdown tables.

Used by ``marketplace governors --json`` / ``--markdown`` (INTERFACES.md) and by the docs; the
output is deterministic so it can be diffed between releases.
"""

from __future__ import annotations

from typing import Any

from governors.registry import GOVERNORS
from governors.settings import Settings, default_settings
from governors.spec import ANY, SAME, Governor, Transition


def _target(t: Transition) -> str | list[str]:
    if t.dst == SAME:
        return "(same)"
    if t.dst.startswith("@"):
        return list(t.dst_choices)
    return t.dst


def describe(gov: Governor, settings: Settings | None = None) -> dict[str, Any]:
    """One governor as a JSON-ready dict: states, transitions, timers and cascades."""
    settings = settings or default_settings()
    initial = set(gov.initial_states)
    return {
        "name": gov.name,
        "title": gov.title,
        "description": gov.description,
        "instance_of": gov.instance_of,
        "multiple_per_customer": gov.multiple,
        "states": [
            {
                "name": s.name,
                "description": s.description,
                "initial": s.name in initial,
                "terminal": s.terminal,
                "attention": s.attention,
                "attention_reason": s.attention_reason,
            }
            for s in gov.states
        ],
        "transitions": [
            {
                "id": t.id,
                "title": t.title,
                "source": ["*"] if ANY in t.src else (list(t.src) or ["(new)"]),
                "events": list(t.events),
                "target": _target(t),
                "guards": list(t.guards),
                "effects": [e.name for e in t.effects],
                "roles": list(t.by),
                "requesters": list(t.requesters),
                "four_eyes": (
                    {"approvers": list(t.four_eyes.approvers), "when": t.four_eyes.when}
                    if t.four_eyes
                    else None
                ),
                "inputs": [
                    {"name": i.name, "kind": i.kind, "required": i.required, "choices": list(i.choices)}
                    for i in t.inputs
                ],
            }
            for t in gov.transitions
        ],
        "timers": [
            {
                "state": s.name,
                "name": t.name,
                "event": t.event,
                "after": settings[t.after] if t.after else None,
                "at": t.at,
                "before": settings[t.before] if t.before else None,
                "when": t.when,
            }
            for s in gov.states
            for t in s.timers
        ],
        "cascades": [
            {
                "id": c.id,
                "on": list(c.on),
                "target": c.target,
                "event": c.event,
                "select": c.select,
                "must": c.must,
            }
            for c in gov.cascades
        ],
    }


def describe_all(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every governor, in registry order."""
    return [describe(g, settings) for g in GOVERNORS.values()]


def _cell(value: object) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return text.replace("|", "\\|") or "—"


def markdown(settings: Settings | None = None) -> str:
    """All governors as Markdown: a states table and a transitions table each."""
    out: list[str] = []
    for d in describe_all(settings):
        out.append(f"## {d['title']} (`{d['name']}`)\n\n{d['description']}\n")
        out.append("| State | Initial | Terminal | Attention | Meaning |\n|---|---|---|---|---|")
        for s in d["states"]:
            attention = s["attention"] if isinstance(s["attention"], bool) else f"when {s['attention']}"
            flags = ["yes" if s["initial"] else "", "yes" if s["terminal"] else "", attention or ""]
            out.append(
                f"| {s['name']} | " + " | ".join(_cell(f) for f in flags) + f" | {_cell(s['description'])} |"
            )
        out.append("\n| # | From | Event | To | Guards | Roles | Four-eyes |\n|---|---|---|---|---|---|---|")
        for t in d["transitions"]:
            fe = t["four_eyes"]
            four = (
                ""
                if fe is None
                else ", ".join(fe["approvers"]) + (f" (when {fe['when']})" if fe["when"] else "")
            )
            out.append(
                f"| {t['id']} | {_cell(t['source'])} | {_cell(t['events'])} | {_cell(t['target'])} | "
                f"{_cell(t['guards'])} | {_cell(t['roles'] + [r + ' (request)' for r in t['requesters']])} | "
                f"{_cell(four)} |"
            )
        if d["timers"]:
            out.append("\n| State | Timer | Event | When |\n|---|---|---|---|")
            for tm in d["timers"]:
                due = (
                    f"after {tm['after']}"
                    if tm["after"]
                    else f"at {tm['at']}" + (f" − {tm['before']}" if tm["before"] else "")
                )
                out.append(f"| {tm['state']} | {tm['name']} | {tm['event']} | {due} |")
        out.append("")
    return "\n".join(out)
