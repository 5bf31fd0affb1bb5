"""The DSMB report's tables and listings as HTML, every number printed by ``safety.formatting`` (half up,
p < 0.001, clean intervals)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from safety.formatting import MISSING, estimate, half_up, interval, p_value, percent
from safety.incidence import CATEGORIES

e = html.escape
LABELS = {"serious": "Serious adverse events", "moderate_severe": "Moderate-severe adverse events",
          "all": "All adverse events"}
OVERVIEW_LABELS = {"any": "Any TEAE", "serious": "Serious", "severe": "Severe", "related": "Related",
                   "leading_to_discontinuation": "Leading to discontinuation", "fatal": "Fatal"}
DEATH_COLUMNS = (("patient_id", "Subject"), ("arm", "Arm"), ("date", "Date"), ("days_from_first_dose", "Study day"),
                 ("days_after_last_dose", "Days after last dose"), ("cause", "Cause"))
SAE_COLUMNS = (("patient_id", "Subject"), ("arm", "Arm"), ("onset", "Onset"), ("days_from_first_dose", "Study day"),
               ("term", "Preferred term"), ("criteria", "Criteria"), ("severity", "Severity"),
               ("causality", "Causality"), ("outcome", "Outcome"))
OUTLIER_COLUMNS = (("patient_id", "Subject"), ("group", "Arm"), ("term", "Test"), ("date", "Date"),
                   ("value", "Value"), ("unit", "Unit"), ("xuln", "×ULN"), ("grade", "Grade"))
DISCONTINUATION_COLUMNS = (("patient_id", "Subject"), ("arm", "Arm"), ("date", "Date"), ("term", "Preferred term"),
                           ("how", "Recorded as"))


def table(head: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    """An HTML table; cells are escaped text unless they are already markup (``Markup``)."""
    cells = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Markup) else e(str(c))}</td>" for c in row) + "</tr>"
                    for row in rows)
    return (f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head)
            + f"</tr></thead><tbody>{cells}</tbody></table>")


class Markup(str):
    """Text already in HTML."""


def _or_dash(v: Any) -> Any:
    return MISSING if v is None else v


def listing_html(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]], pooled: bool) -> str:
    cols = [(k, label) for k, label in columns if not (pooled and k in ("arm", "group"))]
    if not rows:
        return "<p>None.</p>"
    return table([label for _, label in cols], ([_or_dash(r[k]) for k, _ in cols] for r in rows), "listing")


def _cell(c: dict[str, Any], n: int) -> Markup:
    return Markup(f"{c['subjects']} ({percent(c['subjects'], n)}%) [{c['events']}]<br><small>"
                  f"{e(estimate(c['eair_per_100py'], *c['eair_ci95']))}</small>")


def ae_html(ae: dict[str, Any]) -> str:
    """The overview, then each system organ class and its preferred terms: n (%) [events] and EAIR."""
    groups = ae["groups"]
    head = ["", *(f"{g['name']} (N = {g['subjects']}; {half_up(g['patient_years'], 1)} PY)" for g in groups)]
    rows: list[list[Any]] = []
    for o in ae["overview"]:
        rows.append([OVERVIEW_LABELS.get(o["row"], o["row"]),
                     *(_cell(o["by_group"][g["name"]], g["subjects"]) for g in groups)])
    for soc in ae["socs"]:
        rows.append([Markup(f"<b>{e(soc['soc'])}</b>"),
                     *(_cell(soc["by_group"][g["name"]], g["subjects"]) for g in groups)])
        rows += [[Markup(f"&nbsp;&nbsp;&nbsp;{e(t['term'])}"), *(_cell(t["by_group"][g["name"]], g["subjects"])
                                                                 for g in groups)] for t in soc["terms"]]
    return ("<p>Each cell: subjects with at least one event, n (%) [events]; below, EAIR per 100 patient-years "
            "at risk (95% CI).</p>" + table(head, rows, "ae"))


def _points(x: float | None) -> float | None:
    """A difference of proportions in percentage points."""
    return None if x is None else 100 * x


def comparisons_html(ae: dict[str, Any]) -> str:
    rows = [[OVERVIEW_LABELS.get(c["row"], c["row"]), f"{c['group']} vs {c['control']}",
             estimate(_points(c["risk_difference"]), _points(c["risk_difference_ci95"][0]),
                      _points(c["risk_difference_ci95"][1]), digits=1),
             estimate(c["relative_risk"], *c["relative_risk_ci95"]),
             estimate(c["eair_ratio"], *c["eair_ratio_ci95"]), p_value(c["eair_ratio_p"])]
            for c in ae["comparisons"] if c["level"] == "overview"]
    return table(["Row", "Groups", "Risk difference, % points (95% CI)", "Relative risk (95% CI)",
                  "EAIR ratio (95% CI)", "p (EAIR ratio)"], rows)


def discontinuation_html(ae: dict[str, Any], listing: list[dict[str, Any]]) -> str:
    groups = ae["groups"]
    rows = [[d["term"], *(_n_of(d["by_group"][g["name"]]["subjects"], g["subjects"]) for g in groups)]
            for d in ae["discontinuations"]]
    pooled = len(groups) == 1 and groups[0]["name"] == "All subjects"
    return ((table(["Preferred term", *(f"{g['name']} (N = {g['subjects']})" for g in groups)], rows)
             if rows else "<p>No discontinuation for an adverse event.</p>")
            + "<h3>Listing</h3>" + listing_html(listing, DISCONTINUATION_COLUMNS, pooled))


def _n_of(n: int, total: int) -> str:
    return f"{n} ({percent(n, total)}%)"


def disposition_html(d: dict[str, Any]) -> str:
    return table(["", *d["arms"]], ([r["row"].capitalize() if r["row"] in ("enrolled", "exposed") else
                                     f"  {r['row'].lower()}", *(r[a] for a in d["arms"])] for r in d["rows"])) + (
        f"<p>Enrolled and never exposed (screen failures): {d['never_exposed']}.</p>" if d["never_exposed"] else "")


def _summary(s: dict[str, Any], digits: int = 1) -> str:
    if not s["n"]:
        return MISSING
    sd = f" ({half_up(s['sd'], digits)})" if s["sd"] is not None else ""
    return (f"{half_up(s['mean'], digits)}{sd}; {half_up(s['median'], digits)} "
            f"({half_up(s['min'], digits)}–{half_up(s['max'], digits)}); n = {s['n']}")


def demographics_html(demo: dict[str, Any], doses: bool = True) -> str:
    arms = list(demo)
    sexes = sorted({k for a in arms for k in demo[a]["sex"]})
    rows: list[list[Any]] = [["N", *(demo[a]["N"] for a in arms)]]
    rows += [[f"Sex {s}", *(f"{demo[a]['sex'].get(s, 0)} ({percent(demo[a]['sex'].get(s, 0), demo[a]['N'])}%)"
                            for a in arms)] for s in sexes]
    rows += [["Age, years: mean (SD); median (range)", *(_summary(demo[a]["age_years"]) for a in arms)],
             ["Exposure, days: mean (SD); median (range)", *(_summary(demo[a]["exposure_days"]) for a in arms)]]
    if doses:  # never in a masked report: a dose names its arm
        rows.append(["Doses recorded (subjects)", *("; ".join(f"{k} ({v})" for k, v in demo[a]["doses"].items())
                                                    or MISSING for a in arms)])
    return table(["", *arms], rows)


def km_html(curves: dict[str, dict[str, Any]]) -> str:
    return table(["Group", "N", "Events", "Median days (95% CI not shown)"],
                 ([arm, c["N"], c["events"], half_up(c["median_days"], 0) if c["median_days"] is not None
                   else "not reached"] for arm, c in curves.items()))


def hys_law_html(liver: dict[str, Any]) -> str:
    cases = [p for p in liver["patients"] if p["quadrant"] == "hys_law_range" or p["potential_hys_law"]]
    if not cases:
        return "<p>No patient in the Hy's law range on treatment.</p>"
    return "<h3>Patients in the Hy's law range</h3>" + table(
        ["Subject", "Group", "Peak ALT ×ULN", "Peak AST ×ULN", "Peak bilirubin ×ULN", "Peak ALP ×ULN",
         "Potential Hy's law", "Why"],
        ([p["patient_id"], p["group"], half_up(p["peak_alt_xuln"], 2), half_up(p["peak_ast_xuln"], 2),
          half_up(p["peak_bili_xuln"], 2), half_up(p["peak_alp_xuln"], 2), "yes" if p["potential_hys_law"] else "no",
          p["reason"]] for p in cases))


def shifts_html(shifts: dict[str, Any]) -> str:
    grades = [str(g) for g in shifts["grades"]]
    parts = []
    for m in shifts["matrices"]:
        rows = [[f"baseline {g}", *row] for g, row in zip(grades, m["matrix"], strict=True)]
        parts.append(f"<h3>{e(m['term'])}: {e(m['group'])} (N = {m['N']})</h3>"
                     + table(["", *(f"worst {g}" for g in grades)], rows, "shift"))
    return "".join(parts)


def prepost_html(answer: dict[str, Any]) -> str:
    """The cohort comparison and Table 2 of the before/after design."""
    rows = []
    for c in CATEGORIES:
        b = answer["categories"][c]
        for side in ("pre", "post"):
            s = b[side]
            rows.append([LABELS[c] if side == "pre" else "", side, s["events"], half_up(s["person_months"], 1),
                         half_up(s["monthly_incidence"], 2),
                         estimate(s["incidence_per_person_month"], s["ci95_low"], s["ci95_high"], 3),
                         estimate(b["rate_ratio"], b["rate_ratio_ci95_low"], b["rate_ratio_ci95_high"])
                         if side == "pre" else "",
                         p_value(b["p_exact_conditional"]) if side == "pre" else "",
                         p_value(b["p_fisher_person_months"]) if side == "pre" else ""])
    cohort = table(["Category", "Window", "Events", "Person-months", "Monthly incidence",
                    "Per person-month (95% CI)", "Rate ratio post/pre (95% CI)", "p (exact conditional)",
                    "p (Fisher, person-months)"], rows)
    per_patient = table(["Patient", "Anchor", "Serious pre", "monthly", "Serious post", "monthly",
                         "Moderate-severe pre", "monthly", "Moderate-severe post", "monthly"],
                        ([r["patient_id"], r["anchor_date"],
                          *(x for c in ("serious", "moderate_severe") for side in ("pre", "post")
                            for x in (r[c][side]["events"], half_up(r[c][side]["monthly_incidence"], 2)))]
                         for r in answer["per_patient"]))
    return f"<h3>Cohort comparison</h3>{cohort}<h3>Per patient (Table 2)</h3>{per_patient}"


def _median_range(c: dict[str, Any], when: str) -> str:
    low, high = c[f"{when}_range"]
    return f"{half_up(c[f'{when}_median'], 2)} {interval(low, high, 1)}"


def efficacy_html(eff: dict[str, Any]) -> str:
    parts = []
    for label, variables in eff["comparison"].items():
        rows = [[v, c["n"], _median_range(c, "before"), _median_range(c, "after"), p_value(c["p_wilcoxon"])]
                for v, c in variables.items() if c["n"]]
        parts.append(f"<h3>Baseline against {e(label)}</h3>" + table(
            ["Variable", "n", "Baseline median (range)", f"{label} median (range)", "p (Wilcoxon)"], rows))
    return f"<p>Disease-activity states by the {e(eff['cut_off_set'])} cut-offs.</p>" + "".join(parts)


def changes_html(changes: list[dict[str, Any]]) -> str:
    if not changes:
        return "<p>No SDTM transfer changed anything in this period.</p>"
    return table(["Source", "Study", "Transfer", "Recorded", "Domain", "Change", "Records"],
                 ([c["source"], c["study"], c["transfer"], c["first_recorded_at"][:16], c["domain"], c["change"],
                   c["records"]] for c in changes))
