"""Renderings of the incidence answer: a terminal table, CSV, and the self-contained DSMB HTML report."""

from __future__ import annotations

import csv
import html
import io
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from rich.table import Table

from safety.incidence import CATEGORIES

LABELS = {"serious": "Serious adverse events", "moderate_severe": "Moderate-severe adverse events",
          "all": "All adverse events"}


def software_version() -> str:
    try:
        return version("safety-monitor")
    except PackageNotFoundError:
        return "unknown"


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def incidence_table(answer: dict[str, Any]) -> Table:
    table = Table(title=f"Incidence around '{answer['anchor']}' (fingerprint {answer['fingerprint']})")
    for col in ("category", "window", "events", "person-months", "monthly incidence",
                "per person-month (95% CI)", "rate ratio post/pre (95% CI)", "p exact", "p Fisher"):
        table.add_column(col)
    for c in CATEGORIES:
        b = answer["categories"][c]
        for side in ("pre", "post"):
            s = b[side]
            first = side == "pre"
            table.add_row(
                c if first else "", f"{side} ({answer[side + '_months']} mo)", str(s["events"]),
                fmt(s["person_months"], 1), fmt(s["monthly_incidence"], 2),
                f"{fmt(s['incidence_per_person_month'])} ({fmt(s['ci95_low'])}-{fmt(s['ci95_high'])})",
                f"{fmt(b['rate_ratio'], 2)} ({fmt(b['rate_ratio_ci95_low'], 2)}-{fmt(b['rate_ratio_ci95_high'], 2)})"
                if first else "",
                fmt(b["p_exact_conditional"], 2) if first else "",
                fmt(b["p_fisher_person_months"], 2) if first else "",
            )
    return table


def incidence_csv(answer: dict[str, Any]) -> str:
    """Per-patient rows (Table 2) and the cohort totals, one line per patient and category."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["fingerprint", "source", "patient_id", "anchor_date", "category", "events_pre",
                "months_pre", "monthly_incidence_pre", "events_post", "months_post",
                "monthly_incidence_post"])
    for row in answer["per_patient"]:
        for c in CATEGORIES:
            pre, post = row[c]["pre"], row[c]["post"]
            w.writerow([answer["fingerprint"], row["source"], row["patient_id"], row["anchor_date"], c,
                        pre["events"], pre["months"], pre["monthly_incidence"],
                        post["events"], post["months"], post["monthly_incidence"]])
    for c in CATEGORIES:
        pre, post = answer["categories"][c]["pre"], answer["categories"][c]["post"]
        w.writerow([answer["fingerprint"], "", "Total", "", c, pre["events"], pre["person_months"],
                    pre["monthly_incidence"], post["events"], post["person_months"],
                    post["monthly_incidence"]])
    return out.getvalue()


def _chart_svg(answer: dict[str, Any]) -> str:
    """Incidence per person-month with 95% intervals, before and after, per category (inline SVG)."""
    width, height, left, bottom = 640, 260, 60, 40
    values = [answer["categories"][c][s] for c in CATEGORIES for s in ("pre", "post")]
    top = max([v["ci95_high"] or 0 for v in values] + [0.01])
    scale = (height - bottom - 20) / top
    parts = [f'<svg width="{width}" height="{height}" role="img" '
             'aria-label="Incidence per person-month before and after">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#333"/>']
    for i in range(5):
        y = height - bottom - i * (height - bottom - 20) / 4
        parts.append(f'<text x="{left - 6}" y="{y + 4:.0f}" font-size="10" text-anchor="end">'
                     f'{top * i / 4:.3f}</text>')
    group = (width - left - 20) / len(CATEGORIES)
    for gi, c in enumerate(CATEGORIES):
        for si, (side, colour) in enumerate((("pre", "#8da0cb"), ("post", "#fc8d62"))):
            v = answer["categories"][c][side]
            x = left + 10 + gi * group + si * 50
            rate = v["incidence_per_person_month"] or 0
            h = rate * scale
            parts.append(f'<rect x="{x:.0f}" y="{height - bottom - h:.1f}" width="40" height="{h:.1f}" '
                         f'fill="{colour}"><title>{c} {side}: {rate:.3f}</title></rect>')
            if v["ci95_high"] is not None:
                y1 = height - bottom - (v["ci95_low"] or 0) * scale
                y2 = height - bottom - v["ci95_high"] * scale
                parts.append(f'<line x1="{x + 20:.0f}" x2="{x + 20:.0f}" y1="{y1:.1f}" y2="{y2:.1f}" '
                             'stroke="#222"/>')
            parts.append(f'<text x="{x + 20:.0f}" y="{height - bottom + 14}" font-size="10" '
                         f'text-anchor="middle">{side}</text>')
        parts.append(f'<text x="{left + 10 + gi * group + 45:.0f}" y="{height - 8}" font-size="11" '
                     f'text-anchor="middle">{html.escape(c)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def efficacy_html(eff: dict[str, Any] | None) -> str:
    """The efficacy section: paired comparison and the repeat-infusion decisions."""
    if not eff or not eff.get("patients"):
        return ""
    e = html.escape
    parts = []
    for label, variables in eff["comparison"].items():
        rows = "".join(
            f"<tr><td>{e(v)}</td><td>{c['n']}</td><td>{fmt(c['before_median'], 2)} ({fmt(c['before_range'][0], 1)}–"
            f"{fmt(c['before_range'][1], 1)})</td><td>{fmt(c['after_median'], 2)} ({fmt(c['after_range'][0], 1)}–"
            f"{fmt(c['after_range'][1], 1)})</td><td>{fmt(c['p_wilcoxon'], 3)}</td></tr>"
            for v, c in variables.items() if c["n"])
        parts.append(f"<h3>Baseline against {e(label)}</h3><table><tr><th>Variable</th><th>n</th>"
                     f"<th>Baseline median (range)</th><th>{e(label)} median (range)</th><th>p (Wilcoxon)</th></tr>"
                     f"{rows}</table>")
    method = next((c["method"] for vs in eff["comparison"].values() for c in vs.values()), "")
    decisions = "".join(
        f"<tr><td>{e(p['patient_id'])}</td><td>{d['week']}</td><td>{'allowed' if d['allowed'] else 'no'}</td>"
        f"<td>{e('; '.join(d['reasons']))}</td></tr>"
        for p in eff["patients"] for d in p["repeat_infusion"])
    deviations = "".join(f"<li>{e(p['patient_id'])} {e(d['date'])}: {e(d['what'])}</li>"
                         for p in eff["patients"] for d in p["deviations"]) or "<li>none</li>"
    return (f"<h2>Efficacy</h2><p>Disease-activity states by the {e(eff['cut_off_set'])} cut-offs. "
            f"p-values: {e(method)}.</p>{''.join(parts)}"
            f"<h3>Repeat-infusion rule</h3><table><tr><th>Patient</th><th>Week</th><th>Repeat infusion</th>"
            f"<th>Why</th></tr>{decisions}</table><h3>Protocol deviations</h3><ul>{deviations}</ul>")


def changes_html(changes: list[dict[str, Any]] | None, since: str | None) -> str:
    """What SDTM transfers changed (recorded after ``since``): per transfer and domain, new, corrected and
    retracted records."""
    if changes is None:
        return ""
    e = html.escape
    heading = f"<h2>Data transfers since {e(since)}</h2>" if since else "<h2>Data transfers</h2>"
    if not changes:
        return heading + "<p>No SDTM transfer changed anything in this period.</p>"
    rows = "".join(f"<tr><td>{e(c['source'])}</td><td>{e(c['study'])}</td><td>{e(c['transfer'])}</td>"
                   f"<td>{e(c['first_recorded_at'][:16])}</td><td>{e(c['domain'])}</td><td>{e(c['change'])}</td>"
                   f"<td>{c['records']}</td></tr>" for c in changes)
    return (heading + "<p>Records each transfer added, corrected (a changed value or date) or retracted (absent "
            "from the transfer), as recorded in the ledger.</p><table><tr><th>source</th><th>study</th>"
            "<th>transfer</th><th>recorded</th><th>domain</th><th>change</th><th>records</th></tr>"
            f"{rows}</table>")


def shifts_html(shifts: dict[str, Any] | None) -> str:
    """The CTCAE shift tables: patients by baseline and worst post-baseline grade, per test and group."""
    if not shifts or not shifts["rows"]:
        return ""
    e = html.escape
    rows = "".join(f"<tr><td>{e(r['term'])}</td><td>{e(r['group'])}</td><td>{r['baseline_grade']}</td>"
                   f"<td>{r['worst_grade']}</td><td>{r['patients']}</td></tr>" for r in shifts["rows"])
    return (f"<h2>Laboratory shifts ({e(shifts['version'])})</h2><p>Baseline: {e(shifts['baseline'])}; worst "
            "post-baseline grade. Grade 0: within the limits.</p><table><tr><th>term</th><th>group</th>"
            f"<th>baseline grade</th><th>worst grade</th><th>patients</th></tr>{rows}</table>")


def _ae_lines(ae: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(level, soc, row, by_group) for every line of the tables: the overview, then each SOC and its terms."""
    lines = [("overview", "", o["row"], o["by_group"]) for o in ae["overview"]]
    for soc in ae["socs"]:
        lines.append(("soc", soc["soc"], soc["soc"], soc["by_group"]))
        lines += [("term", soc["soc"], t["term"], t["by_group"]) for t in soc["terms"]]
    return lines


def _n_percent(c: dict[str, Any]) -> str:
    return f"{c['subjects']} ({fmt(c['percent'], 1)}%)"


def _rate(c: dict[str, Any], key: str = "eair") -> str:
    low, high = c[f"{key}_ci95"]
    return f"{fmt(c[f'{key}_per_100py'], 2)} ({fmt(low, 2)}–{fmt(high, 2)})"


def ae_rows(ae: dict[str, Any], compact: bool = True) -> list[dict[str, Any]]:
    """The tables as flat rows: compact for reading (n (%) and EAIR with its interval per group) or
    every number in its own column (for CSV)."""
    out = []
    for level, soc, row, by_group in _ae_lines(ae):
        line: dict[str, Any] = ({"row": f"  {row}" if level == "term" else row.upper() if level == "overview" else row}
                                if compact else {"level": level, "soc": soc, "row": row})
        for g in ae["groups"]:
            c = by_group[g["name"]]
            if compact:
                line[f"{g['name']}: n/N (%)"] = _n_percent(c)
                line[f"{g['name']}: EAIR /100 PY"] = _rate(c)
            else:
                line.update({f"{g['name']} {k}": v for k, v in c.items() if not k.endswith("ci95")})
                for k in ("eair", "event_rate"):
                    line[f"{g['name']} {k}_ci95_low"], line[f"{g['name']} {k}_ci95_high"] = c[f"{k}_ci95"]
                line[f"{g['name']} N"] = g["subjects"]
        out.append(line)
    return out


def ae_html(ae: dict[str, Any] | None) -> str:
    """The treatment-emergent adverse-event tables and comparisons, beside the pre/post comparison."""
    if not ae or not ae["groups"]:
        return ""
    e = html.escape
    groups = [g["name"] for g in ae["groups"]]
    head = "".join(f"<th>{e(g)}<br>N = {n['subjects']}, {fmt(n['patient_years'], 1)} PY</th>"
                   for g, n in zip(groups, ae["groups"], strict=True))
    rows = []
    for level, _soc, row, by_group in _ae_lines(ae):
        label = e(row) if level != "term" else f"&nbsp;&nbsp;&nbsp;{e(row)}"
        style = ' class="section"' if level == "soc" else ""
        rows.append(f"<tr{style}><td>{'<b>' + label + '</b>' if level == 'soc' else label}</td>" + "".join(
            f"<td>{_n_percent(c)} [{c['events']}]<br><small>EAIR {_rate(c)}</small></td>"
            for c in (by_group[g] for g in groups)) + "</tr>")
    comparisons = [c for c in ae["comparisons"] if c["level"] == "overview"]
    comp_rows = "".join(
        f"<tr><td>{e(c['row'])}</td><td>{e(c['group'])} vs {e(c['control'])}</td>"
        f"<td>{fmt(c['risk_difference'])} ({fmt(c['risk_difference_ci95'][0])}–{fmt(c['risk_difference_ci95'][1])})</td>"
        f"<td>{fmt(c['relative_risk'], 2)} ({fmt(c['relative_risk_ci95'][0], 2)}–{fmt(c['relative_risk_ci95'][1], 2)})</td>"
        f"<td>{fmt(c['eair_ratio'], 2)} ({fmt(c['eair_ratio_ci95'][0], 2)}–{fmt(c['eair_ratio_ci95'][1], 2)})</td>"
        f"<td>{fmt(c['eair_ratio_p'], 3)}</td></tr>" for c in comparisons)
    methods = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in ae["methods"].items())
    meanings = "".join(f"<li><b>{e(o['row'])}</b>: {e(o['meaning'])}</li>" for o in ae["overview"])
    return (f"<h2>Treatment-emergent adverse events by {e(ae['by'])}</h2>"
            f"<p>Treatment-emergent: {e(ae['treatment_emergent'])}. Observation ends {e(ae['observation_end'] or '–')}; "
            f"fingerprint <code>{e(ae['fingerprint'])}</code>. Each cell: subjects with at least one event, n (%) "
            "[events]; EAIR per 100 patient-years at risk (95% CI).</p>"
            f"<table><tr><th>Row</th>{head}</tr>{''.join(rows)}</table><ul>{meanings}</ul>"
            + (f"<h3>Comparisons with {e(ae['control'])}</h3><table><tr><th>Row</th><th>Groups</th>"
               "<th>Risk difference (95% CI)</th><th>Relative risk (95% CI)</th><th>EAIR ratio (95% CI)</th>"
               f"<th>p</th></tr>{comp_rows}</table>" if comparisons else
               "<p>No control group: no comparisons.</p>")
            + f"<ul>{methods}</ul>")


def dsmb_html(answer: dict[str, Any], eff: dict[str, Any] | None = None,
              changes: list[dict[str, Any]] | None = None, changes_since: str | None = None,
              shifts: dict[str, Any] | None = None, ae: dict[str, Any] | None = None) -> str:
    """One self-contained HTML file: no scripts, no fonts, no network."""
    e = html.escape
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cohort_rows = []
    for c in CATEGORIES:
        b = answer["categories"][c]
        for side in ("pre", "post"):
            s = b[side]
            cohort_rows.append(
                f"<tr><td>{e(LABELS[c]) if side == 'pre' else ''}</td><td>{side}</td><td>{s['events']}</td>"
                f"<td>{fmt(s['person_months'], 1)}</td><td>{fmt(s['monthly_incidence'], 2)}</td>"
                f"<td>{fmt(s['incidence_per_person_month'])} ({fmt(s['ci95_low'])}–{fmt(s['ci95_high'])})</td>"
                + (f"<td rowspan=2>{fmt(b['rate_ratio'], 2)} ({fmt(b['rate_ratio_ci95_low'], 2)}–"
                   f"{fmt(b['rate_ratio_ci95_high'], 2)})</td><td rowspan=2>{fmt(b['p_exact_conditional'], 2)}</td>"
                   f"<td rowspan=2>{fmt(b['p_fisher_person_months'], 2)}</td>" if side == "pre" else "")
                + "</tr>"
            )
    patient_rows = []
    for row in answer["per_patient"]:
        cells = "".join(
            f"<td>{row[c]['pre']['events']}</td><td>{fmt(row[c]['pre']['monthly_incidence'], 2)}</td>"
            f"<td>{row[c]['post']['events']}</td><td>{fmt(row[c]['post']['monthly_incidence'], 2)}</td>"
            for c in ("serious", "moderate_severe")
        )
        patient_rows.append(f"<tr><td>{e(row['patient_id'])}</td><td>{e(row['anchor_date'])}</td>{cells}</tr>")
    labels = list(dict.fromkeys(ep["episode"] for ep in answer["episodes"]))
    episodes: dict[str, dict[str, Any]] = {}
    for ep in answer["episodes"]:
        episodes.setdefault(ep["patient_id"], {})[ep["episode"]] = ep

    def cell(items: list[str]) -> str:
        return "<br>".join(e(i) for i in items) or "–"

    episode_rows = []
    for kind, title in (("serious", "Serious adverse events"), ("moderate_severe", "Adverse events (moderate-severe)"),
                        ("treatments", "Anti-rheumatic therapy")):
        episode_rows.append(f'<tr class="section"><th colspan="{len(labels) + 1}">{title}</th></tr>')
        for pid, eps in episodes.items():
            episode_rows.append(f"<tr><td>{e(pid)}</td>" + "".join(
                f"<td>{cell(eps[label][kind]) if label in eps else '–'}</td>" for label in labels) + "</tr>")
    methods = "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in answer["methods"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DSMB safety report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:4px 8px;font-size:13px;vertical-align:top}} th{{background:#f0f0f0}}
tr.section th{{text-align:left;background:#e4e9f2}} .meta td{{border:none;padding:2px 8px}}
</style></head><body>
<h1>DSMB safety report: adverse events before and after {e(answer['anchor'])}</h1>
<table class="meta">
<tr><td>Windows</td><td>{answer['pre_months']} months before, {answer['post_months']} months from the first {e(answer['anchor'])}</td></tr>
<tr><td>Clinical data cut</td><td>{e(answer['data_cut'] or 'none (all events known)')}</td></tr>
<tr><td>Knowledge time (as of)</td><td>{e(answer['as_of'] or 'latest')}</td></tr>
<tr><td>Fingerprint</td><td><code>{e(answer['fingerprint'])}</code> (ledger position {answer['ledger_position']})</td></tr>
<tr><td>Patients with an anchor</td><td>{answer['patients']}</td></tr>
<tr><td>Generated</td><td>{generated} by safety-monitor {e(software_version())}</td></tr>
</table>
<h2>Cohort comparison</h2>
<table><tr><th>Category</th><th>Window</th><th>Events</th><th>Person-months</th><th>Monthly incidence</th>
<th>Incidence per person-month (95% CI)</th><th>Rate ratio post/pre (95% CI)</th><th>p (exact conditional)</th>
<th>p (Fisher, person-months)</th></tr>{''.join(cohort_rows)}</table>
<h2>Incidence per person-month</h2>{_chart_svg(answer)}
<h2>Per patient (Table 2)</h2>
<table><tr><th rowspan=2>Patient</th><th rowspan=2>Anchor</th><th colspan=4>Serious</th><th colspan=4>Moderate-severe</th></tr>
<tr><th>events pre</th><th>monthly pre</th><th>events post</th><th>monthly post</th>
<th>events pre</th><th>monthly pre</th><th>events post</th><th>monthly post</th></tr>{''.join(patient_rows)}</table>
<h2>Episodes (months from the anchor)</h2>
<table><tr><th>Patient</th>{''.join(f'<th>{e(label)}</th>' for label in labels)}</tr>{''.join(episode_rows)}</table>
{ae_html(ae)}
{efficacy_html(eff)}
{shifts_html(shifts)}
{changes_html(changes, changes_since)}
<h2>Methods</h2><ul>{methods}</ul>
</body></html>
"""
