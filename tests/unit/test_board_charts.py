"""The board's stats charts: plain SVG, every label escaped, bars to scale."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from codexw.board import charts

NS = "{http://www.w3.org/2000/svg}"


def test_charts_are_plain_svg_with_escaped_labels_and_bars_to_scale() -> None:
    levels = [
        {"level": "low", "succeeded": 3, "rated": 4, "success_rate": 0.75, "p50": 10.0,
         "p90": 40.0},
        {"level": "<script>", "succeeded": 0, "rated": 0, "success_rate": None, "p50": None,
         "p90": None},
    ]
    success = ET.fromstring(charts.success_chart(levels))
    rects = success.findall(f"{NS}rect")
    assert [float(r.get("width", 0)) for r in rects] == [charts.CHART_W * 0.75,
                                                          charts.CHART_W * 0.25]
    texts = [t.text for t in success.iter(f"{NS}text")]
    assert "<script>" in texts and "no finished jobs" in texts  # as text, parsed back
    duration = ET.fromstring(charts.duration_chart(levels))
    p50, p90 = (float(r.get("width", 0)) for r in duration.findall(f"{NS}rect"))
    assert (p50, p50 + p90) == (charts.CHART_W * 0.25, charts.CHART_W)
    tokens = ET.fromstring(charts.tokens_chart([{"day": "2026-11-30", "input": 300,
                                                 "output": 100}]))
    assert sum(float(r.get("width", 0)) for r in tokens.findall(f"{NS}rect")) == charts.CHART_W
    assert not list(success.iter(f"{NS}script"))


def test_a_report_renders_line_by_line_and_agent_html_stays_text() -> None:
    from codexw.services.board import render_markdown

    html = render_markdown("**Task:** fix it\n**Started:** now\n\n<script>alert(1)</script>\n"
                           "[x](javascript:alert(1))")
    assert "fix it<br />" in html  # the report's lines stay lines
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "href" not in html  # the javascript: link is refused, shown as text
