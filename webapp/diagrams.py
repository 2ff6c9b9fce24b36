"""SVG state diagrams for governor definitions (pure presentation: no Flask, no database).

A governor definition (`governors.spec.Governor`) is turned into a layered drawing:

* one node per state (rounded rectangle; terminal states double-bordered, attention states badged
  with "!" or, when a guard decides it, "?"),
* a filled start dot for the creation rows (``src=()``),
* a dashed "any state" pseudo-node for rows whose source is ``ANY`` (drawing them from every
  non-terminal state would bury the diagram under identical edges),
* one edge per (source, target) pair, aggregated over rows and labelled with the event names;
  ``dst=SAME`` is a self-loop on each source and ``dst="@field"`` fans out to ``dst_choices``.
  When FANIN_MIN or more states go to the same target on the same events (rows listing many
  sources), the edges are bundled: an unlabelled branch per source joins at a junction dot,
  followed by one labelled arrow.

The layout is computed by grandalf's Sugiyama (layered, "dot"-like) algorithm. Edge labels take part
in the layout as vertices halfway along their edge, so they never overlap a state or each other.
Cycles are broken with grandalf's Tarjan pass (`get_scs_with_feedback`): back edges are laid out
reversed and drawn pointing back up. Disconnected components are laid out separately, side by side
(a small one, such as an "any state" node that only has a self-loop, goes into a free top corner).

Caching: `definition_version(gov)` is a content hash of what the drawing depends on (states and
transitions). `layout()` is cached per version, and `render_svg()` per (governor, version, current
state, recent path) in a bounded LRU; a render-cache miss on a known layout is only string assembly
of pre-rendered fragments (well under a millisecond). Output is deterministic: coordinates are
rounded to one decimal and everything is ordered by the definition.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from grandalf.graphs import Edge, Vertex, graph_core
from grandalf.layouts import Layer, SugiyamaLayout

from governors.spec import ANY, SAME, Governor

__all__ = [
    "ANY_NODE",
    "START_NODE",
    "EdgeGeom",
    "Layout",
    "NodeGeom",
    "clear_caches",
    "definition_version",
    "diagram_css",
    "layout",
    "render_svg",
]

START_NODE = "\x00start"
"""Key of the start pseudo-node (creation rows). Not a valid state name."""

ANY_NODE = "\x00any"
"""Key of the "any non-terminal state" pseudo-node (rows with ``src=(ANY,)``)."""

# --- drawing constants (px) --------------------------------------------------------------------------

FONT_FAMILY = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
STATE_FONT = 12.0
LABEL_FONT = 10.0
STATE_H = 28.0
STATE_PAD_X = 12.0
STATE_MIN_W = 64.0
START_R = 6.0
ANY_H = 22.0
LABEL_LINE_H = 12.0
LABEL_PAD_X = 3.0
LABEL_PAD_Y = 1.0
LABEL_WRAP = 14
LABEL_MAX_LINES = 3
LABEL_MAX_CHARS = 18
LOOP_W = 22.0
LOOP_GAP = 4.0
ARROW_LEN = 7.0
ARROW_HALF = 3.5
XSPACE = 10.0
YSPACE = 12.0
MARGIN = 10.0
COMPONENT_GAP = 28.0
PORT_SPAN = 0.7
ORDERING_ROUNDS = 4.5
SLANT_WEIGHT = 0.25
FANIN_MIN = 3
BOLD = 1.08  # the current state is drawn in bold
JUNCTION_SIZE = 4.0

# Approximate advance widths (in em) for a sans-serif system UI font; only used to size boxes.
_NARROW = set("ijl.,:;|!'`")
_SEMI = set('frt()[]{}- /\\"')
_WIDE = set("mwMW@%")
_DIGITS = set("0123456789")


def _text_width(text: str, size: float) -> float:
    em = 0.0
    for ch in text:
        if ch in _NARROW:
            em += 0.27
        elif ch in _SEMI:
            em += 0.36
        elif ch in _WIDE:
            em += 0.86
        elif ch in _DIGITS:
            em += 0.58
        elif ch.isupper():
            em += 0.66
        elif ch == "…":
            em += 0.9
        else:
            em += 0.56
    return em * size


def _fmt(v: float) -> str:
    """Format a coordinate with at most one decimal, without float noise or ``-0``."""
    r = round(v, 1)
    if r == 0:
        return "0"
    s = f"{r:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _shorten(text: str, limit: int = LABEL_MAX_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- versioning ------------------------------------------------------------------------------------


def _canonical(gov: Governor) -> dict[str, Any]:
    return {
        "name": gov.name,
        "title": gov.title,
        "states": [[s.name, s.description, s.terminal, s.attention, s.attention_reason] for s in gov.states],
        "transitions": [
            [t.id, list(t.events), list(t.src), t.dst, list(t.dst_choices), t.title] for t in gov.transitions
        ],
    }


_VERSION_MEMO: dict[int, tuple[Governor, str]] = {}
_VERSION_MEMO_MAX = 64
_GOV_BY_VERSION: dict[str, Governor] = {}
_LOCK = threading.Lock()


def definition_version(gov: Governor) -> str:
    """A content hash of the definition's states and transitions (what the diagram depends on)."""
    memo = _VERSION_MEMO.get(id(gov))
    if memo is not None and memo[0] is gov:
        return memo[1]
    blob = json.dumps(_canonical(gov), sort_keys=True, separators=(",", ":"), default=str)
    version = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
    with _LOCK:
        if len(_VERSION_MEMO) >= _VERSION_MEMO_MAX:
            _VERSION_MEMO.pop(next(iter(_VERSION_MEMO)))
        _VERSION_MEMO[id(gov)] = (gov, version)  # the strong ref keeps id(gov) from being reused
        _GOV_BY_VERSION.setdefault(version, gov)
    return version


# --- geometry ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeGeom:
    """A drawn node. ``x``/``y`` is the centre of the shape; ``w``/``h`` its size."""

    key: str
    kind: str  # "state", "start" or "any"
    label: str
    x: float
    y: float
    w: float
    h: float
    terminal: bool = False
    attention: bool = False
    attention_conditional: bool = False
    tooltip: str = ""


@dataclass(frozen=True)
class EdgeGeom:
    """A drawn edge, aggregated over rows.

    ``src``/``dst`` are node keys (a state name, ``START_NODE`` or ``ANY_NODE``). ``pairs`` are the
    (source, target) transitions the element stands for: one, except for a ``merge`` tail, the
    shared end of a fan-in (a row leaving many states for the same target with the same events is
    drawn as one short unlabelled edge per source, joining at a ``junction``, then one labelled
    arrow; its ``src`` is ``""``). ``ident`` is the stable element id suffix.
    """

    src: str
    dst: str
    kind: str  # "normal", "start", "any", "loop", "merge"
    events: tuple[str, ...]
    rows: tuple[str, ...]
    path: str
    arrow: str  # "" for the members of a fan-in (they end at the junction)
    label_lines: tuple[str, ...]  # () when unlabelled
    label_x: float
    label_y: float
    label_w: float
    label_h: float
    back: bool = False
    pairs: tuple[tuple[str, str], ...] = ()
    ident: str = ""
    junction: tuple[float, float] | None = None


@dataclass(frozen=True)
class Layout:
    """Positions of every node and the routed edges of one governor definition."""

    governor: str
    title: str
    version: str
    width: float
    height: float
    nodes: tuple[NodeGeom, ...]
    edges: tuple[EdgeGeom, ...]

    def node(self, key: str) -> NodeGeom:
        for n in self.nodes:
            if n.key == key:
                return n
        raise KeyError(key)

    @property
    def positions(self) -> dict[str, tuple[float, float]]:
        """Centre of every node, by key (state name, START_NODE, ANY_NODE)."""
        return {n.key: (n.x, n.y) for n in self.nodes}

    def edge(self, src: str, dst: str) -> EdgeGeom | None:
        """The element drawn for the src -> dst transitions (for a fan-in member: its own branch)."""
        for e in self.edges:
            if e.src == src and e.dst == dst:
                return e
        return None


# --- graph extraction ----------------------------------------------------------------------------


@dataclass
class _EdgeAcc:
    events: list[str]
    rows: list[str]


def _collect_edges(gov: Governor) -> dict[tuple[str, str], _EdgeAcc]:
    names = set(gov.state_names)
    acc: dict[tuple[str, str], _EdgeAcc] = {}
    for t in gov.transitions:
        if not t.src:
            srcs = [START_NODE]
        elif ANY in t.src:
            srcs = [ANY_NODE]
        else:
            srcs = [s for s in dict.fromkeys(t.src) if s in names]
        for s in srcs:
            if t.dst == SAME:
                if s == START_NODE:
                    continue
                dsts = [s]
            elif t.dst_choices:
                dsts = [d for d in dict.fromkeys(t.dst_choices) if d in names]
            elif t.dst in names:
                dsts = [t.dst]
            else:
                dsts = []
            for d in dsts:
                a = acc.setdefault((s, d), _EdgeAcc([], []))
                for ev in t.events:
                    if ev not in a.events:
                        a.events.append(ev)
                if t.id not in a.rows:
                    a.rows.append(t.id)
    return acc


def _wrap_event(event: str) -> list[str]:
    """One event name as label lines: whole when short enough, else broken after underscores."""
    if len(event) <= LABEL_MAX_CHARS:
        return [event]
    lines: list[str] = []
    cur = ""
    parts = event.split("_")
    for i, part in enumerate(parts):
        piece = part + ("_" if i < len(parts) - 1 else "")
        if cur and len(cur) + len(piece) > LABEL_WRAP:
            lines.append(cur)
            cur = ""
        cur += piece
    lines.append(cur)
    return [_shorten(line) for line in lines]


def _label_lines(events: Sequence[str]) -> tuple[str, ...]:
    """Event names separated by commas, at most LABEL_MAX_LINES lines (then cut with "…")."""
    lines: list[str] = []
    for ev in events:
        pieces = _wrap_event(ev)
        if lines and len(pieces) == 1 and len(lines[-1]) + 2 + len(pieces[0]) <= LABEL_WRAP:
            lines[-1] += ", " + pieces[0]
            continue
        if lines:
            lines[-1] += ","
        lines += pieces
    if len(lines) > LABEL_MAX_LINES:
        lines = lines[:LABEL_MAX_LINES]
        lines[-1] = lines[-1].rstrip(",")[: LABEL_MAX_CHARS - 1] + "…"
    return tuple(lines)


def _label_size(lines: Sequence[str]) -> tuple[float, float]:
    w = max((_text_width(line, LABEL_FONT) for line in lines), default=0.0) + 2 * LABEL_PAD_X
    h = len(lines) * LABEL_LINE_H + 2 * LABEL_PAD_Y
    return w, h


class _View:
    """A grandalf vertex view (like grandalf's VertexViewer): size in, centre position out."""

    def __init__(self, w: float, h: float) -> None:
        self.w = w
        self.h = h
        self.xy: tuple[float, float] | None = None


def _vertex(key: str, w: float, h: float) -> Vertex:
    v = Vertex(key)
    v.view = _View(w, h)
    return v


# --- layout ------------------------------------------------------------------------------------


@dataclass
class _Item:
    """One drawn non-loop edge and its chain of layout vertices.

    ``upper``/``lower`` are the keys (node or junction) of its ends in layout (top-down) order.
    """

    kind: str
    src: str
    dst: str
    acc: _EdgeAcc
    lines: tuple[str, ...]
    label: Vertex | None
    back: bool
    dag_edges: tuple[Edge, ...]
    upper: str
    lower: str
    pairs: tuple[tuple[str, str], ...]
    ident: str
    arrow: bool = True
    junction: str | None = None


def _components(keys: Sequence[str], pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    parent = {k: k for k in keys}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb, key=keys.index)] = min(ra, rb, key=keys.index)
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(find(k), []).append(k)
    return sorted(groups.values(), key=lambda g: keys.index(g[0]))


def _feedback_pairs(keys: Sequence[str], pairs: Sequence[tuple[str, str]], root: str) -> set[tuple[str, str]]:
    """Edges to reverse to make one component acyclic (grandalf's Tarjan DFS marks them)."""
    vs = {k: Vertex(k) for k in keys}
    es = [Edge(vs[a], vs[b], data=(a, b)) for a, b in pairs]
    if not es:
        return set()
    g = graph_core([vs[k] for k in keys], es)
    g.get_scs_with_feedback([vs[root]])
    return {e.data for e in es if e.feedback}


class _Sugiyama(SugiyamaLayout):  # type: ignore[misc]
    """grandalf's Sugiyama layout, with a more careful last step of the Brandes & Köpf placement.

    grandalf computes the four extreme alignments (left/right, upper/lower) and gives each vertex the
    mean of the two medians of its four x coordinates. It skips the paper's step of first aligning
    the four layouts to the narrowest one, and the balanced median turns the ladders of these
    machines (retry_1 → retry_2 → retry_3, each with an edge to one common target) into staircases.
    Here the four alignments are aligned as in the paper, then a few of grandalf's combinations
    (balanced median, the two left ones, the two right ones) are scored by width plus total edge
    slant, and the best one is kept. Ranking, ordering and the alignments themselves are grandalf's.
    """

    dirvh: int

    def setxy(self) -> None:
        self._edge_inverter()
        self._detect_alignment_conflicts()
        inf = float("inf")
        for layer in self.layers:
            for v in layer:
                a = self.grx[v]
                a.root = a.align = a.sink = v
                a.shift = inf
                a.X = None
                a.x = [0.0] * 4
        saved = self.dirvh
        for dirvh in range(4):
            self.dirvh = dirvh
            self._coord_vertical_alignment()
            self._coord_horizontal_compact()
        self.dirvh = saved
        verts = [v for layer in self.layers for v in layer]
        lo = [min(self.grx[v].x[k] - v.view.w / 2 for v in verts) for k in range(4)]
        hi = [max(self.grx[v].x[k] + v.view.w / 2 for v in verts) for k in range(4)]
        best = min(range(4), key=lambda k: (hi[k] - lo[k], k))
        # dirvh 0 and 2 are left-aligned (dirh=+1), 1 and 3 right-aligned
        shift = [lo[best] - lo[k] if k in (0, 2) else hi[best] - hi[k] for k in range(4)]
        xs: dict[Any, list[float]] = {v: [self.grx[v].x[k] + shift[k] for k in range(4)] for v in verts}
        segments: list[tuple[Any, Any]] = []
        for e in self.g.E():
            chain = [e.v[0]]
            if e in self.ctrls:
                r0, r1 = self.grx[e.v[0]].rank, self.grx[e.v[1]].rank
                chain += [self.ctrls[e][r] for r in range(min(r0, r1) + 1, max(r0, r1))]
            chain.append(e.v[1])
            segments += itertools.pairwise(chain)

        def median(v: Any) -> float:
            s = sorted(xs[v])
            return (s[1] + s[2]) / 2.0

        candidates: list[Callable[[Any], float]] = [
            median,
            lambda v: (xs[v][0] + xs[v][2]) / 2.0,
            lambda v: (xs[v][1] + xs[v][3]) / 2.0,
        ]
        scored = []
        for i, pick in enumerate(candidates):
            xv = {v: pick(v) for v in verts}
            width = max(xv[v] + v.view.w / 2 for v in verts) - min(xv[v] - v.view.w / 2 for v in verts)
            slant = sum(
                abs(xv[a] - xv[b]) for a, b in segments if not (self.grx[a].dummy or self.grx[b].dummy)
            )
            scored.append((round(width + SLANT_WEIGHT * slant, 3), i, xv))
        xv = min(scored, key=lambda t: t[:2])[2]
        y = 0.0
        for layer in self.layers:
            dy = max(v.view.h / 2.0 for v in layer)
            for v in layer:
                v.view.xy = (xv[v], y + dy)
            y += 2 * dy + self.yspace
        self._edge_inverter()


def _sugiyama(
    vs: Sequence[Vertex], edges: Sequence[Edge], labels: Sequence[Vertex], pseudo: Sequence[Vertex]
) -> SugiyamaLayout:
    """Run grandalf's Sugiyama layout on one connected, acyclic component (edges already oriented).

    This is `SugiyamaLayout.init_all()` plus one step between ranking and dummy creation: edge
    labels move halfway along their edge, and the pseudo-nodes (start dot, "any state") move down
    next to their targets instead of sitting in layer 0 with long edges across the whole drawing.
    """
    g = graph_core(list(vs), list(edges)) if edges else graph_core(list(vs[:1]))
    sug = _Sugiyama(g)
    sug.xspace = XSPACE
    sug.yspace = YSPACE
    sug.dw, sug.dh = 4, 4  # dummy vertices of long edges stay thin
    sug.alt_e = []
    roots = [v for v in vs if not v.e_in()]
    sug.rank_all(roots)
    grx = sug.grx
    moved: set[Vertex] = set()
    for v in pseudo:
        children = [e.v[1] for e in v.e_out()]
        if not children:
            continue
        for lab in children:
            grx[lab].rank = min(grx[e.v[1]].rank for e in lab.e_out()) - 1
            moved.add(lab)
        grx[v].rank = min(grx[lab].rank for lab in children) - 1
    for lab in labels:
        if lab not in moved:
            upper = lab.e_in()[0].v[0]
            lower = lab.e_out()[0].v[1]
            grx[lab].rank = (grx[upper].rank + grx[lower].rank) // 2
    order = [v for layer in sug.layers for v in layer]
    ranks = sorted({grx[v].rank for v in order})
    renumber = {r: i for i, r in enumerate(ranks)}
    sug.layers = [Layer([]) for _ in ranks]
    for v in order:
        grx[v].rank = renumber[grx[v].rank]
        sug.layers[grx[v].rank].append(v)
    for e in g.E():
        sug.setdummies(e)
    for layer in sug.layers:
        layer.setup(sug)
    sug.initdone = True
    sug.draw(ORDERING_ROUNDS)
    return sug


Point = tuple[float, float]
PathCmd = tuple[str, tuple[Point, ...]]
Rect = tuple[float, float, float, float]


@dataclass
class _RawEdge:
    """An edge in component coordinates, before translation and formatting."""

    src: str
    dst: str
    kind: str
    acc: _EdgeAcc
    lines: tuple[str, ...]
    path: list[PathCmd]
    tip: Point | None  # arrow tip, None without arrow
    direction: Point
    label: Rect  # centre x, centre y, w, h (w = h = 0 when unlabelled)
    back: bool = False
    pairs: tuple[tuple[str, str], ...] = ()
    ident: str = ""
    junction: Point | None = None


@dataclass
class _Component:
    nodes: dict[str, Rect]  # drawn centre x, centre y, w, h
    edges: list[_RawEdge]
    obstacles: list[Rect]  # x0, y0, x1, y1
    width: float
    height: float


@dataclass
class _Shapes:
    size: dict[str, tuple[float, float]]  # the drawn shape
    extra: dict[str, float]  # room on the right for a self-loop and its label
    loops: dict[str, tuple[_EdgeAcc, tuple[str, ...]]]


def _compute_layout(gov: Governor, version: str) -> Layout:
    acc = _collect_edges(gov)
    has_start = any(s == START_NODE for s, _ in acc)
    has_any = any(s == ANY_NODE for s, _ in acc)
    keys = [*([START_NODE] if has_start else []), *gov.state_names, *([ANY_NODE] if has_any else [])]
    index = {k: i for i, k in enumerate(keys)}
    ordered = sorted(acc.items(), key=lambda kv: (index[kv[0][0]], index[kv[0][1]]))
    links = [(k, a) for k, a in ordered if k[0] != k[1]]

    shapes = _Shapes({}, dict.fromkeys(keys, 0.0), {})
    for k in keys:
        if k == START_NODE:
            shapes.size[k] = (2 * START_R, 2 * START_R)
        elif k == ANY_NODE:
            shapes.size[k] = (_text_width("any state", LABEL_FONT + 0.5) + 18, ANY_H)
        else:
            shapes.size[k] = (max(STATE_MIN_W, _text_width(k, STATE_FONT) * BOLD + 2 * STATE_PAD_X), STATE_H)
    for (s, d), a in ordered:
        if s == d:
            lines = _label_lines(a.events)
            shapes.loops[s] = (a, lines)
            shapes.extra[s] = LOOP_W + LOOP_GAP + _label_size(lines)[0]

    comps = [
        _layout_component(comp, [(k, a) for k, a in links if k[0] in comp], shapes)
        for comp in _components(keys, (k for k, _ in links))
    ]

    # place components side by side; a small one (typically the "any state" node with only a
    # self-loop) goes into a free top corner of what is already placed when it fits there
    obstacles: list[Rect] = []
    offsets: list[Point] = []
    right = bottom = 0.0
    for c in comps:
        spot: Point = (right + COMPONENT_GAP, 0.0) if offsets else (0.0, 0.0)
        if offsets:
            for cand in ((right - c.width, 0.0), (0.0, 0.0)):
                if cand[0] >= 0 and c.height <= bottom and _free(cand, c, obstacles):
                    spot = cand
                    break
        offsets.append(spot)
        obstacles += [
            (x0 + spot[0], y0 + spot[1], x1 + spot[0], y1 + spot[1]) for x0, y0, x1, y1 in c.obstacles
        ]
        right = max(right, spot[0] + c.width)
        bottom = max(bottom, spot[1] + c.height)

    node_geoms: dict[str, NodeGeom] = {}
    edge_geoms: list[EdgeGeom] = []
    for c, (ox, oy) in zip(comps, offsets, strict=True):
        dx, dy = ox + MARGIN, oy + MARGIN
        for k, (x, y, w, h) in c.nodes.items():
            node_geoms[k] = _node_geom(gov, k, x + dx, y + dy, w, h)
        for e in c.edges:
            path = "".join(
                cmd + " ".join(f"{_fmt(px + dx)},{_fmt(py + dy)}" for px, py in pts) for cmd, pts in e.path
            )
            lx, ly, lw, lh = e.label
            arrow = "" if e.tip is None else _arrow((e.tip[0] + dx, e.tip[1] + dy), e.direction)
            junction = (
                None if e.junction is None else (round(e.junction[0] + dx, 1), round(e.junction[1] + dy, 1))
            )
            edge_geoms.append(
                EdgeGeom(
                    e.src,
                    e.dst,
                    e.kind,
                    tuple(e.acc.events),
                    tuple(e.acc.rows),
                    path,
                    arrow,
                    e.lines,
                    round(lx + dx, 1) if lw else 0.0,
                    round(ly + dy, 1) if lw else 0.0,
                    round(lw, 1),
                    round(lh, 1),
                    e.back,
                    e.pairs,
                    e.ident,
                    junction,
                )
            )
    nodes = tuple(node_geoms[k] for k in keys)
    last = len(keys)
    edges = tuple(sorted(edge_geoms, key=lambda e: (index.get(e.src, last), index[e.dst], e.ident)))
    width = round(right + 2 * MARGIN, 1)
    height = round(bottom + 2 * MARGIN, 1)
    return Layout(gov.name, gov.title, version, width, height, nodes, edges)


def _free(spot: Point, comp: _Component, obstacles: Sequence[Rect]) -> bool:
    gap = COMPONENT_GAP / 2
    x0, y0 = spot[0] - gap, spot[1] - gap
    x1, y1 = spot[0] + comp.width + gap, spot[1] + comp.height + gap
    return not any(a0 < x1 and x0 < a1 and b0 < y1 and y0 < b1 for a0, b0, a1, b1 in obstacles)


def _layout_component(
    comp: Sequence[str], links: Sequence[tuple[tuple[str, str], _EdgeAcc]], shapes: _Shapes
) -> _Component:
    """Lay out one connected component with grandalf; coordinates start at (0, 0)."""
    back = _feedback_pairs(comp, [k for k, _ in links], comp[0])
    vertices: dict[str, Vertex] = {}
    for k in comp:
        w, h = shapes.size[k]
        loop = shapes.loops.get(k)
        loop_h = _label_size(loop[1])[1] + 4 if loop else 0.0
        vertices[k] = _vertex(k, w + shapes.extra[k], max(h, loop_h))

    # fan-ins: the same events from FANIN_MIN or more states to one target are drawn as one
    # unlabelled branch per source, joining at a junction, then one labelled arrow. Forward and
    # back edges are bundled separately (a back bundle is laid out target -> label -> junction ->
    # sources and drawn reversed, like any back edge).
    fan: dict[tuple[str, tuple[str, ...], bool], list[tuple[str, _EdgeAcc]]] = {}
    for (s, d), a in links:
        if s not in (START_NODE, ANY_NODE):
            fan.setdefault((d, tuple(a.events), (s, d) in back), []).append((s, a))
    fan = {k: v for k, v in fan.items() if len(v) >= FANIN_MIN}
    member = {(s, key[0]) for key, srcs in fan.items() for s, _ in srcs}

    items: list[_Item] = []
    dag_edges: list[Edge] = []
    for (s, d), a in links:
        if (s, d) in member:
            continue
        lines = _label_lines(a.events)
        lab = _vertex(f"{s}->{d}", *_label_size(lines))
        is_back = (s, d) in back
        upper, lower = (d, s) if is_back else (s, d)
        link = (Edge(vertices[upper], lab), Edge(lab, vertices[lower]))
        dag_edges += link
        kind = "start" if s == START_NODE else "any" if s == ANY_NODE else "normal"
        ident = f"{_slug(s)}-{_slug(d)}"
        items.append(_Item(kind, s, d, a, lines, lab, is_back, link, upper, lower, ((s, d),), ident))
    per_target: dict[str, int] = {}
    for (d, events, is_back), srcs in fan.items():
        n = per_target[d] = per_target.get(d, 0) + 1
        jkey = f"\x02{d}\x02{n}"
        vertices[jkey] = _vertex(jkey, JUNCTION_SIZE, JUNCTION_SIZE)
        for s, a in srcs:
            upper, lower = (jkey, s) if is_back else (s, jkey)
            branch = (Edge(vertices[upper], vertices[lower]),)
            dag_edges += branch
            ident = f"{_slug(s)}-{_slug(d)}"
            items.append(
                _Item(
                    "normal", s, d, a, (), None, is_back, branch, upper, lower, ((s, d),), ident, arrow=False
                )
            )
        acc = _EdgeAcc(list(events), sorted({r for _, a in srcs for r in a.rows}, key=_row_order(srcs)))
        lines = _label_lines(events)
        lab = _vertex(f"{jkey}->{d}", *_label_size(lines))
        upper, lower = (d, jkey) if is_back else (jkey, d)
        link = (Edge(vertices[upper], lab), Edge(lab, vertices[lower]))
        dag_edges += link
        pairs = tuple((s, d) for s, _ in srcs)
        ident = f"merge-{_slug(d)}-{n}"
        items.append(
            _Item("merge", "", d, acc, lines, lab, is_back, link, upper, lower, pairs, ident, junction=jkey)
        )

    labels = [it.label for it in items if it.label is not None]
    sug = _sugiyama(
        list(vertices.values()) + labels,
        dag_edges,
        labels,
        [vertices[k] for k in (START_NODE, ANY_NODE) if k in vertices],
    )
    grx = sug.grx

    # each edge's chain of layout vertices, top to bottom: end, dummies, label, dummies, end
    chains: list[list[Any]] = []
    for it in items:
        chain: list[Any] = []
        for e in it.dag_edges:
            u, w = e.v
            chain.append(u)
            if e in sug.ctrls:
                chain += [sug.ctrls[e][r] for r in range(grx[u].rank + 1, grx[w].rank)]
        chain.append(it.dag_edges[-1].v[1])
        chains.append(chain)

    # a node widened for its self-loop is drawn at the left of its layout box
    node_of = {v: k for k, v in vertices.items() if k in shapes.extra}

    def anchor(v: Any) -> float:
        x: float = v.view.xy[0]
        return x - shapes.extra[node_of[v]] / 2 if v in node_of else x

    # centre each label between its chain neighbours (where the edge actually runs), without
    # crossing its layer neighbours: grandalf centred it on the layout boxes
    around = {}
    for it, chain in zip(items, chains, strict=True):
        if it.label is not None:
            i = chain.index(it.label)
            around[it.label] = (chain[i - 1], chain[i + 1])
    inf = float("inf")
    for layer in sug.layers:
        for j, v in enumerate(layer):
            if v not in around:
                continue
            u, w = around[v]
            want = (anchor(u) + anchor(w)) / 2
            lo, hi = -inf, inf
            if j > 0:
                left = layer[j - 1]
                lo = left.view.xy[0] + left.view.w / 2 + XSPACE + v.view.w / 2
            if j + 1 < len(layer):
                nxt = layer[j + 1]
                hi = nxt.view.xy[0] - nxt.view.w / 2 - XSPACE - v.view.w / 2
            if lo <= hi:
                v.view.xy = (min(max(want, lo), hi), v.view.xy[1])

    nodes: dict[str, Rect] = {}
    for k in comp:
        v = vertices[k]
        w, h = shapes.size[k]
        nodes[k] = (anchor(v), v.view.xy[1], w, h)
    junctions: dict[str, Point] = {k: v.view.xy for k, v in vertices.items() if k not in shapes.extra}

    # ports: the edges leaving a node's bottom (entering its top) are spread by where they go;
    # edges meet at a junction's centre
    bottom: dict[str, list[tuple[float, int]]] = {}
    top: dict[str, list[tuple[float, int]]] = {}
    for i, (it, chain) in enumerate(zip(items, chains, strict=True)):
        bottom.setdefault(it.upper, []).append((anchor(chain[1]), i))
        top.setdefault(it.lower, []).append((anchor(chain[-2]), i))
    ports: dict[tuple[int, int], Point] = {}
    for side, table in ((1, bottom), (-1, top)):
        for key, entries in table.items():
            if key in junctions:
                for _, i in entries:
                    ports[(side, i)] = junctions[key]
                continue
            x, y, w, h = nodes[key]
            entries.sort()
            span = 0.0 if key == START_NODE else w * PORT_SPAN
            for j, (_, i) in enumerate(entries):
                ports[(side, i)] = (x - span / 2 + span * (j + 0.5) / len(entries), y + side * h / 2)

    edges: list[_RawEdge] = []
    for i, (it, chain) in enumerate(zip(items, chains, strict=True)):
        pts = [ports[(1, i)], *(v.view.xy for v in chain[1:-1]), ports[(-1, i)]]
        if it.back:  # laid out reversed: draw from the real source to the real target
            pts.reverse()
        tip: Point | None = None
        down = 1.0 if pts[-1][1] > pts[-2][1] else -1.0
        if it.arrow:
            tip = pts[-1]
            pts[-1] = (tip[0], tip[1] - down * ARROW_LEN)
        label = (0.0, 0.0, 0.0, 0.0)
        if it.label is not None:
            lx, ly = it.label.view.xy
            label = (lx, ly, it.label.view.w, it.label.view.h)
        edges.append(
            _RawEdge(
                it.src,
                it.dst,
                it.kind,
                it.acc,
                it.lines,
                _smooth(pts),
                tip,
                (0.0, down),
                label,
                it.back,
                it.pairs,
                it.ident,
                None if it.junction is None else junctions[it.junction],
            )
        )
    for k in comp:
        if k in shapes.loops:
            edges.append(_loop(k, nodes[k], *shapes.loops[k]))

    # bounding box (layout boxes, labels, every path point), then shift to (0, 0)
    rects: list[Rect] = [_box(v.view) for v in vertices.values()]
    rects += [_box(lab.view) for lab in labels]
    for e in edges:
        pts = [p for _, ps in e.path for p in ps]
        rects += [
            (min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1]))
            for a, b in itertools.pairwise(pts)
        ]
        lx, ly, lw, lh = e.label
        if lw:
            rects.append((lx - lw / 2, ly - lh / 2, lx + lw / 2, ly + lh / 2))
    min_x = min(r[0] for r in rects)
    min_y = min(r[1] for r in rects)
    max_x = max(r[2] for r in rects)
    max_y = max(r[3] for r in rects)

    def mv(p: Point) -> Point:
        return (p[0] - min_x, p[1] - min_y)

    for e in edges:
        e.path = [(cmd, tuple(mv(p) for p in ps)) for cmd, ps in e.path]
        e.tip = None if e.tip is None else mv(e.tip)
        e.junction = None if e.junction is None else mv(e.junction)
        if e.label[2]:
            lx, ly = mv(e.label[:2])
            e.label = (lx, ly, e.label[2], e.label[3])
    return _Component(
        {k: (x - min_x, y - min_y, w, h) for k, (x, y, w, h) in nodes.items()},
        edges,
        [(x0 - min_x, y0 - min_y, x1 - min_x, y1 - min_y) for x0, y0, x1, y1 in rects],
        max_x - min_x,
        max_y - min_y,
    )


def _row_order(srcs: Sequence[tuple[str, _EdgeAcc]]) -> Callable[[str], int]:
    seen: dict[str, int] = {}
    for _, a in srcs:
        for r in a.rows:
            seen.setdefault(r, len(seen))
    return seen.__getitem__


def _box(view: Any) -> Rect:
    x, y = view.xy
    return x - view.w / 2, y - view.h / 2, x + view.w / 2, y + view.h / 2


def _node_geom(gov: Governor, key: str, x: float, y: float, w: float, h: float) -> NodeGeom:
    x, y, w, h = round(x, 1), round(y, 1), round(w, 1), round(h, 1)
    if key == START_NODE:
        return NodeGeom(key, "start", "", x, y, w, h, tooltip="start: the instance is created")
    if key == ANY_NODE:
        return NodeGeom(key, "any", "any state", x, y, w, h, tooltip="any non-terminal state")
    st = gov.state(key)
    tip = [f"{st.name}: {st.description}" if st.description else st.name]
    if st.terminal:
        tip.append("terminal state")
    conditional = isinstance(st.attention, str) and bool(st.attention)
    attention = bool(st.attention)
    if attention:
        reason = st.attention_reason or (st.attention if conditional else "")
        tip.append(
            ("may need attention" if conditional else "needs attention") + (f": {reason}" if reason else "")
        )
    return NodeGeom(key, "state", key, x, y, w, h, st.terminal, attention, conditional, "\n".join(tip))


def _smooth(pts: Sequence[Point]) -> list[PathCmd]:
    """Cubic segments with vertical tangents through every chain point (layered-graph style)."""
    out: list[PathCmd] = [("M", (pts[0],))]
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        ym = (y0 + y1) / 2
        if abs(x1 - x0) < 0.05:
            out.append(("L", ((x1, y1),)))
        else:
            out.append(("C", ((x0, ym), (x1, ym), (x1, y1))))
    return out


def _arrow(tip: Point, direction: Point) -> str:
    ux, uy = direction
    bx, by = tip[0] - ux * ARROW_LEN, tip[1] - uy * ARROW_LEN
    px, py = -uy * ARROW_HALF, ux * ARROW_HALF
    return f"M{_fmt(tip[0])},{_fmt(tip[1])}L{_fmt(bx + px)},{_fmt(by + py)}L{_fmt(bx - px)},{_fmt(by - py)}Z"


def _loop(key: str, node: Rect, acc: _EdgeAcc, lines: tuple[str, ...]) -> _RawEdge:
    """A small loop on the node's right side, entering it again heading left; label to its right."""
    x, y, w, h = node
    right = x + w / 2
    dy = min(7.0, h / 2 - 3)
    reach = right + LOOP_W
    path: list[PathCmd] = [
        ("M", ((right, y - dy),)),
        ("C", ((reach, y - dy - 10), (reach, y + dy + 10), (right + ARROW_LEN, y + dy))),
    ]
    lw, lh = _label_size(lines)
    label = (right + LOOP_W + LOOP_GAP + lw / 2, y, lw, lh)
    kind = "any" if key == ANY_NODE else "loop"
    ident = f"{_slug(key)}-{_slug(key)}"
    return _RawEdge(
        key, key, kind, acc, lines, path, (right, y + dy), (-1.0, 0.0), label, False, ((key, key),), ident
    )


_LAYOUT_LOCK = threading.Lock()


@functools.lru_cache(maxsize=64)
def _layout_for_version(version: str) -> Layout:
    gov = _GOV_BY_VERSION[version]
    with _LAYOUT_LOCK:  # grandalf keeps DFS state on the Vertex class: one layout at a time
        return _compute_layout(gov, version)


def layout(gov: Governor) -> Layout:
    """The (cached) layout of a governor definition."""
    return _layout_for_version(definition_version(gov))


# --- rendering -----------------------------------------------------------------------------------

_STYLE = """
.gov-diagram{font-family:FONT;}
.gov-diagram text{text-anchor:middle;dominant-baseline:central;}
.gov-diagram .state>rect{fill:var(--diagram-node,#fff);stroke:var(--diagram-stroke,#94a3b8);stroke-width:1.2;}
.gov-diagram .state>text{fill:var(--diagram-text,#0f172a);font-size:12px;}
.gov-diagram .state.terminal>rect{stroke:var(--diagram-terminal,#475569);}
.gov-diagram .state .badge{fill:var(--diagram-attention,#d97706);}
.gov-diagram .state .badge-text{fill:#fff;font-size:9px;font-weight:700;}
.gov-diagram .state.recent>rect{stroke:var(--diagram-accent,#2563eb);stroke-width:1.8;}
.gov-diagram .state.current>rect{fill:var(--diagram-accent,#2563eb);
stroke:var(--diagram-accent-dark,#1d4ed8);}
.gov-diagram .state.current>rect.inner{stroke:#fff;}
.gov-diagram .state.current>text{fill:#fff;font-weight:600;}
.gov-diagram .start>circle{fill:var(--diagram-text,#0f172a);}
.gov-diagram .any>rect{fill:var(--diagram-any-fill,#f8fafc);stroke:var(--diagram-muted,#94a3b8);
stroke-dasharray:3 2;}
.gov-diagram .any>text{fill:var(--diagram-muted-text,#64748b);font-size:10.5px;font-style:italic;}
.gov-diagram .edge>.line{fill:none;stroke:var(--diagram-edge,#64748b);stroke-width:1.2;}
.gov-diagram .edge>.arrow{fill:var(--diagram-edge,#64748b);}
.gov-diagram .edge.any>.line{stroke-dasharray:4 3;}
.gov-diagram .edge.recent>.line{stroke:var(--diagram-accent,#2563eb);stroke-width:2.6;}
.gov-diagram .edge.recent>.arrow{fill:var(--diagram-accent,#2563eb);}
.gov-diagram .edge>.junction{fill:var(--diagram-edge,#64748b);}
.gov-diagram .edge.recent>.junction{fill:var(--diagram-accent,#2563eb);}
.gov-diagram .edge-label>rect{fill:var(--diagram-bg,#fff);fill-opacity:.9;}
.gov-diagram .edge-label>text{fill:var(--diagram-label,#475569);font-size:10px;}
.gov-diagram .edge-label.recent>text{fill:var(--diagram-accent,#2563eb);font-weight:600;}
""".replace("FONT", FONT_FAMILY).strip()


def _slug(key: str) -> str:
    if key == START_NODE:
        return "start"
    if key == ANY_NODE:
        return "any"
    return key


def _q(value: str) -> str:
    return quoteattr(value, {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


@dataclass(frozen=True)
class _Fragments:
    """Pre-rendered pieces of a layout; render only adds classes and data-order attributes.

    Each piece is (what it stands for, markup before the class attribute, base class, markup after).
    ``head`` opens a standalone drawing (with its font and stylesheet), ``head_embedded`` one for a
    page that includes ``diagram_css()`` once for all its diagrams.
    """

    head: str
    head_embedded: str
    edges: tuple[tuple[tuple[tuple[str, str], ...], str, str, str], ...]
    labels: tuple[tuple[tuple[tuple[str, str], ...], str, str, str], ...]
    nodes: tuple[tuple[NodeGeom, str, str], ...]


def _node_body(n: NodeGeom) -> str:
    if n.kind == "start":
        return f'<circle cx="{_fmt(n.x)}" cy="{_fmt(n.y)}" r="{_fmt(n.w / 2)}"/>'
    x0, y0 = n.x - n.w / 2, n.y - n.h / 2
    rx = n.h / 2 if n.kind == "any" else 7.0
    parts = [
        f'<rect x="{_fmt(x0)}" y="{_fmt(y0)}" width="{_fmt(n.w)}" height="{_fmt(n.h)}" rx="{_fmt(rx)}"/>'
    ]
    if n.terminal:
        parts.append(
            f'<rect class="inner" x="{_fmt(x0 + 3)}" y="{_fmt(y0 + 3)}" width="{_fmt(n.w - 6)}" '
            f'height="{_fmt(n.h - 6)}" rx="{_fmt(rx - 3)}"/>'
        )
    parts.append(f'<text x="{_fmt(n.x)}" y="{_fmt(n.y)}">{escape(n.label)}</text>')
    if n.attention:
        bx, by = n.x + n.w / 2 - 1, n.y - n.h / 2 + 1
        parts.append(
            f'<circle class="badge" cx="{_fmt(bx)}" cy="{_fmt(by)}" r="6"/>'
            f'<text class="badge-text" x="{_fmt(bx)}" y="{_fmt(by)}">'
            f"{'?' if n.attention_conditional else '!'}</text>"
        )
    return "".join(parts)


def _edge_tooltip(e: EdgeGeom) -> str:
    what = f"{', '.join(e.events)} ({', '.join(e.rows)})"
    if e.kind == "merge":
        return f"{', '.join(s for s, _ in e.pairs)} → {e.dst}: {what}"
    src = "any state" if e.src == ANY_NODE else "start" if e.src == START_NODE else e.src
    dst = "same state" if e.src == e.dst == ANY_NODE else e.dst
    return f"{src} → {dst}: {what}"


def _fragments(lay: Layout) -> _Fragments:
    gid = f"gov-{lay.governor}"
    title = f"{lay.title or lay.governor}: state diagram"
    opener = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gov-diagram" '
        f'viewBox="0 0 {_fmt(lay.width)} {_fmt(lay.height)}" width="{_fmt(lay.width)}" '
        f'height="{_fmt(lay.height)}" style="max-width:100%;height:auto" role="img" '
        f"aria-labelledby={_q(gid + '-title')} data-governor={_q(lay.governor)} "
        f'data-version="{lay.version}"'
    )
    title_el = f"<title id={_q(gid + '-title')}>{escape(title)}</title>"
    head = f"{opener} font-family={_q(FONT_FAMILY)}>{title_el}<style>{_STYLE}</style>"
    head_embedded = f"{opener}>{title_el}"
    nodes = []
    for n in lay.nodes:
        if n.kind == "state":
            opener = f"<g id={_q(f'{gid}-state-{n.key}')} "
            rest = f" data-state={_q(n.key)}><title>{escape(n.tooltip)}</title>{_node_body(n)}</g>"
        else:
            opener = f"<g id={_q(f'{gid}-{_slug(n.key)}')} "
            rest = f"><title>{escape(n.tooltip)}</title>{_node_body(n)}</g>"
        nodes.append((n, opener, rest))
    edges = []
    labels = []
    for e in lay.edges:
        eid = f"{gid}-edge-{e.ident}"
        tip = escape(_edge_tooltip(e))
        data = f" data-to={_q(_slug(e.dst))}"
        if e.kind != "merge":
            data = f" data-from={_q(_slug(e.src))}" + data
        body = f'<title>{tip}</title><path class="line" d="{e.path}"/>'
        if e.arrow:
            body += f'<path class="arrow" d="{e.arrow}"/>'
        if e.junction is not None:
            body += (
                f'<circle class="junction" cx="{_fmt(e.junction[0])}" cy="{_fmt(e.junction[1])}" r="2.5"/>'
            )
        base = "edge " + e.kind + (" branch" if not e.arrow else "")
        edges.append((e.pairs, f"<g id={_q(eid)} ", base, f"{data}>{body}</g>"))
        if not e.label_lines:
            continue
        text = []
        n_lines = len(e.label_lines)
        for j, line in enumerate(e.label_lines):
            ty = e.label_y + (j - (n_lines - 1) / 2) * LABEL_LINE_H
            text.append(f'<text x="{_fmt(e.label_x)}" y="{_fmt(ty)}">{escape(line)}</text>')
        lx, ly = e.label_x - e.label_w / 2, e.label_y - e.label_h / 2
        labels.append(
            (
                e.pairs,
                f"<g id={_q(eid + '-label')} ",
                "edge-label",
                f"{data}><title>{tip}</title>"
                f'<rect x="{_fmt(lx)}" y="{_fmt(ly)}" width="{_fmt(e.label_w)}" height="{_fmt(e.label_h)}" '
                f'rx="2"/>{"".join(text)}</g>',
            )
        )
    return _Fragments(head, head_embedded, tuple(edges), tuple(labels), tuple(nodes))


@functools.lru_cache(maxsize=64)
def _fragments_for_version(version: str) -> _Fragments:
    return _fragments(_layout_for_version(version))


def _recent_pairs(
    lay: Layout, recent: Sequence[tuple[str | None, str]]
) -> tuple[dict[tuple[str, str], int], set[str]]:
    """Map recent (from, to) transitions onto drawn pairs: {(src, dst): order} and the states touched.

    A creation (from None) maps to the start dot's edge; a transition with no edge of its own that a
    row with src ANY allows maps to the "any state" edge (or its self-loop when the state is kept).
    """
    drawn = {p for e in lay.edges for p in e.pairs}
    names = {n.key for n in lay.nodes if n.kind == "state"}
    terminal = {n.key for n in lay.nodes if n.terminal}
    orders: dict[tuple[str, str], int] = {}
    states: set[str] = set()
    for i, (a, b) in enumerate(recent, start=1):
        key: tuple[str, str] | None = None
        if a is None or a == "":
            if (START_NODE, b) in drawn:
                key = (START_NODE, b)
        elif (a, b) in drawn:
            key = (a, b)
        elif a not in terminal and a in names:
            if a == b and (ANY_NODE, ANY_NODE) in drawn:
                key = (ANY_NODE, ANY_NODE)
            elif (ANY_NODE, b) in drawn:
                key = (ANY_NODE, b)
        if key is not None:
            orders[key] = i
        for s in (a, b):
            if s is not None and s in names:
                states.add(s)
    return orders, states


def _marked(
    base: str, pairs: Sequence[tuple[str, str]], orders: dict[tuple[str, str], int], latest: int
) -> str:
    order = max((orders[p] for p in pairs if p in orders), default=0)
    if not order:
        return f'class="{base}"'
    return f'class="{base} recent{" latest" if order == latest else ""}" data-order="{order}"'


@functools.lru_cache(maxsize=1024)
def _render_cached(
    name: str,
    version: str,
    current: str | None,
    recent: tuple[tuple[str | None, str], ...],
    embedded: bool = False,
) -> str:
    frags = _fragments_for_version(version)
    orders, recent_states = _recent_pairs(_layout_for_version(version), recent)
    latest = max(orders.values(), default=0)
    out = [frags.head_embedded if embedded else frags.head, '<g class="edges">']
    for pairs, opener, base, rest in frags.edges:
        out.append(f"{opener}{_marked(base, pairs, orders, latest)}{rest}")
    out.append('</g><g class="labels">')
    for pairs, opener, base, rest in frags.labels:
        out.append(f"{opener}{_marked(base, pairs, orders, latest)}{rest}")
    out.append('</g><g class="nodes">')
    for node, opener, rest in frags.nodes:
        if node.kind != "state":
            out.append(f'{opener}class="{node.kind}"{rest}')
            continue
        classes = ["state"]
        if node.terminal:
            classes.append("terminal")
        if node.attention:
            classes.append("attention")
        if node.key == current:
            classes.append("current")
        if node.key in recent_states:
            classes.append("recent")
        out.append(f'{opener}class="{" ".join(classes)}"{rest}')
    out.append("</g></svg>")
    return "".join(out)


def render_svg(
    gov: Governor,
    current: str | None = None,
    recent: Sequence[tuple[str | None, str]] = (),
    *,
    embedded: bool = False,
) -> str:
    """An SVG state diagram of ``gov`` with ``current`` and the ``recent`` (from, to) path highlighted.

    ``recent`` is oldest first (newest last); ``from`` is None for the creation transition. A
    transition taken through an ANY row highlights the "any state" edge. ``embedded`` leaves out the
    font and the stylesheet: for a page showing several diagrams that includes ``diagram_css()`` once.
    """
    version = definition_version(gov)
    key = tuple((None if a is None else str(a), str(b)) for a, b in recent)
    return _render_cached(gov.name, version, current, key, embedded)


def diagram_css() -> str:
    """The stylesheet of the diagrams (every standalone SVG carries it; pages of embedded ones once)."""
    return _STYLE


def clear_caches() -> None:
    """Forget every cached layout and rendering (tests; definitions reloaded at runtime)."""
    _render_cached.cache_clear()
    _fragments_for_version.cache_clear()
    _layout_for_version.cache_clear()
    with _LOCK:
        _VERSION_MEMO.clear()
        _GOV_BY_VERSION.clear()
