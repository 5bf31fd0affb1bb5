"""Signal detection: what nobody anticipated (disproportionality of every drug-event pair) and what is
watched on purpose (sequential surveillance of a plan's pairs)."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from safety.cli.questions import rows_out
from safety.cli.wiring import (
    PLAN_ENV,
    AsOfOption,
    DataCutOption,
    Format,
    ReportFormat,
    StoreOption,
    as_of_time,
    data_cut_time,
    fail,
    open_ledger,
    out_console,
    signals_model,
    surveillance_plan,
    view_db,
)


class Level(StrEnum):
    pt = "pt"
    soc = "soc"


def disproportionality_command(
    level: Annotated[Level, typer.Option("--level", help="preferred term (pt) or system organ class (soc)")] = Level.pt,
    lag_days: Annotated[int, typer.Option(min=0, max=3650, help="days after a course's stop that still count")] = 30,
    min_count: Annotated[int, typer.Option(min=1, help="list pairs with at least this many events")] = 1,
    as_of: AsOfOption = None,
    data_cut: DataCutOption = None,
    format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
    store: StoreOption = None,
) -> None:
    """Disproportionality of every drug-event pair: PRR, ROR, IC and EBGM (safety/detection_rules.toml)."""
    from projections.detection import disproportionality
    from projections.exposure import ExposureModel

    answer = disproportionality(view_db(open_ledger(store), ExposureModel()), level=level.value, lag_days=lag_days,
                                min_count=min_count, as_of=as_of_time(as_of), data_cut=data_cut_time(data_cut))
    rows = [{**{k: p[k] for k in ("drug", "term", "a", "expected", "prr", "ror", "ic", "ic025", "ebgm", "eb05")},
             "signal": ",".join(m for m, on in p["signal"].items() if on)} for p in answer["pairs"]]
    columns = ["drug", "term", "a", "expected", "prr", "ror", "ic", "ic025", "ebgm", "eb05", "signal"]
    rows_out(answer, rows, columns, format,
             f"Disproportionality by {level.value} (N = {answer['N']} pairs; fingerprint {answer['fingerprint']})")


def surveillance_command(
    plan: Annotated[Path | None, typer.Option("--plan", help=f"the plan (TOML; default ${PLAN_ENV})")] = None,
    as_of: AsOfOption = None,
    data_cut: DataCutOption = None,
    format: Annotated[Format, typer.Option("--format")] = Format.table,
    store: StoreOption = None,
) -> None:
    """Sequential surveillance (Poisson MaxSPRT, exact critical values) of each pair of a plan."""
    from projections.detection import surveillance
    from projections.exposure import ExposureModel
    from safety.rules_file import RulesError

    chosen = plan or (Path(os.environ[PLAN_ENV]) if os.environ.get(PLAN_ENV) else None)
    if chosen is None:
        raise fail(f"give --plan FILE (or set {PLAN_ENV}): a TOML file of [[pair]] tables (docs/signal-detection.md)")
    try:
        text = chosen.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"--plan {chosen}: {exc}") from None
    ledger = open_ledger(store)
    live = view_db(ledger, signals_model()) if not as_of and not data_cut and text == surveillance_plan() else None
    try:
        answer = surveillance(view_db(ledger, ExposureModel()), text, as_of=as_of_time(as_of),
                              data_cut=data_cut_time(data_cut), live=live)
    except (RulesError, ValueError) as exc:
        err_exit(f"--plan {chosen}: {exc}")
    if format is Format.json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    from rich.table import Table

    table = Table("pair", "drug", "status", "CV", "observed", "expected", "LLR", "signalled on", "ended on",
                  title=f"Surveillance (plan {answer['plan'][:12]}, fingerprint {answer['fingerprint']})")
    for p in answer["pairs"]:
        table.add_row(p["name"], p["drug"], p["status"], f"{p['critical_value']:.4f}", str(p["observed"]),
                      f"{p['expected']:.2f}", f"{p['llr']:.3f}", p["signalled_on"] or "", p["ended_on"] or "")
    out_console().print(table)


def err_exit(message: str) -> Any:
    """A plan or rules file that cannot be used: exit 2 (the input is wrong), nothing stored changes."""
    from safety.cli.wiring import err

    err.print(f"refused: {message}", style="red")
    raise typer.Exit(2)
