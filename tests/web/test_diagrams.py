"""Tests for webapp.diagrams: SVG state diagrams built from hand-made Governor definitions."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from governors.spec import ANY, SAME, Governor, State, Transition
from webapp import diagrams
from webapp.diagrams import clear_caches, definition_version, layout, render_svg

SVG = "{http://www.w3.org/2000/svg}"
ROOT = Path(__file__).resolve().parents[2]


def row(
    rid: str, src: tuple[str, ...] | str, events: tuple[str, ...] | str, dst: str, **kw: object
) -> Transition:
    src_t = (src,) if isinstance(src, str) else src
    ev_t = (events,) if isinstance(events, str) else events
    return Transition(id=rid, events=ev_t, src=src_t, dst=dst, by=("sys",), **kw)  # type: ignore[arg-type]


def gov(name: str, states: list[State], rows: list[Transition], title: str = "Test governor") -> Governor:
    return Governor(
        name=name,
        title=title,
        description="",
        instance_of="thing",
        states=tuple(states),
        transitions=tuple(rows),
    )


def st(name: str, terminal: bool = False, attention: bool | str = False) -> State:
    return State(name, f"{name} description", terminal=terminal, attention=attention)


@pytest.fixture
def order_gov() -> Governor:
    """A small cyclic machine with a creation row, a self-loop, an ANY row and a terminal state."""
    return gov(
        "orders",
        [
            st("draft"),
            st("submitted", attention=True),
            st("approved"),
            st("rejected", attention="needs_review"),
            st("closed", terminal=True),
        ],
        [
            row("O1", (), "create", "draft"),
            row("O2", "draft", "submit", "submitted"),
            row("O3", "submitted", "approve", "approved"),
            row("O4", "submitted", "reject", "rejected"),
            row("O5", "rejected", "revise", "draft"),  # cycle draft -> submitted -> rejected -> draft
            row("O6", "submitted", "remind", SAME),  # self-loop
            row("O7", "approved", "reopen", "submitted"),  # 2-cycle with O3
            row("O8", (ANY,), "close", "closed"),
            row("O9", (ANY,), ("hold", "release"), SAME),
        ],
    )


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    clear_caches()


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def by_id(root: ET.Element) -> dict[str, ET.Element]:
    return {el.get("id", ""): el for el in root.iter() if el.get("id")}


def classes(el: ET.Element) -> set[str]:
    return set((el.get("class") or "").split())


# --- structure ---------------------------------------------------------------------------------------


def test_parses_as_svg_with_viewbox_and_size(order_gov: Governor) -> None:
    root = parse(render_svg(order_gov))
    assert root.tag == f"{SVG}svg"
    x0, y0, w, h = (float(v) for v in root.get("viewBox", "").split())
    assert (x0, y0) == (0, 0)
    assert w > 0
    assert h > 0
    assert float(root.get("width", "0")) == w
    assert float(root.get("height", "0")) == h
    assert root.find(f"{SVG}title") is not None
    assert root.find(f"{SVG}style") is not None
    assert "system-ui" in (root.get("font-family") or "")


def test_every_state_has_a_stable_id_and_data_state(order_gov: Governor) -> None:
    ids = by_id(parse(render_svg(order_gov)))
    for name in order_gov.state_names:
        el = ids[f"gov-orders-state-{name}"]
        assert el.get("data-state") == name
        assert "state" in classes(el)
        assert el.find(f"{SVG}title") is not None


def test_terminal_and_attention_classes(order_gov: Governor) -> None:
    ids = by_id(parse(render_svg(order_gov)))
    closed = ids["gov-orders-state-closed"]
    assert "terminal" in classes(closed)
    assert len(closed.findall(f"{SVG}rect")) == 2  # double border
    assert "attention" in classes(ids["gov-orders-state-submitted"])
    assert "attention" in classes(ids["gov-orders-state-rejected"])  # conditional (guard name)
    assert "attention" not in classes(ids["gov-orders-state-draft"])
    assert "terminal" not in classes(ids["gov-orders-state-draft"])


def test_current_state_is_the_only_one_marked_current(order_gov: Governor) -> None:
    root = parse(render_svg(order_gov, current="submitted"))
    current = [el for el in root.iter() if "current" in classes(el)]
    assert [el.get("data-state") for el in current] == ["submitted"]
    assert not [el for el in parse(render_svg(order_gov)).iter() if "current" in classes(el)]


def test_unknown_current_state_highlights_nothing(order_gov: Governor) -> None:
    root = parse(render_svg(order_gov, current="no_such_state"))
    assert not [el for el in root.iter() if "current" in classes(el)]


def test_edges_aggregate_per_pair_and_have_stable_ids(order_gov: Governor) -> None:
    ids = by_id(parse(render_svg(order_gov)))
    for a, b in [
        ("start", "draft"),
        ("draft", "submitted"),
        ("submitted", "approved"),
        ("submitted", "rejected"),
        ("rejected", "draft"),
        ("approved", "submitted"),
        ("submitted", "submitted"),
        ("any", "closed"),
        ("any", "any"),
    ]:
        el = ids[f"gov-orders-edge-{a}-{b}"]
        assert "edge" in classes(el)
        assert el.get("data-from") == a
        assert el.get("data-to") == b
        assert el.find(f"{SVG}title") is not None
        assert f"gov-orders-edge-{a}-{b}-label" in ids
    edge_ids = [i for i in ids if re.fullmatch(r"gov-orders-edge-.*(?<!-label)", i)]
    assert len(edge_ids) == 9


def test_start_dot_and_any_state_pseudo_node(order_gov: Governor) -> None:
    ids = by_id(parse(render_svg(order_gov)))
    start = ids["gov-orders-start"]
    assert start.find(f"{SVG}circle") is not None
    anynode = ids["gov-orders-any"]
    assert "any" in classes(anynode)
    assert "any state" in "".join(anynode.itertext())
    # ANY rows are drawn once from the pseudo-node, not from every non-terminal state
    assert "gov-orders-edge-draft-closed" not in ids
    assert "gov-orders-edge-submitted-closed" not in ids
    assert "any" in classes(ids["gov-orders-edge-any-closed"])
    lay = layout(order_gov)
    assert lay.edge(diagrams.ANY_NODE, "closed") is not None


def test_no_any_node_or_start_without_such_rows() -> None:
    g = gov("plain", [st("a"), st("b")], [row("P1", "a", "go", "b")])
    ids = by_id(parse(render_svg(g)))
    assert "gov-plain-any" not in ids
    assert "gov-plain-start" not in ids
    assert "gov-plain-edge-a-b" in ids


def test_same_and_field_targets() -> None:
    g = gov(
        "catalog",
        [st("draft"), st("published"), st("featured"), st("paused")],
        [
            row("C1", (), "create", "draft"),
            row("C2", "draft", "publish", "published"),
            row("C3", "published", "feature", "featured"),
            row("C4", ("published", "featured"), "pause", "paused"),
            row("C5", "paused", "resume", "@return_state", dst_choices=("published", "featured")),
            row("C6", ("draft", "published"), "edit", SAME),
        ],
    )
    ids = by_id(parse(render_svg(g)))
    for a, b in [
        ("paused", "published"),
        ("paused", "featured"),
        ("draft", "draft"),
        ("published", "published"),
        ("published", "paused"),
        ("featured", "paused"),
    ]:
        assert f"gov-catalog-edge-{a}-{b}" in ids, (a, b)
    loop = ids["gov-catalog-edge-draft-draft"]
    assert "loop" in classes(loop)


def test_event_labels_aggregate_and_shorten(order_gov: Governor) -> None:
    many = tuple(f"event_number_{i}" for i in range(8))
    g = gov("busy", [st("a"), st("b")], [row("B1", "a", many, "b"), row("B2", "a", "extra_event", "b")])
    ids = by_id(parse(render_svg(g)))
    label = "".join(ids["gov-busy-edge-a-b-label"].itertext())
    assert "…" in label
    tooltip = ids["gov-busy-edge-a-b"].find(f"{SVG}title")
    assert tooltip is not None
    assert "event_number_7" in (tooltip.text or "")  # the full list stays in the tooltip
    assert "extra_event" in (tooltip.text or "")
    assert "B1" in (tooltip.text or "")
    assert layout(g).edge("a", "b").events == (*many, "extra_event")  # type: ignore[union-attr]


# --- highlights --------------------------------------------------------------------------------------


def test_recent_path_edges_and_states_are_marked(order_gov: Governor) -> None:
    recent = [(None, "draft"), ("draft", "submitted"), ("submitted", "rejected")]
    root = parse(render_svg(order_gov, current="rejected", recent=recent))
    ids = by_id(root)
    for i, (a, b) in enumerate([("start", "draft"), ("draft", "submitted"), ("submitted", "rejected")], 1):
        el = ids[f"gov-orders-edge-{a}-{b}"]
        assert "recent" in classes(el)
        assert el.get("data-order") == str(i)
        assert "recent" in classes(ids[f"gov-orders-edge-{a}-{b}-label"])
    assert "latest" in classes(ids["gov-orders-edge-submitted-rejected"])
    recent_edges = {el.get("id") for el in root.iter() if {"edge", "recent"} <= classes(el)}
    assert recent_edges == {
        "gov-orders-edge-start-draft",
        "gov-orders-edge-draft-submitted",
        "gov-orders-edge-submitted-rejected",
    }
    recent_states = {el.get("data-state") for el in root.iter() if {"state", "recent"} <= classes(el)}
    assert recent_states == {"draft", "submitted", "rejected"}
    assert "current" in classes(ids["gov-orders-state-rejected"])


def test_recent_transition_through_an_any_row_marks_the_any_edge(order_gov: Governor) -> None:
    ids = by_id(parse(render_svg(order_gov, recent=[("approved", "closed"), ("draft", "draft")])))
    assert "recent" in classes(ids["gov-orders-edge-any-closed"])
    assert "recent" in classes(ids["gov-orders-edge-any-any"])  # hold/release keep the state


def test_recent_with_unknown_pairs_is_ignored(order_gov: Governor) -> None:
    svg = render_svg(order_gov, recent=[("nowhere", "draft"), ("closed", "draft")])
    root = parse(svg)
    assert not [el for el in root.iter() if {"edge", "recent"} <= classes(el)]


def test_recent_accepts_lists(order_gov: Governor) -> None:
    as_lists = render_svg(order_gov, recent=[[None, "draft"], ["draft", "submitted"]])  # type: ignore[list-item]
    as_tuples = render_svg(order_gov, recent=((None, "draft"), ("draft", "submitted")))
    assert as_lists == as_tuples


# --- escaping ----------------------------------------------------------------------------------------


def test_names_with_markup_are_escaped() -> None:
    g = gov(
        'we<ird"&',
        [st("a<b"), st("c&\"d'"), st("e>f", terminal=True)],
        [
            row("X1", (), "<create>", "a<b"),
            row("X2", "a<b", "go&<stop>", "c&\"d'"),
            row("X3", "c&\"d'", "]]>", "e>f"),
            row("X4", "a<b", "loop<", SAME),
        ],
        title="<script>alert(1)</script>",
    )
    svg = render_svg(g, current="a<b", recent=[(None, "a<b"), ("a<b", "c&\"d'")])
    root = parse(svg)
    assert "<script>" not in svg
    states = {el.get("data-state") for el in root.iter() if "state" in classes(el)}
    assert states == {"a<b", "c&\"d'", "e>f"}
    text = "".join(root.itertext())
    assert "go&<stop>" in text
    assert "]]>" in text
    assert "<script>alert(1)</script>" in text  # as text, in the <title>
    ids = by_id(root)
    assert 'gov-we<ird"&-state-a<b' in ids
    assert "current" in classes(ids['gov-we<ird"&-state-a<b'])


# --- layout quality -----------------------------------------------------------------------------------

NUM = re.compile(r"-?\d+(?:\.\d+)?")


def _coords(root: ET.Element) -> list[tuple[float, float]]:
    pts: list[tuple[float, float]] = []
    for el in root.iter():
        tag = el.tag.removeprefix(SVG)
        if tag == "path":
            nums = [float(n) for n in NUM.findall(el.get("d", ""))]
            pts += list(zip(nums[::2], nums[1::2], strict=True))
        elif tag == "rect":
            x, y = float(el.get("x", "0")), float(el.get("y", "0"))
            pts += [(x, y), (x + float(el.get("width", "0")), y + float(el.get("height", "0")))]
        elif tag == "circle":
            cx, cy, r = (float(el.get(a, "0")) for a in ("cx", "cy", "r"))
            pts += [(cx - r, cy - r), (cx + r, cy + r)]
        elif tag == "text" and el.get("x") is not None:
            pts.append((float(el.get("x", "0")), float(el.get("y", "0"))))
    return pts


def _viewbox(root: ET.Element) -> tuple[float, float]:
    _, _, w, h = (float(v) for v in root.get("viewBox", "").split())
    return w, h


def test_coordinates_are_within_the_viewbox(order_gov: Governor) -> None:
    root = parse(render_svg(order_gov, current="draft"))
    w, h = _viewbox(root)
    pts = _coords(root)
    assert len(pts) > 30
    for x, y in pts:
        assert 0 <= x <= w
        assert 0 <= y <= h


def test_coordinates_have_at_most_one_decimal(order_gov: Governor) -> None:
    svg = render_svg(order_gov)
    assert not re.search(r"\d\.\d\d", svg)
    assert "-0," not in svg
    assert not re.search(r"\d[eE][-+]?\d", svg)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _boxes(g: Governor) -> list[tuple[str, tuple[float, float, float, float]]]:
    lay = layout(g)
    out = [
        (f"node {n.key!r}", (n.x - n.w / 2, n.y - n.h / 2, n.x + n.w / 2, n.y + n.h / 2)) for n in lay.nodes
    ]
    for e in lay.edges:
        if not e.label_lines:
            continue
        box = (
            e.label_x - e.label_w / 2,
            e.label_y - e.label_h / 2,
            e.label_x + e.label_w / 2,
            e.label_y + e.label_h / 2,
        )
        out.append((f"label {e.src!r}->{e.dst!r}", box))
    return out


def _ladder() -> Governor:
    """Billing-like: 11 states, a retry ladder, back edges, self-loops, ANY rows."""
    retry = ("retry_1", "retry_2", "retry_3")
    return gov(
        "ladder",
        [
            st("awaiting_invoice"),
            st("invoice_issued"),
            st("payment_pending"),
            st("payment_received", attention="unreconciled"),
            st("payment_failed", attention=True),
            st("retry_1"),
            st("retry_2"),
            st("retry_3", attention=True),
            st("collection_agency", attention=True),
            st("payment_disputed", attention=True),
            st("archived", terminal=True),
        ],
        [
            row("B01", (), "cycle_begin", "awaiting_invoice"),
            row("B02", "awaiting_invoice", "invoice_generation_time_reached", "invoice_issued"),
            row("B03", "invoice_issued", "invoice_delivered", "payment_pending"),
            row("B04", "payment_pending", "payment_received", "payment_received"),
            row("B05", "payment_pending", ("payment_declined", "payment_window_timeout"), "payment_failed"),
            row("B07", ("payment_pending", "payment_failed"), "dispute_opened", "payment_disputed"),
            row("B08", "payment_received", "accounting_reconciled", "archived"),
            row("B09", "payment_received", "chargeback_received", "payment_disputed"),
            row("B10", "payment_failed", ("retry_due", "retry_now"), "retry_1"),
            row("B12", retry, "payment_received", "payment_received"),
            row("B13", retry, "payment_declined", SAME),
            row("B14", "retry_1", "retry_window_elapsed", "retry_2"),
            row("B15", "retry_2", "retry_window_elapsed", "retry_3"),
            row("B16", "retry_3", "retry_window_elapsed", "collection_agency"),
            row("B17", "retry_3", "restart_ladder", "payment_failed"),
            row("B18", "collection_agency", ("payment_recovered", "settlement_agreed"), "archived"),
            row("B21", "payment_disputed", "dispute_resolved", "archived"),
            row("B22", ("payment_received", "archived"), "issue_refund", SAME),
            row("B23", (ANY,), ("dunning_hold", "dunning_release"), SAME),
            row("B24", (ANY,), "write_off", "archived"),
        ],
    )


@pytest.mark.parametrize("make", [_ladder, None], ids=["ladder", "orders"])
def test_nodes_and_labels_never_overlap(make: object, order_gov: Governor) -> None:
    g = _ladder() if make else order_gov
    boxes = _boxes(g)
    for i, (na, a) in enumerate(boxes):
        for nb, b in boxes[i + 1 :]:
            assert not _overlap(a, b), f"{na} overlaps {nb}"
    root = parse(render_svg(g))
    w, h = _viewbox(root)
    for x, y in _coords(root):
        assert 0 <= x <= w
        assert 0 <= y <= h


def test_cycles_are_drawn_with_back_edges(order_gov: Governor) -> None:
    lay = layout(order_gov)
    pairs = {(e.src, e.dst): e for e in lay.edges}
    # one edge of each cycle is laid out reversed (it points back up)
    assert pairs[("approved", "submitted")].back != pairs[("submitted", "approved")].back
    assert any(
        pairs[p].back for p in [("draft", "submitted"), ("submitted", "rejected"), ("rejected", "draft")]
    )
    assert pairs[("submitted", "submitted")].kind == "loop"
    # the start dot is above the first state
    assert lay.node(diagrams.START_NODE).y < lay.node("draft").y


def test_only_cycles_and_loops() -> None:
    g = gov(
        "ring",
        [st("a"), st("b"), st("c")],
        [
            row("R1", "a", "next", "b"),
            row("R2", "b", "next", "c"),
            row("R3", "c", "next", "a"),
            row("R4", "a", "x", SAME),
        ],
    )
    root = parse(render_svg(g, current="c", recent=[("b", "c"), ("c", "a")]))
    ids = by_id(root)
    assert {"gov-ring-edge-a-b", "gov-ring-edge-b-c", "gov-ring-edge-c-a", "gov-ring-edge-a-a"} <= set(ids)
    assert "recent" in classes(ids["gov-ring-edge-c-a"])


def test_disconnected_components_are_placed_side_by_side() -> None:
    g = gov(
        "split",
        [st("a"), st("b"), st("c"), st("d"), st("lonely")],
        [row("S1", "a", "go", "b"), row("S2", "c", "go", "d"), row("S3", "d", "back", "c")],
    )
    lay = layout(g)
    boxes = _boxes(g)
    for i, (na, a) in enumerate(boxes):
        for nb, b in boxes[i + 1 :]:
            assert not _overlap(a, b), f"{na} overlaps {nb}"
    assert {n.key for n in lay.nodes} == {"a", "b", "c", "d", "lonely"}
    xs = {n.key: n.x for n in lay.nodes}
    assert xs["a"] < xs["c"] < xs["lonely"]  # components in definition order, left to right
    root = parse(render_svg(g))
    w, h = _viewbox(root)
    assert all(0 <= x <= w and 0 <= y <= h for x, y in _coords(root))


def _fan_gov() -> Governor:
    """Four states leave for ``archived`` on the same event; three jump back to ``new``."""
    return gov(
        "fan",
        [st("new"), st("open"), st("busy"), st("late"), st("archived", terminal=True)],
        [
            row("F1", (), "create", "new"),
            row("F2", "new", "start", "open"),
            row("F3", "open", "work", "busy"),
            row("F4", "busy", "slip", "late"),
            row("F5", ("new", "open", "busy", "late"), "archive", "archived"),
            row("F6", ("open", "busy", "late"), "reset", "new"),
        ],
    )


def test_fan_in_rows_are_bundled_at_a_junction() -> None:
    g = _fan_gov()
    lay = layout(g)
    merges = [e for e in lay.edges if e.kind == "merge"]
    assert sorted((e.dst, e.events, e.back) for e in merges) == [
        ("archived", ("archive",), False),
        ("new", ("reset",), True),
    ]
    for e in merges:
        assert e.junction is not None
        assert e.arrow
        assert e.label_lines
    archive = next(e for e in merges if e.dst == "archived")
    assert archive.pairs == (
        ("new", "archived"),
        ("open", "archived"),
        ("busy", "archived"),
        ("late", "archived"),
    )
    branch = lay.edge("busy", "archived")
    assert branch is not None
    assert not branch.arrow
    assert not branch.label_lines
    ids = by_id(parse(render_svg(g)))
    for s in ("new", "open", "busy", "late"):
        el = ids[f"gov-fan-edge-{s}-archived"]
        assert {"edge", "branch"} <= classes(el)
        assert el.get("data-from") == s
    tail = ids[f"gov-fan-edge-{archive.ident}"]
    assert {"edge", "merge"} <= classes(tail)
    assert tail.find(f"{SVG}circle") is not None
    assert f"gov-fan-edge-{archive.ident}-label" in ids
    assert "gov-fan-edge-open-archived-label" not in ids


def test_recent_fan_in_marks_its_branch_and_the_shared_tail() -> None:
    g = _fan_gov()
    root = parse(render_svg(g, current="archived", recent=[("busy", "archived")]))
    ids = by_id(root)
    archive = next(e for e in layout(g).edges if e.kind == "merge" and e.dst == "archived")
    assert "recent" in classes(ids["gov-fan-edge-busy-archived"])
    assert "recent" in classes(ids[f"gov-fan-edge-{archive.ident}"])
    assert "recent" in classes(ids[f"gov-fan-edge-{archive.ident}-label"])
    assert "recent" not in classes(ids["gov-fan-edge-open-archived"])
    w, h = _viewbox(root)
    assert all(0 <= x <= w and 0 <= y <= h for x, y in _coords(root))
    boxes = _boxes(g)
    for i, (na, a) in enumerate(boxes):
        for nb, b in boxes[i + 1 :]:
            assert not _overlap(a, b), f"{na} overlaps {nb}"


def test_single_state_governor() -> None:
    g = gov("one", [st("only", terminal=True)], [])
    root = parse(render_svg(g, current="only"))
    assert "current" in classes(by_id(root)["gov-one-state-only"])


# --- determinism, caching, performance -----------------------------------------------------------------


def test_embedded_diagram_is_the_standalone_one_without_font_and_stylesheet(order_gov: Governor) -> None:
    recent = [(None, "draft"), ("draft", "submitted")]
    alone = render_svg(order_gov, "submitted", recent)
    embedded = render_svg(order_gov, "submitted", recent, embedded=True)
    root = parse(embedded)
    assert root.find(f"{SVG}style") is None and root.get("font-family") is None
    assert root.find(f"{SVG}title") is not None
    css = diagrams.diagram_css()
    assert f"<style>{css}</style>" in alone
    stripped = alone.replace(f"<style>{css}</style>", "").replace(
        f" font-family={diagrams._q(diagrams.FONT_FAMILY)}", ""
    )
    assert stripped == embedded
    # Text is centred by the stylesheet, not by two attributes on every <text>.
    assert "text-anchor:middle" in css and "dominant-baseline:central" in css
    assert "text-anchor=" not in alone and "dominant-baseline=" not in alone
    assert "system-ui" in css


def test_render_is_deterministic_and_cached(order_gov: Governor) -> None:
    a = render_svg(order_gov, "draft", [(None, "draft")])
    b = render_svg(order_gov, "draft", [(None, "draft")])
    assert a == b
    clear_caches()
    c = render_svg(order_gov, "draft", [(None, "draft")])
    assert a == c
    assert layout(order_gov) is layout(order_gov)


def test_equal_definitions_render_identically(order_gov: Governor) -> None:
    copy = gov(order_gov.name, list(order_gov.states), list(order_gov.transitions), title=order_gov.title)
    assert copy is not order_gov
    assert definition_version(copy) == definition_version(order_gov)
    assert render_svg(copy, "approved") == render_svg(order_gov, "approved")


def test_definition_version_changes_with_the_definition(order_gov: Governor) -> None:
    v1 = definition_version(order_gov)
    assert re.fullmatch(r"[0-9a-f]{16}", v1)
    changed = gov(
        order_gov.name, list(order_gov.states), [*order_gov.transitions, row("O10", "draft", "x", "closed")]
    )
    assert definition_version(changed) != v1
    assert "gov-orders-edge-draft-closed" in render_svg(changed)
    assert "gov-orders-edge-draft-closed" not in render_svg(order_gov)
    root = parse(render_svg(order_gov))
    assert root.get("data-version") == v1


def test_deterministic_across_processes() -> None:
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]);"
        "import test_diagrams as t; from webapp.diagrams import render_svg;"
        "print(render_svg(t._ladder(), 'retry_2', [('retry_1', 'retry_2')]))"
    )
    outs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run(
            [sys.executable, "-c", script, str(ROOT), str(Path(__file__).parent)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        outs.add(res.stdout)
    assert len(outs) == 1
    assert render_svg(_ladder(), "retry_2", [("retry_1", "retry_2")]) + "\n" in outs


def test_render_on_a_cached_layout_is_fast() -> None:
    g = _ladder()
    render_svg(g)  # computes and caches the layout
    names = g.state_names
    runs = 40
    start = time.perf_counter()
    for i in range(runs):  # every call misses the render cache: only string assembly
        render_svg(
            g, names[i % len(names)], [(names[i % 3], names[(i + 1) % 3]), (None, names[0]), (str(i), "x")]
        )
    per_call = (time.perf_counter() - start) / runs
    assert per_call < 0.005


def test_module_has_no_web_framework_imports() -> None:
    tree = ast.parse((ROOT / "webapp" / "diagrams.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"flask", "sqlalchemy", "redis", "rq"}
    assert "grandalf" in imported


def _real_governors() -> dict[str, Governor]:
    from governors.registry import GOVERNORS

    return dict(GOVERNORS)


@pytest.mark.parametrize("name", sorted(_real_governors()))
def test_real_governors_render_cleanly(name: str) -> None:
    g = _real_governors()[name]
    first = g.initial_states[0] if g.initial_states else g.state_names[0]
    root = parse(render_svg(g, current=first, recent=[(None, first)]))
    ids = by_id(root)
    for state in g.state_names:
        assert f"gov-{name}-state-{state}" in ids
    w, h = _viewbox(root)
    assert all(0 <= x <= w and 0 <= y <= h for x, y in _coords(root))
    boxes = _boxes(g)
    for i, (na, a) in enumerate(boxes):
        for nb, b in boxes[i + 1 :]:
            assert not _overlap(a, b), f"{na} overlaps {nb}"
