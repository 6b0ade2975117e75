"""An SVG picture of eval reports: recall@k across k (one line per configuration) and latency
p50/p95 per stage; a terminal chart of a refusal trade-off. Plain text, no plotting library."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def eval_svg(reports: Sequence, ks: Sequence[int]) -> str:
    width, height, pad = 760, 320, 48
    left_w = 360
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{pad}" y="20" font-size="13" font-weight="bold">document recall@k</text>']
    x0, y0, x1, y1 = pad, height - pad, left_w, 36
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>')
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y0 - (y0 - y1) * tick
        parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.2f}</text>')
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#ddd"/>')
    xs = {k: x0 + (x1 - x0) * (i + 0.5) / len(ks) for i, k in enumerate(ks)}
    for k, x in xs.items():
        parts.append(f'<text x="{x:.1f}" y="{y0 + 16}" text-anchor="middle">@{k}</text>')
    for n, rep in enumerate(reports):
        color = COLORS[n % len(COLORS)]
        points = [(xs[k], y0 - (y0 - y1) * rep.metrics[f"recall@{k}"]) for k in ks if f"recall@{k}" in rep.metrics]
        if points:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in points]
        parts.append(f'<text x="{x0 + 8}" y="{y1 + 14 + 14 * n}" fill="{color}">{escape(rep.label)}</text>')
    # latency bars
    lx0 = left_w + 80
    parts.append(f'<text x="{lx0}" y="20" font-size="13" font-weight="bold">latency p50 / p95 (s)</text>')
    stages = [s for s in ("embed", "retrieve", "generate", "total") if any(s in r.latency for r in reports)]
    top = max([r.latency[s]["p95"] for r in reports for s in stages if s in r.latency] or [1.0]) or 1.0
    row = 0
    for stage in stages:
        for n, rep in enumerate(reports):
            if stage not in rep.latency:
                continue
            y = 40 + row * 22
            p50, p95 = rep.latency[stage]["p50"], rep.latency[stage]["p95"]
            w50, w95 = (width - lx0 - 90) * p50 / top, (width - lx0 - 90) * p95 / top
            color = COLORS[n % len(COLORS)]
            parts.append(f'<text x="{lx0 - 6}" y="{y + 12}" text-anchor="end">{stage}</text>')
            parts.append(f'<rect x="{lx0}" y="{y}" width="{w95:.1f}" height="14" fill="{color}" opacity="0.3"/>')
            parts.append(f'<rect x="{lx0}" y="{y}" width="{w50:.1f}" height="14" fill="{color}"/>')
            parts.append(f'<text x="{lx0 + w95 + 4:.1f}" y="{y + 11}">{p50:.3f} / {p95:.3f}</text>')
            row += 1
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def tradeoff_chart(points: Sequence[tuple[float, float]], mark: tuple[float, float] | None = None, *,
                   target: float | None = None, width: int = 48, height: int = 11) -> list[str]:
    """A terminal chart (plain text lines) of a refusal trade-off: x the share of answerable
    questions wrongly refused, y the share of unanswerable ones refused, both 0..1. ``points`` are
    drawn as "•", ``mark`` (the chosen setting) as "◆", ``target`` as a dotted line. The x axis
    ends where the interesting part does (at least 20%, a little past ``mark``)."""
    x_max = 1.0 if mark is None else min(1.0, max(0.2, math.ceil(mark[0] * 25) / 10))
    grid = [[" "] * width for _ in range(height)]

    def cell(x: float, y: float) -> tuple[int, int] | None:
        if x > x_max + 1e-9:
            return None
        return height - 1 - round(y * (height - 1)), round(x / x_max * (width - 1))

    if target is not None:
        row = height - 1 - round(target * (height - 1))
        grid[row] = ["┄"] * width
    for x, y in points:
        if (at := cell(x, y)) is not None:
            grid[at[0]][at[1]] = "•"
    if mark is not None and (at := cell(*mark)) is not None:
        grid[at[0]][at[1]] = "◆"
    lines = ["unanswerable refused"]
    for i, row_cells in enumerate(grid):
        share = 1 - i / (height - 1)
        label = f"{share:4.0%}" if i in (0, height - 1) or (target is not None and i == height - 1 -
                                                            round(target * (height - 1))) else "    "
        lines.append(f"{label} │{''.join(row_cells)}")
    lines.append("     └" + "─" * width)
    right = f"{x_max:.0%}"
    lines.append("      0%" + " " * max(1, width - 2 - len(right)) + right)
    lines.append(" " * 6 + "answerable wrongly refused".center(width))
    return lines
