"""Renderings for the terminal and CSV: the incidence answer and the adverse-event tables (the DSMB's
report is ``projections.dsmb``). Numbers print as ``safety.formatting`` says: half up, p < 0.001,
clean intervals."""

from __future__ import annotations

import csv
import io
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from rich.table import Table

from safety.formatting import estimate, half_up, p_value, percent
from safety.incidence import CATEGORIES

LABELS = {"serious": "Serious adverse events", "moderate_severe": "Moderate-severe adverse events",
          "all": "All adverse events"}


def software_version() -> str:
    try:
        return version("safety-monitor")
    except PackageNotFoundError:
        return "unknown"


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
                half_up(s["person_months"], 1), half_up(s["monthly_incidence"], 2),
                estimate(s["incidence_per_person_month"], s["ci95_low"], s["ci95_high"], 3),
                estimate(b["rate_ratio"], b["rate_ratio_ci95_low"], b["rate_ratio_ci95_high"]) if first else "",
                p_value(b["p_exact_conditional"]) if first else "",
                p_value(b["p_fisher_person_months"]) if first else "",
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


def _ae_lines(ae: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(level, soc, row, by_group) for every line of the tables: the overview, then each SOC and its terms."""
    lines = [("overview", "", o["row"], o["by_group"]) for o in ae["overview"]]
    for soc in ae["socs"]:
        lines.append(("soc", soc["soc"], soc["soc"], soc["by_group"]))
        lines += [("term", soc["soc"], t["term"], t["by_group"]) for t in soc["terms"]]
    return lines


def _n_percent(c: dict[str, Any], n: int) -> str:
    return f"{c['subjects']} ({percent(c['subjects'], n)}%)"


def _rate(c: dict[str, Any], key: str = "eair") -> str:
    return estimate(c[f"{key}_per_100py"], *c[f"{key}_ci95"])


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
                line[f"{g['name']} (N = {g['subjects']}): n (%)"] = _n_percent(c, g["subjects"])
                line[f"{g['name']}: EAIR /100 PY"] = _rate(c)
            else:
                line.update({f"{g['name']} {k}": v for k, v in c.items() if not k.endswith("ci95")})
                for k in ("eair", "event_rate"):
                    line[f"{g['name']} {k}_ci95_low"], line[f"{g['name']} {k}_ci95_high"] = c[f"{k}_ci95"]
                line[f"{g['name']} N"] = g["subjects"]
        out.append(line)
    return out
