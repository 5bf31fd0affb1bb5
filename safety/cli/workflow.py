"""Workflow: what people do, each recorded with who and when (signal actions, expedited submissions,
the board's users)."""

from __future__ import annotations

import json
import os
import sys
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

import typer

from safety.cli.wiring import (
    RSIOption,
    StoreOption,
    catch_up,
    err,
    fail,
    open_ledger,
    reference_safety_information,
    signals_model,
    view_db,
)


class SignalAction(StrEnum):
    ack = "ack"
    review = "review"
    close = "close"


def signal(
    action: Annotated[SignalAction, typer.Argument(help="ack, review or close")],
    signal_id: Annotated[str, typer.Argument(metavar="ID", help="the signal's id")],
    by: Annotated[str, typer.Option("--by", help="who acts (recorded in the audit trail)")],
    note: Annotated[str, typer.Option(help="what was seen or decided (needed to close)")] = "",
    reason: Annotated[str | None, typer.Option(help="for close: a reason that fits the signal's kind, e.g. "
                                                    "'confirmed MAS' (docs/board.md lists them)")] = None,
    store: StoreOption = None,
) -> None:
    """Acknowledge, review or close a signal; recorded as an event with the user and the note."""
    from events.workflow import act_on_signal
    from projections.signal_queries import query_signals

    ledger = open_ledger(store)
    model = signals_model()
    found = query_signals(view_db(ledger, model), signal_id=signal_id)
    if not found:
        raise fail(f"no signal with id {signal_id}: list them with safety-monitor signals")
    try:
        status = act_on_signal(ledger, signal_id, action.value, by, note, reason, kind=found[0]["kind"])
    except ValueError as exc:
        raise fail(str(exc)) from None
    catch_up(ledger, model)
    typer.echo(json.dumps({"id": signal_id, "status": status, "by": by}))


def expedited_submit(
    case: Annotated[str, typer.Argument(metavar="CASE", help="the case id (safety-monitor expedited lists them)")],
    by: Annotated[str, typer.Option("--by", help="who submitted the report")],
    on: Annotated[str, typer.Option("--on", help="the date it was submitted, YYYY-MM-DD")],
    authority: Annotated[str, typer.Option("--authority", help="where it went: EMA, MHRA, FDA ...")],
    rsi: RSIOption = None,
    store: StoreOption = None,
) -> None:
    """Record the submission of a case's expedited report (an audited ledger event)."""
    from events.workflow import submit_expedited
    from projections.expedited import ExpeditedModel, expedited_cases

    ledger = open_ledger(store)
    cases = expedited_cases(view_db(ledger, ExpeditedModel()), reference_safety_information(rsi)[0])
    known = {c["case"]: c for c in cases}
    if case not in known:
        raise fail(f"no case {case}: list them with safety-monitor expedited")
    try:
        submit_expedited(ledger, case, by, on, authority, aware_at=datetime.fromisoformat(known[case]["aware_at"]))
    except ValueError as exc:
        raise fail(str(exc)) from None
    late = (date.fromisoformat(on) - datetime.fromisoformat(known[case]["due_at"]).date()).days
    typer.echo(json.dumps({"case": case, "status": "submitted_late" if late > 0 else "submitted", "by": by, "on": on,
                           "authority": authority, "days_late": late if late > 0 else None}))


def users_add(
    name: Annotated[str, typer.Argument(help="the user's sign-in name")],
    role: Annotated[str, typer.Option(help="safety_physician, dsmb or admin")],
    store: StoreOption = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
) -> None:
    """Add a user (or set a new password and role); the password is asked for, never echoed."""
    from dashboard.auth import UserStore, users_path
    from events.store import Store
    from events.workflow import record_audit

    resolved = Store.resolve(store)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        UserStore(users_path(resolved)).add(name, role, password)
    except ValueError as exc:
        raise fail(str(exc)) from None
    record_audit(open_ledger(store, create=True), os.environ.get("USER", "cli"), "user change", f"{name} as {role}")
    err.print(f"{name} saved as {role} in {users_path(resolved)}")


def users_list(store: StoreOption = None) -> None:
    """List the board's users and roles."""
    from dashboard.auth import UserStore, users_path
    from events.store import Store

    for user in UserStore(users_path(Store.resolve(store))).list():
        typer.echo(f"{user.name}\t{user.role}")
