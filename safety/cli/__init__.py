"""The ``safety-monitor`` command line: one module per command family, wired in ``wiring``.

- ``feed``: ingest, import-sdtm, consume, publish, quarantine, status, generate, history;
- ``questions``: incidence, report, ae-table, edish, lab-shifts, efficacy, signals, expedited;
- ``detection``: disproportionality, surveillance;
- ``workflow``: signal, expedited submit, users;
- ``operations``: project, rebuild, rekey, notify, demo, dashboard, schema.

A command parses its options, calls one service function and prints. Exit codes: 0 the command did
its work (for ``ingest``: every line was judged, quarantined ones included); 1 the store or an input
could not be used (the message says which and why); 2 the command line was wrong, or (``import-sdtm``)
a transfer was refused with nothing stored changed; 3 (``notify --once``) a delivery failed.
"""

from __future__ import annotations

import typer

from events.replay import in_clinical_order, replay_messages
from safety.cli import detection, feed, operations, questions, workflow
from safety.cli.wiring import demo_feed_path, pilot_path, read_models

app = typer.Typer(
    help="Event-sourced pharmacovigilance safety monitor for paediatric rheumatology.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
users_app = typer.Typer(help="Local users of the board (Argon2-hashed passwords in a file).", no_args_is_help=True)
expedited_app = typer.Typer(help="The expedited-reporting clock of SUSARs (7 or 15 calendar days).")

# every command, in the order --help lists them
app.command()(operations.schema)
app.command()(feed.ingest)
app.command()(feed.quarantine)
app.command()(feed.history)
app.command()(operations.demo)
app.add_typer(users_app, name="users")
users_app.command("add")(workflow.users_add)
users_app.command("list")(workflow.users_list)
app.command()(operations.dashboard)
app.command(name="incidence")(questions.incidence_command)
app.command()(questions.report)
app.add_typer(expedited_app, name="expedited")
expedited_app.callback(invoke_without_command=True)(questions.expedited_cases_command)
expedited_app.command("submit")(workflow.expedited_submit)
app.command(name="import-sdtm")(feed.import_sdtm)
app.command(name="efficacy")(questions.efficacy_command)
app.command(name="signals")(questions.signals_command)
app.command(name="edish")(questions.edish_command)
app.command(name="lab-shifts")(questions.lab_shifts_command)
app.command(name="ae-table")(questions.ae_table_command)
app.command(name="disproportionality")(detection.disproportionality_command)
app.command(name="surveillance")(detection.surveillance_command)
app.command()(workflow.signal)
app.command()(operations.project)
app.command()(feed.generate)
app.command()(feed.consume)
app.command()(feed.publish)
app.command()(feed.status)
app.command()(operations.notify)
app.command()(operations.rekey)
app.command()(operations.rebuild)


def main() -> None:
    app()


__all__ = ["app", "demo_feed_path", "in_clinical_order", "main", "pilot_path", "read_models", "replay_messages"]
