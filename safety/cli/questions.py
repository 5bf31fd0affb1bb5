"""Questions: the answers a safety physician or a DSMB asks of the read models (incidence, the DSMB
report, adverse-event tables, liver, efficacy, signals, SUSAR cases)."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from safety.cli.wiring import (
    AnchorOption,
    AsOfOption,
    DataCutOption,
    Format,
    PostOption,
    PreOption,
    ReportFormat,
    RSIOption,
    StoreOption,
    as_of_time,
    data_cut_time,
    err,
    fail,
    open_ledger,
    out_console,
    progress_steps,
    reference_safety_information,
    report_sources,
    signals_model,
    view_db,
)


class ArmBasis(StrEnum):
    actual = "actual"
    planned = "planned"


ARM_HELP = ("with --by arm: the actual arm (the treatment started; SDTM ACTARM, the safety convention) or the "
            "planned one (the randomised arm; SDTM ARM)")


def _incidence_answer(
    ledger: Any, anchor: str, pre_months: int, post_months: int, as_of: str | None, data_cut: str | None
) -> dict[str, Any]:
    from projections.incidence import IncidenceModel, incidence
    from safety.incidence import Settings

    settings = Settings(anchor, pre_months, post_months, data_cut_time(data_cut))
    return incidence(view_db(ledger, IncidenceModel()), settings, as_of_time(as_of))


def incidence_command(
    store: StoreOption = None,
    anchor: AnchorOption = "MSC infusion",
    pre_months: PreOption = 3,
    post_months: PostOption = 12,
    as_of: AsOfOption = None,
    data_cut: DataCutOption = None,
    format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
) -> None:
    """Monthly incidence before and after the anchor intervention, with exact tests (Table 2)."""
    from projections.report import incidence_csv, incidence_table

    answer = _incidence_answer(open_ledger(store), anchor, pre_months, post_months, as_of, data_cut)
    if format is ReportFormat.json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
    elif format is ReportFormat.csv:
        typer.echo(incidence_csv(answer), nl=False)
    else:
        out_console().print(incidence_table(answer))


class Session(StrEnum):
    open = "open"
    closed = "closed"


def report(
    out: Annotated[Path, typer.Option("--out", help="the file to write: .pdf for a PDF, else HTML")],
    store: StoreOption = None,
    session: Annotated[Session, typer.Option("--session", help="open: pooled, no arm, no comparison (sponsor and "
                                                               "investigators); closed: by arm (the board alone)")]
    = Session.closed,
    arm: Annotated[ArmBasis, typer.Option("--arm", help=ARM_HELP)] = ArmBasis.actual,
    mask_arms: Annotated[bool, typer.Option("--mask-arms", help="closed session: name the arms Group A, B, C")] = False,
    mask_key: Annotated[Path | None, typer.Option("--mask-key", help="with --mask-arms: where the key (group -> "
                                                                     "arm) is written; never into the report")] = None,
    km_term: Annotated[str | None, typer.Option("--km-term", help="the preferred term of the time-to-first-event "
                                                                   "curve (default: the most frequent)")] = None,
    anchor: AnchorOption = "MSC infusion",
    pre_months: PreOption = 3,
    post_months: PostOption = 12,
    as_of: AsOfOption = None,
    data_cut: DataCutOption = None,
    changes_since: Annotated[
        str | None, typer.Option(help="list what SDTM transfers changed since this time (ISO 8601), e.g. the last "
                                      "review")
    ] = None,
) -> None:
    """Write the DSMB report (open or closed session) as one self-contained HTML file or a PDF."""
    from datetime import UTC, datetime

    from events.workflow import record_audit
    from projections.dsmb import ReportOptions, write_report

    ledger = open_ledger(store)
    options = ReportOptions(session.value, arm.value, mask_arms, anchor, pre_months, post_months, as_of_time(as_of),
                            data_cut_time(data_cut), as_of_time(changes_since), km_term)
    with progress_steps() as steps:
        advance = steps("report", 1)
        try:
            written = write_report(report_sources(ledger), options, out, mask_key, datetime.now(UTC))
        except (ValueError, OSError) as exc:
            raise fail(str(exc)) from None
        advance(1)
    record_audit(ledger, os.environ.get("USER", "cli"), "download",
                 f"DSMB report ({written.banner}) {written.fingerprint} to {out}")
    err.print(f"report written to {out} ({written.banner}; fingerprint {written.fingerprint})"
              + (f"; the masking key to {mask_key}" if written.mask_key else ""))


def efficacy_command(
    store: StoreOption = None,
    anchor: AnchorOption = "MSC infusion",
    at_week: Annotated[int, typer.Option(help="the week compared with baseline (week 0)")] = 8,
    cut_offs: Annotated[
        str, typer.Option(help="disease-activity cut-off set: 'ACR 2021' or 'Consolaro 2012'")
    ] = "ACR 2021",
    format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
) -> None:
    """Disease activity per visit (JADAS, cJADAS), ACR-Pedi, the repeat-infusion rule, and paired pre/post tests."""
    from projections.efficacy import EfficacyModel, efficacy
    from safety.efficacy import CUT_OFF_SETS

    if cut_offs not in CUT_OFF_SETS:
        raise fail(f"--cut-offs {cut_offs!r}: use one of {', '.join(CUT_OFF_SETS)}")
    db = view_db(open_ledger(store), EfficacyModel())
    answer = efficacy(db, anchor=anchor, at_week=at_week, cut_off_set=cut_offs)
    if format is ReportFormat.json:
        typer.echo(json.dumps(answer, indent=2))
        return
    if format is ReportFormat.csv:
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["source", "patient_id", "date", "week", "jadas71", "jadas10", "cjadas10", "marker",
                         "state_jadas10", "state_cjadas10", "cut_off_set", "acr_pedi_baseline", "flare"])
        for p in answer["patients"]:
            for v in p["visits"]:
                writer.writerow([p["source"], p["patient_id"], v["date"], v["week"], v["jadas71"], v["jadas10"],
                                 v["cjadas10"], v["marker"], v["state_jadas10"], v["state_cjadas10"],
                                 v["cut_off_set"], v["acr_pedi_baseline"], v["flare"]])
        typer.echo(out.getvalue(), nl=False)
        return
    table = Table("variable", "baseline median (range)", f"week {at_week} median (range)", "n", "p (Wilcoxon)",
                  title=f"Baseline against week {at_week}")
    for variable, c in answer["comparison"][f"week {at_week}"].items():
        table.add_row(variable, f"{c['before_median']:g} ({c['before_range'][0]:g}-{c['before_range'][1]:g})",
                      f"{c['after_median']:g} ({c['after_range'][0]:g}-{c['after_range'][1]:g})", str(c["n"]),
                      "–" if c["p_wilcoxon"] is None else f"{c['p_wilcoxon']:.3f}")
    console = out_console()
    console.print(table)
    from safety.efficacy import WILCOXON_METHOD

    console.print(f"p-values: {WILCOXON_METHOD}")
    decisions = Table("patient", "week", "repeat infusion", "why", title="Repeat-infusion rule")
    for p in answer["patients"]:
        for d in p["repeat_infusion"]:
            decisions.add_row(p["patient_id"], str(d["week"]), "allowed" if d["allowed"] else "no",
                              "; ".join(d["reasons"]))
        for dev in p["deviations"]:
            decisions.add_row(p["patient_id"], dev["date"], "DEVIATION", dev["what"])
    console.print(decisions)


def signals_command(
    store: StoreOption = None,
    status: Annotated[str | None, typer.Option(help="open, acknowledged, under_review or closed")] = None,
    patient: Annotated[str | None, typer.Option(help="a patient_id")] = None,
    source: Annotated[str | None, typer.Option(help="a source")] = None,
    kind: Annotated[str | None, typer.Option(help="mas_trend, mas_criteria_2016, ms_score, ...")] = None,
    as_of: Annotated[
        str | None,
        typer.Option(help="knowledge time (ISO 8601): signals first raised by then, with the status they had then"),
    ] = None,
    rules: Annotated[
        Path | None, typer.Option("--rules", help="with --diff: a MAS or liver rules file (TOML) to compare with the "
                                                  "live rules")
    ] = None,
    diff: Annotated[bool, typer.Option("--diff", help="report what --rules would add, remove or change")] = False,
    format: Annotated[Format, typer.Option("--format")] = Format.table,
) -> None:
    """Safety signals: open first, by level and time, each with its evidence.

    With --rules FILE --diff: evaluate the whole ledger under another rules file and list the signals it
    would add, remove, or raise at another level or time, without touching the live read models."""
    from events.domain import SIGNAL_STATUSES
    from projections.signal_queries import query_signals

    if diff or rules is not None:
        if not (diff and rules is not None):
            raise fail("give --rules FILE with --diff")
        _signals_diff(store, rules, format)
        return

    if status is not None and status not in SIGNAL_STATUSES:
        raise fail(f"--status {status!r}: use {', '.join(SIGNAL_STATUSES)}")
    rows = query_signals(view_db(open_ledger(store), signals_model()), status=status, patient=patient, source=source,
                         kind=kind, as_of=as_of_time(as_of))
    if format is Format.json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("id", "patient", "arm", "kind", "level", "priority", "status", "occurred_at", "evidence")
    for r in rows:
        evidence = "; ".join(
            f"{e['analyte']} {e['previous']:g}->{e['current']:g} {e['unit']}" if "analyte" in e else e.get("term", "")
            for e in r["evidence"]
        )
        table.add_row(r["id"], f"{r['source']}/{r['patient_id']}" if r["patient_id"] else "registry-wide",
                      r["arm"] or "", r["kind"], r["level"], r["priority"],
                      r["status"], r["occurred_at"][:16], evidence)
    out_console().print(table)


class GroupBy(StrEnum):
    arm = "arm"
    drug = "drug"


def edish_command(
    by: Annotated[GroupBy, typer.Option("--by", help="group patients by arm or by each drug started")] = GroupBy.arm,
    as_of: AsOfOption = None,
    all_values: Annotated[
        bool, typer.Option("--all-values", help="peaks over every value, screening included (default: on "
                                                "treatment, from each patient's first exposure)")
    ] = False,
    arm: Annotated[ArmBasis, typer.Option("--arm", help=ARM_HELP)] = ArmBasis.actual,
    format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
    store: StoreOption = None,
) -> None:
    """eDISH: each patient's peak ALT, AST, bilirubin and ALP as multiples of the ULN, the quadrant and
    potential Hy's law (FDA 2009 DILI guidance; thresholds in safety/liver_rules.toml)."""
    from projections.liver import edish_view

    model = signals_model()
    answer = edish_view(view_db(open_ledger(store), model), model.liver, by=by.value, as_of=as_of_time(as_of),
                        after_first_exposure=not all_values, arm_basis=arm.value)
    columns = ["source", "patient_id", "group", "peak_alt_xuln", "peak_ast_xuln", "peak_bili_xuln",
               "peak_alp_xuln", "quadrant", "potential_hys_law", "reason"]
    rows_out(answer, answer["patients"], columns, format,
             f"eDISH by {by.value} ({'every value' if all_values else 'on treatment'}; {answer['rules_version']})")


def rows_out(answer: dict[str, Any], rows: list[dict[str, Any]], columns: list[str], format: ReportFormat,
              title: str) -> None:
    """An answer as JSON (whole), CSV (its rows) or a table (its rows)."""
    if format is ReportFormat.json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
    elif format is ReportFormat.csv:
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: r[c] for c in columns} for r in rows)
        typer.echo(buffer.getvalue(), nl=False)
    else:
        table = Table(*columns, title=title)
        for r in rows:
            table.add_row(*("" if r[c] is None else f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c])
                            for c in columns))
        out_console().print(table)


def lab_shifts_command(
    by: Annotated[GroupBy, typer.Option("--by", help="group patients by arm or by each drug started")] = GroupBy.arm,
    as_of: AsOfOption = None,
    arm: Annotated[ArmBasis, typer.Option("--arm", help=ARM_HELP)] = ArmBasis.actual,
    format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
    store: StoreOption = None,
) -> None:
    """CTCAE v5.0 shift tables: per test and group, N and the exposed subjects by baseline grade and worst
    post-baseline grade (missing counted), both graded on one scale."""
    from projections.liver import lab_shifts

    answer = lab_shifts(view_db(open_ledger(store), signals_model()), by=by.value, as_of=as_of_time(as_of),
                        arm_basis=arm.value)
    columns = ["test", "term", "group", "N", "baseline_grade", "worst_grade", "patients"]
    rows_out(answer, answer["rows"], columns, format,
             f"{answer['version']} shifts by {by.value} (baseline: {answer['baseline']}; one scale: the ULN)")


class TableBy(StrEnum):
    arm = "arm"
    drug = "drug"
    drug_class = "drug_class"


def ae_table_answer(ledger: Any, by: str, control: str | None, lag_days: int | None, min_percent: float,
                    as_of: str | None, data_cut: str | None, arm_basis: str = "actual") -> dict[str, Any]:
    """The treatment-emergent adverse-event tables, with the read model brought up to date first."""
    from projections.exposure import ExposureModel, Settings, ae_tables

    settings = Settings(by, control, lag_days, min_percent, data_cut_time(data_cut), arm_basis)
    try:
        return ae_tables(view_db(ledger, ExposureModel()), settings, as_of_time(as_of))
    except ValueError as exc:
        raise fail(str(exc)) from None


def ae_table_command(
    by: Annotated[TableBy, typer.Option("--by", help="groups: the (actual) arm, each drug, or each drug class "
                                                     "a subject was exposed to")] = TableBy.arm,
    control: Annotated[str | None, typer.Option(help="the control group of the comparisons (default: the one "
                                                     "group named like placebo, if any)")] = None,
    lag_days: Annotated[int | None, typer.Option(min=0, max=3650, help="days after the last exposure that still "
                                                 "count (by arm default: no upper bound; by drug: 30)")] = None,
    min_percent: Annotated[float, typer.Option(min=0, max=100, help="show terms reaching this percentage of "
                                                                   "subjects in at least one group")] = 0.0,
    as_of: AsOfOption = None,
    data_cut: DataCutOption = None,
    arm: Annotated[ArmBasis | None, typer.Option("--arm", help=ARM_HELP)] = None,
    format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
    store: StoreOption = None,
) -> None:
    """Treatment-emergent adverse events by arm or drug: subject incidence, exposure-adjusted rates
    (Garwood intervals) and comparisons with the control (Miettinen-Nurminen, exact conditional)."""
    from projections.report import ae_rows

    if arm is not None and by is not TableBy.arm:
        raise fail("--arm: the arm basis is for --by arm")
    basis = (arm or ArmBasis.actual).value
    answer = ae_table_answer(open_ledger(store), by.value, control, lag_days, min_percent, as_of, data_cut, basis)
    if format is ReportFormat.json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    rows = ae_rows(answer, compact=format is ReportFormat.table)
    columns = list(rows[0]) if rows else ["level", "soc", "row"]
    rows_out(answer, rows, columns, format,
             f"Treatment-emergent adverse events by {basis + ' ' if by is TableBy.arm else ''}{by.value} "
             f"(fingerprint {answer['fingerprint']}; control {answer['control'] or 'none'}; cells n (%) [events])")


def _signals_diff(store: str | None, rules: Path, format: Format) -> None:
    from projections.rules_diff import diff_rules, rules_from_text

    model = signals_model()
    try:
        config, liver = rules_from_text(rules.read_text(encoding="utf-8"), model)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise fail(f"--rules {rules}: {exc}: compare with safety/mas_rules.toml or safety/liver_rules.toml") from None
    answer = diff_rules(view_db(open_ledger(store), model), config, liver)
    if format is Format.json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    table = Table("change", "id", "patient", "kind", "live", "with --rules",
                  title=f"{rules.name}: {answer['unchanged']} signals unchanged")
    for change in ("added", "removed", "changed"):
        for r in answer[change]:
            shown = ["" if r[k] is None else f"{r[k]['level']} {r[k]['occurred_at'][:10]}" for k in ("live", "other")]
            table.add_row(change, r["id"], f"{r['source']}/{r['patient_id']}", r["kind"], *shown)
    out_console().print(table)


def expedited_cases_command(
    ctx: typer.Context,
    as_of: AsOfOption = None,
    rsi: RSIOption = None,
    format: Annotated[Format, typer.Option("--format")] = Format.table,
    store: StoreOption = None,
) -> None:
    """List SUSAR cases with their awareness time, due date and status (open, overdue, submitted, closed)."""
    if ctx.invoked_subcommand is not None:
        return
    from projections.expedited import ExpeditedModel, expedited_cases

    reference, given = reference_safety_information(rsi)
    if not given:
        err.print("no reference safety information (--rsi or SAFETY_MONITOR_RSI): every serious related event is "
                  "taken as unexpected")
    cases = expedited_cases(view_db(open_ledger(store), ExpeditedModel()), reference, as_of_time(as_of))
    if format is Format.json:
        typer.echo(json.dumps({"cases": cases}, indent=2, ensure_ascii=False))
        return
    table = Table("case", "patient", "term", "7-day", "aware", "due", "days left", "status")
    for c in cases:
        left = "" if c["status"] in ("submitted", "submitted_late", "closed") else f"{c['days_left']:.1f}"
        table.add_row(c["case"], f"{c['source']}/{c['patient_id']}", c["term"],
                      "yes" if c["fatal_or_life_threatening"] else "", c["aware_at"][:16], c["due_at"][:16], left,
                      c["status"] + (f" ({c['closed_reason']})" if c["closed_reason"] else "")
                      + (f" ({c['days_late']} days late)" if c["days_late"] else "")
                      + (f": {c['submitted']}" if c["submitted"] else ""))
    out_console().print(table)
