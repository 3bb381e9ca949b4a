"""The stats view's charts as plain SVG (no script, no library): bars drawn from numbers,
every label escaped."""

from __future__ import annotations

from html import escape
from typing import Any

from codexw.core.durations import format_duration

BAR_H, GAP, LABEL_W, CHART_W = 18, 6, 90, 420


def _svg(title: str, height: int, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart"'
        f' viewBox="0 0 {LABEL_W + CHART_W + 120} {height}" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def _bar_rows(rows: list[tuple[str, list[tuple[float, str]], str]], scale: float) -> list[str]:
    """rows: (label, [(value, css class)] stacked, text after the bars)."""
    out = []
    for i, (label, parts, after) in enumerate(rows):
        y = i * (BAR_H + GAP)
        out.append(f'<text x="0" y="{y + BAR_H - 5}" class="label">{escape(label)}</text>')
        x = float(LABEL_W)
        for value, cls in parts:
            width = CHART_W * value / scale if scale else 0.0
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{BAR_H}"'
                       f' class="{cls}"/>')
            x += width
        out.append(f'<text x="{x + 6:.1f}" y="{y + BAR_H - 5}" class="value">'
                   f"{escape(after)}</text>")
    return out


def success_chart(levels: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, list[tuple[float, str]], str]] = []
    for lv in levels:
        rate = lv["success_rate"]
        if rate is None:  # only killed or cancelled: nothing to rate
            rows.append((lv["level"], [], "no finished jobs"))
        else:
            rows.append((lv["level"], [(rate, "ok"), (1 - rate, "bad")],
                         f"{rate:.0%} of {lv['rated']}"))
    return _svg("success rate per level", max(1, len(rows)) * (BAR_H + GAP), _bar_rows(rows, 1.0))


def duration_chart(levels: list[dict[str, Any]]) -> str:
    timed = [lv for lv in levels if lv["p50"] is not None]
    scale = max((lv["p90"] or 0.0 for lv in timed), default=0.0)
    rows = [(lv["level"], [(lv["p50"], "p50"), (max(0.0, lv["p90"] - lv["p50"]), "p90")],
             f"p50 {format_duration(lv['p50'])} · p90 {format_duration(lv['p90'])}")
            for lv in timed]
    return _svg("duration p50 and p90 per level", max(1, len(rows)) * (BAR_H + GAP),
                _bar_rows(rows, scale))


def tokens_chart(days: list[dict[str, Any]]) -> str:
    scale = float(max((d["input"] + d["output"] for d in days), default=0))
    rows = [(d["day"], [(float(d["input"]), "tin"), (float(d["output"]), "tout")],
             f"{d['input'] + d['output']:,} ({d['output']:,} out)") for d in days]
    return _svg("tokens per day (UTC)", max(1, len(rows)) * (BAR_H + GAP),
                _bar_rows(rows, scale))


def stats_html(stats: dict[str, Any]) -> str:
    rate = stats["success_rate"]
    head = (f"<p>{stats['jobs']:,} jobs"
            + (f", {rate:.0%} succeeded of those that finished" if rate is not None else "")
            + "</p>")
    return (head + "<h3>Success rate per level</h3>" + success_chart(stats["levels"])
            + "<h3>Duration per level</h3>" + duration_chart(stats["levels"])
            + "<h3>Tokens per day</h3>" + tokens_chart(stats["tokens_by_day"]))
