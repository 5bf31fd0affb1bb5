"""What an operator is told (issue 23, findings 8 and 11): a store that does not exist is refused, not
created empty; a missing PostgreSQL database is named at once; extreme dates, rules and RSI files are
refused with the field named; and the user's own text is printed as written, never read as markup."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safety.cli import app, demo_feed_path
from tests.conftest import PG_URL, pg_problem

RULES = Path(__file__).resolve().parent.parent / "safety"


def invoke(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def clean_error(result: object, *words: str) -> str:
    assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
    assert result.exception is None or isinstance(result.exception, SystemExit)  # type: ignore[attr-defined]
    output = result.output  # type: ignore[attr-defined]
    assert "Traceback" not in output and all(w in output for w in words), output
    return output  # type: ignore[no-any-return]


@pytest.fixture
def demo_url(sqlite_url: str) -> str:
    assert invoke("ingest", str(demo_feed_path()), "--store", sqlite_url).exit_code == 0  # type: ignore[attr-defined]
    return sqlite_url


def test_a_mistyped_store_is_refused_and_nothing_is_created(tmp_path: Path):
    missing = tmp_path / "typo" / "ledgr.db"
    for command in (["signals"], ["incidence"], ["status"], ["quarantine"], ["ae-table"]):
        clean_error(invoke(*command, "--store", f"sqlite:///{missing}"), "no store at", "ledgr.db", "--store")
    assert not missing.parent.exists()
    created = invoke("ingest", "-", "--store", f"sqlite:///{missing}")
    assert created.exit_code == 0 and "creating a new store" in created.output  # type: ignore[attr-defined]


def test_a_missing_postgresql_database_is_named_at_once():
    if pg_problem():
        pytest.skip(f"PostgreSQL not reachable: {pg_problem()}")
    base = PG_URL.rsplit("/", 1)[0]
    started = time.monotonic()
    result = invoke("signals", "--store", f"{base}/no_such_database_here")
    clean_error(result, "no database 'no_such_database_here'", "createdb")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--data-cut", "9999-12-31", ("--data-cut 9999-12-31", "outside 1900-01-01 to 2999-12-31")),
    ("--data-cut", "0001-01-01", ("--data-cut 0001-01-01", "outside")),
    ("--as-of", "0001-01-01T00:00:00+01:00", ("--as-of", "outside")),
    ("--as-of", "9999-12-31T23:59:59-01:00", ("--as-of", "outside")),
])
def test_extreme_dates_are_refused_with_the_option_named(demo_url: str, option: str, value: str,
                                                         words: tuple[str, ...]):
    clean_error(invoke("incidence", "--store", demo_url, option, value), *words)


def test_a_message_dated_in_year_one_is_quarantined_not_a_traceback(sqlite_url: str, tmp_path: Path):
    message = {"schema_version": 1, "message_id": "m1", "source": "reg", "patient_id": "P1", "type": "lab_result",
               "occurred_at": "0001-01-01T00:00:00+01:00", "data": {"analyte": "WBC", "value": 5, "unit": "10^9/L"}}
    path = tmp_path / "feed.ndjson"
    path.write_text(json.dumps(message) + "\n")
    result = invoke("ingest", str(path), "--store", sqlite_url)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert json.loads(result.stdout.splitlines()[-1])["quarantined"] == 1  # type: ignore[attr-defined]


def _rules(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = (RULES / name).read_text()
    assert old in text
    path = tmp_path / f"changed-{name}"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(("name", "old", "new", "words"), [
    ("mas_rules.toml", "look_back_days = 14", "look_back_days = 1e308", ("look_back_days", "at most 3660")),
    ("mas_rules.toml", "relative = 0.25", "relative = -0.25", ("rules.wbc_falling.relative", "above 0")),
    ("mas_rules.toml", "absolute = 1.0", "absolute = nan", ("rules.wbc_falling.absolute", "finite")),
    ("mas_rules.toml", "watch = 2 ", "watch = 4 ", ("levels.watch (4) must be below levels.warning (3)",)),
    ("mas_rules.toml", "crp_high_mg_l = 20.0", "crp_high_mg_l = inf", ("crp_high_mg_l", "finite")),
    ("liver_rules.toml", "watch_xuln = 3.0", "watch_xuln = 8.0", ("watch_xuln (8) must be below",)),
    ("liver_rules.toml", "window_days = 30", "window_days = -1", ("hys_law.window_days", "above 0")),
])
def test_a_rules_file_with_an_impossible_value_is_refused_with_the_field_named(
        demo_url: str, tmp_path: Path, name: str, old: str, new: str, words: tuple[str, ...]):
    path = _rules(tmp_path, name, old, new)
    clean_error(invoke("signals", "--rules", str(path), "--diff", "--store", demo_url), "--rules", *words)


@pytest.mark.parametrize(("text", "words"), [
    ('[[product]]\nname = "MSC infusion"\nexpected = "Fever"\n', ("expected must be a list",)),
    ('[[product]]\nname = "MSC infusion"\nexpcted = ["Fever"]\n', ("unknown key 'expcted'",)),
    ('[[products]]\nname = "MSC infusion"\n', ("unknown key 'products'", "[[product]]")),
    ("[[product]]\nname = 7\n", ("name must be",)),
])
def test_an_rsi_file_with_unknown_keys_or_wrong_types_is_refused(demo_url: str, tmp_path: Path, text: str,
                                                                 words: tuple[str, ...]):
    rsi = tmp_path / "rsi.toml"
    rsi.write_text(text)
    clean_error(invoke("expedited", "--rsi", str(rsi), "--store", demo_url), *words)


def test_the_users_text_is_printed_as_written(demo_url: str, tmp_path: Path):
    odd = tmp_path / "[/bold]" / "rsi[red].toml"
    odd.parent.mkdir(parents=True)
    odd.write_text('[[products]]\nname = "x"\n')
    output = clean_error(invoke("expedited", "--rsi", str(odd), "--store", demo_url))
    assert "[/bold]/rsi[red].toml" in output and "[[product]]" in output
