"""Inline SVG charts for ``mosaic report``: pure functions from numbers to SVG text.

No plotting library and nothing fetched at view time: every chart is an ``<svg>`` element
written here, so the report opens offline in any browser. Each chart is an
``<svg class="plot" data-points="N">`` (N = data points drawn) whose marks carry
``class="mark"``; hovering a mark shows its value (an SVG ``<title>``). A chart without
data says so in its body and has ``data-points="0"``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 560, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 44
COLORS = ("#3b6fb6", "#e0813a", "#4a9a5b", "#b0413e", "#7d5ba6", "#8c6d4f")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]


@dataclass(frozen=True)
class Span:
    """One row of a timeline: ``start``/``end`` in seconds from the timeline's origin."""

    label: str
    start: float
    end: float
    detail: str = ""


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        return f"{value:.2f}"
    return f"{value:.3g}"


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels with as many decimals as the step between ticks needs."""
    if len(ticks) < 2:
        return [_fmt(t) for t in ticks]
    step = min(abs(b - a) for a, b in itertools.pairwise(ticks)) or 1.0
    decimals = max(0, min(6, -math.floor(math.log10(step) + 1e-6)))
    if 1e-6 < step * 10**decimals % 1 < 1 - 1e-6:  # steps of 2.5, 0.25...
        decimals += 1
    return [f"{t:,.{decimals}f}" for t in ticks]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count)
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= step * mult:
            step *= mult
            break
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def bins_for(values: Sequence[float], count: int = 20) -> list[float]:
    """``count`` equal bins over the values' range (a tiny range still gets a width)."""
    low, high = min(values), max(values)
    if high - low < 1e-9:
        pad = abs(low) * 0.01 or 0.5
        low, high = low - pad, high + pad
    width = (high - low) / count
    return [low + i * width for i in range(count + 1)]


def histogram_counts(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    for value in values:
        if value < edges[0] or value > edges[-1]:
            continue
        i = min(len(counts) - 1, max(0, int((value - edges[0]) / (edges[1] - edges[0]))))
        while i > 0 and value < edges[i]:
            i -= 1
        while i < len(counts) - 1 and value >= edges[i + 1]:
            i += 1
        counts[i] += 1
    return counts


class _Frame:
    """Plot area geometry and the <svg> wrapper."""

    def __init__(self, title: str, points: int, height: int = HEIGHT) -> None:
        self.title, self.points, self.height = title, points, height
        self.x0, self.x1 = LEFT, WIDTH - RIGHT
        self.y0, self.y1 = height - BOTTOM, TOP
        self.parts: list[str] = []

    def add(self, part: str) -> None:
        self.parts.append(part)

    def svg(self) -> str:
        return (f'<svg class="plot" data-points="{self.points}" role="img" '
                f'aria-label="{escape(self.title)}" xmlns="http://www.w3.org/2000/svg" '
                f'viewBox="0 0 {WIDTH} {self.height}" width="{WIDTH}" height="{self.height}">'
                f'<title>{escape(self.title)}</title>'
                f'<rect x="0" y="0" width="{WIDTH}" height="{self.height}" fill="#fff"/>'
                f'<text x="{LEFT}" y="18" class="chart-title">{escape(self.title)}</text>'
                + "".join(self.parts) + "</svg>")

    def empty(self, message: str) -> str:
        self.points = 0
        self.add(f'<text x="{WIDTH / 2}" y="{self.height / 2}" text-anchor="middle" '
                 f'class="empty">{escape(message)}</text>')
        return self.svg()

    def x_axis(self, ticks: Sequence[float], scale: _Scale, label: str) -> None:
        self.add(f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x1}" y2="{self.y0}" '
                 'class="axis"/>')
        for t, text in zip(ticks, tick_labels(ticks), strict=True):
            x = scale(t)
            self.add(f'<line x1="{x:.1f}" y1="{self.y0}" x2="{x:.1f}" y2="{self.y0 + 4}" '
                     f'class="axis"/><text x="{x:.1f}" y="{self.y0 + 16}" '
                     f'text-anchor="middle" class="tick">{text}</text>')
        self.add(f'<text x="{(self.x0 + self.x1) / 2}" y="{self.height - 6}" '
                 f'text-anchor="middle" class="label">{escape(label)}</text>')

    def y_axis(self, ticks: Sequence[float], scale: _Scale, label: str) -> None:
        self.add(f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x0}" y2="{self.y1}" '
                 'class="axis"/>')
        for t, text in zip(ticks, tick_labels(ticks), strict=True):
            y = scale(t)
            self.add(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x1}" y2="{y:.1f}" '
                     f'class="grid"/><text x="{self.x0 - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end" class="tick">{text}</text>')
        self.add(f'<text transform="translate(14 {(self.y0 + self.y1) / 2}) rotate(-90)" '
                 f'text-anchor="middle" class="label">{escape(label)}</text>')


class _Scale:
    def __init__(self, lo: float, hi: float, out_lo: float, out_hi: float) -> None:
        self.lo, self.hi, self.out_lo, self.out_hi = lo, hi, out_lo, out_hi

    def __call__(self, value: float) -> float:
        span = (self.hi - self.lo) or 1.0
        return self.out_lo + (value - self.lo) / span * (self.out_hi - self.out_lo)


def histogram(title: str, series: Sequence[Series], *, xlabel: str, bins: int = 20,
              empty: str = "no data") -> str:
    """Counts per bin; several series share the bins and are drawn side by side."""
    values = [v for s in series for v in s.values if math.isfinite(v)]
    frame = _Frame(title, len(values))
    if not values:
        return frame.empty(empty)
    edges = bins_for(values, bins)
    counts = [histogram_counts([v for v in s.values if math.isfinite(v)], edges)
              for s in series]
    top = max(max(c) for c in counts)
    yticks = nice_ticks(0, max(top, 4), 4)  # whole counts
    xs = _Scale(edges[0], edges[-1], frame.x0, frame.x1)
    ys = _Scale(0, yticks[-1], frame.y0, frame.y1)
    frame.y_axis(yticks, ys, "count")
    bar_w = (frame.x1 - frame.x0) / (len(edges) - 1)
    each = bar_w / len(series)
    for k, (s, c) in enumerate(zip(series, counts, strict=True)):
        color = COLORS[k % len(COLORS)]
        for i, n in enumerate(c):
            if not n:
                continue
            x = xs(edges[i]) + k * each
            y = ys(n)
            frame.add(f'<rect class="mark bar" data-series="{escape(s.name)}" '
                      f'data-count="{n}" x="{x + 0.5:.1f}" y="{y:.1f}" '
                      f'width="{max(1.0, each - 1):.1f}" height="{frame.y0 - y:.1f}" '
                      f'fill="{color}"><title>{escape(s.name)}: {n} in '
                      f'[{_fmt(edges[i])}, {_fmt(edges[i + 1])})</title></rect>')
    inside = [t for t in nice_ticks(edges[0], edges[-1], 5) if edges[0] <= t <= edges[-1]]
    frame.x_axis(inside, xs, xlabel)
    if len(series) > 1:
        _legend(frame, [s.name for s in series])
    return frame.svg()


def scatter(title: str, points: Sequence[tuple[float, float, str]], *, xlabel: str,
            ylabel: str, empty: str = "no data") -> str:
    """(x, y, hover text) per point."""
    pts = [(x, y, t) for x, y, t in points if math.isfinite(x) and math.isfinite(y)]
    frame = _Frame(title, len(pts))
    if not pts:
        return frame.empty(empty)
    xt = nice_ticks(min(p[0] for p in pts), max(p[0] for p in pts), 5)
    yt = nice_ticks(min(p[1] for p in pts), max(p[1] for p in pts), 4)
    xs = _Scale(xt[0], xt[-1], frame.x0, frame.x1)
    ys = _Scale(yt[0], yt[-1], frame.y0, frame.y1)
    frame.y_axis(yt, ys, ylabel)
    frame.x_axis(xt, xs, xlabel)
    for x, y, text in pts:
        frame.add(f'<circle class="mark point" cx="{xs(x):.1f}" cy="{ys(y):.1f}" r="3.5" '
                  f'fill="{COLORS[0]}" fill-opacity="0.7"><title>{escape(text)}</title>'
                  '</circle>')
    return frame.svg()


def bars(title: str, items: Sequence[tuple[str, float]], *, xlabel: str,
         empty: str = "no data") -> str:
    """Horizontal bars, one per (label, value)."""
    rows = [(label, value) for label, value in items if value > 0]
    height = max(HEIGHT // 2, TOP + BOTTOM + 26 * len(rows))
    frame = _Frame(title, len(rows), height)
    if not rows:
        return frame.empty(empty)
    frame.x0 = 170
    xt = nice_ticks(0, max(v for _, v in rows), 4)
    xs = _Scale(0, xt[-1], frame.x0, frame.x1)
    frame.x_axis(xt, xs, xlabel)
    step = (frame.y0 - frame.y1) / len(rows)
    for i, (label, value) in enumerate(rows):
        y = frame.y1 + i * step + step * 0.15
        frame.add(f'<text x="{frame.x0 - 6}" y="{y + step * 0.45:.1f}" text-anchor="end" '
                  f'class="tick">{escape(label)}</text>'
                  f'<rect class="mark bar" data-count="{_fmt(value)}" x="{frame.x0}" '
                  f'y="{y:.1f}" width="{max(1.0, xs(value) - frame.x0):.1f}" '
                  f'height="{step * 0.7:.1f}" fill="{COLORS[(i + 1) % len(COLORS)]}">'
                  f'<title>{escape(label)}: {_fmt(value)}</title></rect>'
                  f'<text x="{xs(value) + 4:.1f}" y="{y + step * 0.45:.1f}" class="tick">'
                  f'{_fmt(value)}</text>')
    return frame.svg()


def timeline(title: str, spans: Sequence[Span], *, xlabel: str = "seconds",
             empty: str = "no data") -> str:
    """A Gantt chart: one row per span (a zero-length span is drawn as a marker)."""
    rows = [s for s in spans if math.isfinite(s.start) and math.isfinite(s.end)]
    height = max(HEIGHT // 2, TOP + BOTTOM + 26 * len(rows))
    frame = _Frame(title, len(rows), height)
    if not rows:
        return frame.empty(empty)
    frame.x0 = 190
    lo = min(0.0, *(s.start for s in rows))
    xt = nice_ticks(lo, max(s.end for s in rows), 6)
    xs = _Scale(xt[0], xt[-1], frame.x0, frame.x1)
    frame.x_axis(xt, xs, xlabel)
    step = (frame.y0 - frame.y1) / len(rows)
    for i, span in enumerate(rows):
        y = frame.y1 + i * step + step * 0.15
        x_start, x_end = xs(span.start), xs(span.end)
        text = (f"{span.label}: {_fmt(span.start)} s to {_fmt(span.end)} s "
                f"({_fmt(span.end - span.start)} s){' - ' + span.detail if span.detail else ''}")
        frame.add(f'<text x="{frame.x0 - 6}" y="{y + step * 0.45:.1f}" text-anchor="end" '
                  f'class="tick">{escape(span.label)}</text>'
                  f'<rect class="mark span" data-start="{span.start:.3f}" '
                  f'data-end="{span.end:.3f}" x="{x_start:.1f}" y="{y:.1f}" '
                  f'width="{max(2.0, x_end - x_start):.1f}" height="{step * 0.7:.1f}" '
                  f'fill="{COLORS[i % len(COLORS)]}"><title>{escape(text)}</title></rect>')
    return frame.svg()


def _legend(frame: _Frame, names: Sequence[str]) -> None:
    x = frame.x1 - 150
    for k, name in enumerate(names):
        y = frame.y1 + 4 + k * 16
        frame.add(f'<rect x="{x}" y="{y}" width="10" height="10" '
                  f'fill="{COLORS[k % len(COLORS)]}"/><text x="{x + 14}" y="{y + 9}" '
                  f'class="tick">{escape(name)}</text>')
