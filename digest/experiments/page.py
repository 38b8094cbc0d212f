"""The report as one self-contained HTML page: a chart of each variant's rate with its
95 % interval (inline SVG: no script, no network), the figures, the verdict in plain words.
It reflows to one column on a phone; the chart scales with the page width."""

from __future__ import annotations

from html import escape

from digest.experiments.report import METRIC_WORDS, Report

BAR_H, GAP, LEFT, RIGHT, TOP = 24, 16, 40, 18, 26
WIDTH = 380
COLUMNS = ("recipients", "delivered", "unique_opens", "unique_human_opens", "unique_clicks",
           "unsubscribes", "complaints", "bounces")  # fmt: skip
CSS = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
color:#1b1f24;background:#fff}
main{max-width:760px;margin:0 auto;padding:16px}
h1{font-size:1.4rem;margin:.2em 0}h2{font-size:1.1rem;margin:1.2em 0 .4em}
.verdict{padding:12px 14px;border-radius:8px;background:#eef4ff;border:1px solid #b6ccf5}
.verdict.winner{background:#e9f7ef;border-color:#9bd4b0}
.verdict.too_small{background:#fff6e5;border-color:#f0cf8a}
.status{color:#44505c}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-size:.9rem;min-width:100%}
th,td{padding:6px 8px;border-bottom:1px solid #dde3ea;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
svg{width:100%;max-width:600px;height:auto;display:block}
svg text{font:14px system-ui,sans-serif;fill:#1b1f24}
"""


def render_page(report: Report) -> str:
    """The whole page as a string (UTF-8, no external resource)."""
    a = report.analysis
    title = f"A/B test {report.edition_key}"
    verdict = a.verdict.replace("_", " ")
    if a.winner:
        verdict += f": {a.winner}"
    explanation = "".join(f"<p>{escape(line)}</p>" for line in report.explanation())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body><main>
<h1>{escape(title)}</h1>
<p>Metric: {escape(METRIC_WORDS[report.metric])}; alpha {a.alpha}; at least {a.min_sample}
per variant.</p>
<div class="verdict {escape(a.verdict)}"><strong>Verdict: {escape(verdict)}</strong>
{explanation}</div>
<p class="status">{escape(report.status())}</p>
<h2>Rate and 95 % interval per variant</h2>
{chart(report)}
<h2>Figures</h2>
<div class="scroll">{_figures(report)}</div>
<h2>Comparisons</h2>
<div class="scroll">{_comparisons(report)}</div>
</main></body></html>
"""


def chart(report: Report) -> str:
    """One row per variant: a bar to the rate, a line across the Wilson interval."""
    a = report.analysis
    highs = [ci[1] for ci in a.intervals.values() if ci] + [r for x in a.arms if (r := x.rate)]
    top = _nice(max(highs, default=0.01))
    span = WIDTH - LEFT - RIGHT
    height = TOP + len(a.arms) * (BAR_H + GAP) + 10

    def x(v: float) -> float:
        return LEFT + span * v / top

    parts = [
        f'<svg viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(report.metric)} rate per variant with 95% intervals">'
    ]
    for i in range(5):
        v = top * i / 4
        parts.append(
            f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{TOP - 6}" y2="{height - 8}" '
            f'stroke="#dde3ea"/><text x="{x(v):.1f}" y="{TOP - 10}" text-anchor="middle">'
            f"{v * 100:.3g}%</text>"
        )
    for n, arm in enumerate(a.arms):
        y = TOP + n * (BAR_H + GAP)
        mid = y + BAR_H / 2
        colour = "#2f8f5b" if arm.key == a.winner else "#4a78c2"
        parts.append(f'<text x="8" y="{mid + 5:.1f}">{escape(arm.key)}</text>')
        if arm.rate is None:
            parts.append(f'<text x="{LEFT}" y="{mid + 5:.1f}">no delivered yet</text>')
            continue
        parts.append(
            f'<rect x="{LEFT}" y="{y}" width="{x(arm.rate) - LEFT:.1f}" height="{BAR_H}" '
            f'fill="{colour}" opacity="0.35"><title>{arm.key}: {arm.rate * 100:.2f}%</title></rect>'
        )
        ci = a.intervals[arm.key]
        if ci:
            parts.append(
                f'<line x1="{x(ci[0]):.1f}" x2="{x(ci[1]):.1f}" y1="{mid}" y2="{mid}" '
                f'stroke="#1b1f24" stroke-width="2"/>'
                f'<line x1="{x(ci[0]):.1f}" x2="{x(ci[0]):.1f}" y1="{mid - 7}" y2="{mid + 7}" '
                f'stroke="#1b1f24" stroke-width="2"/>'
                f'<line x1="{x(ci[1]):.1f}" x2="{x(ci[1]):.1f}" y1="{mid - 7}" y2="{mid + 7}" '
                f'stroke="#1b1f24" stroke-width="2"/>'
            )
        parts.append(f'<circle cx="{x(arm.rate):.1f}" cy="{mid}" r="5" fill="{colour}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _nice(value: float) -> float:
    """The axis end: the next of 1, 2, 2.5, 5 × 10^k above `value`."""
    for power in range(-4, 1):
        for step in (1, 2, 2.5, 5):
            if value <= step * 10**power:
                return step * 10**power
    return 1.0


def _figures(report: Report) -> str:
    head = "".join(f"<th>{c.replace('unique_', '').replace('_', ' ')}</th>" for c in COLUMNS)
    rows = []
    data = report.to_dict()["variants"]
    for key, v in data.items():
        cells = "".join(f"<td>{v[c]:,}</td>" for c in COLUMNS)
        rate = f"{v['rate'] * 100:.2f}%" if v["rate"] is not None else "–"
        ci = f"{v['ci'][0] * 100:.2f}–{v['ci'][1] * 100:.2f}%" if v["ci"] else "–"
        rows.append(f"<tr><td>{escape(key)}</td>{cells}<td>{rate}</td><td>{ci}</td></tr>")
    return (
        f"<table><thead><tr><th>variant</th>{head}<th>rate</th><th>95% CI</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _comparisons(report: Report) -> str:
    rows = []
    for c in report.to_dict()["comparisons"]:
        if c["diff"] is None:
            continue
        lo, hi = c["ci_diff"]
        rows.append(
            f"<tr><td>{escape(c['variant'])} vs {escape(c['baseline'])}</td>"
            f"<td>{c['diff'] * 100:+.2f} pts</td><td>{lo * 100:+.2f} to {hi * 100:+.2f}</td>"
            f"<td>{c['p_value']:.4g}</td><td>{escape(c['test'])}</td></tr>"
        )
    return (
        "<table><thead><tr><th>comparison</th><th>difference</th><th>95% CI</th>"
        f"<th>p</th><th>test</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
