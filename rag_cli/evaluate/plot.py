"""An SVG picture of eval reports: recall@k across k (one line per configuration) and latency
p50/p95 per stage. Plain SVG text, no plotting library."""

from __future__ import annotations

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
