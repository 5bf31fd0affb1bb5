"""Structural fuzzing of SDTM transfers (issue 23, finding 7): valid Dataset-JSON, NDJSON and XPORT files,
mutated byte by byte and shape by shape (cut, spliced, gzipped and cut, nested deep, values swapped for
arrays, objects, huge numbers, lone surrogates, Latin-1 bytes), are either taken or refused cleanly:
exit 0 or 2, never a traceback, and a refusal leaves the store exactly as it was.

``SAFETY_MONITOR_FUZZ_EXAMPLES`` sets the examples per format (the suite runs a few hundred in all; the
campaign in RELIABILITY.md ran more)."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from events.ledger import Ledger
from events.store import Store
from safety.cli import app
from tests.reliability import record
from tests.test_sdtm import rows_of, write_dataset_json_11, write_xpt

EXAMPLES = int(os.environ.get("SAFETY_MONITOR_FUZZ_EXAMPLES", "80"))
SOURCE = "fuzz"


@pytest.fixture(scope="module")
def small() -> dict[str, list[dict[str, Any]]]:
    dm = rows_of("dm")[:12]
    subjects = {r["USUBJID"] for r in dm}
    ae = [r for r in rows_of("ae") if r["USUBJID"] in subjects][:40]
    return {"DM": dm, "AE": ae}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, small: dict[str, list[dict[str, Any]]]) -> tuple[str, Path]:
    """A store holding the small study, and a folder with its AE in every format."""
    root = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{root}/ledger.db"
    first = root / "t1"
    first.mkdir()
    write_dataset_json_11(small["DM"], "DM", first / "dm.json", ndjson=False)
    write_dataset_json_11(small["AE"], "AE", first / "ae.json", ndjson=False)
    result = CliRunner().invoke(app, ["import-sdtm", str(first), "--source", SOURCE, "--store", url])
    assert result.exit_code == 0, result.output
    formats = root / "formats"
    formats.mkdir()
    write_dataset_json_11(small["AE"], "AE", formats / "ae.json", ndjson=False)
    write_dataset_json_11(small["AE"], "AE", formats / "ae.ndjson", ndjson=True)
    write_xpt(small["AE"], "AE", formats / "ae.xpt", 5)
    write_xpt(small["AE"], "AE", formats / "ae8.xpt", 8)
    return url, formats


def position(url: str) -> int:
    return Ledger(Store.parse(url)).position()


# --- mutations --------------------------------------------------------------------------------------------

Mutation = Callable[[bytes], bytes]


def _json_swap(data: bytes, replacement: str, nth: int) -> bytes:
    """Replace the nth JSON string value of the rows with ``replacement`` (raw JSON text)."""
    text = data.decode("utf-8")
    at = text.find('"rows"')
    if at < 0:
        return data
    starts = [i for i in range(at + 6, len(text)) if text[i] == '"' and text[i - 1] != "\\"][::2]
    if not starts:
        return data
    start = starts[nth % len(starts)]
    end = text.index('"', start + 1)
    return (text[:start] + replacement + text[end + 1 :]).encode("utf-8", errors="surrogatepass")


REPLACEMENTS = ["[1, 2]", '{"a": 1}', "1" + "0" * 400, "1e400", '"\\ud800"', '"caf\\u00e9"', "null",
                "[" * 2000 + "]" * 2000, "true", '"' + "x" * 5000 + '"']


@st.composite
def mutation(draw: Any, kind: str) -> tuple[str, Mutation]:
    """A named structural change of a file's bytes."""
    choice = draw(st.sampled_from(["cut", "splice", "insert", "gzip-cut", "records", "swap", "latin1",
                                   "nest", "header"]))
    at = draw(st.floats(min_value=0.0, max_value=1.0))
    length = draw(st.integers(min_value=1, max_value=400))
    blob = draw(st.binary(min_size=1, max_size=40))
    nth = draw(st.integers(min_value=0, max_value=10_000))
    replacement = draw(st.sampled_from(REPLACEMENTS))

    def cut(data: bytes) -> bytes:
        return data[: int(len(data) * at)]

    def splice(data: bytes) -> bytes:
        i = int(len(data) * at)
        return data[:i] + data[i + length :]

    def insert(data: bytes) -> bytes:
        i = int(len(data) * at)
        return data[:i] + blob + data[i:]

    def gzip_cut(data: bytes) -> bytes:
        packed = gzip.compress(data)
        return packed[: min(len(packed) - 1, max(10, int(len(packed) * at)))]  # at least the last byte cut

    def records(data: bytes) -> bytes:
        return data.replace(b'"records": ', b'"records": 1', 1)

    def swap(data: bytes) -> bytes:
        return _json_swap(data, replacement, nth) if kind != "xpt" else insert(data)

    def latin1(data: bytes) -> bytes:
        return data.replace(b"HEADACHE", "CÉPHALÉE".encode("latin-1"), 1) if kind != "xpt" else cut(data)

    def nest(data: bytes) -> bytes:
        return b'{"datasetJSONVersion": "1.1.0", "rows": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"

    def header(data: bytes) -> bytes:
        if kind == "xpt":
            obs = data.find(b"HEADER RECORD*******OBS")
            return data[: obs + 80] if obs >= 0 else data[:80]
        return data.replace(b'"name": "', b'"nome": "', 1)

    return choice, {"cut": cut, "splice": splice, "insert": insert, "gzip-cut": gzip_cut, "records": records,
                    "swap": swap, "latin1": latin1, "nest": nest, "header": header}[choice]


#: exit codes seen, for RELIABILITY.md
OUTCOMES: Counter[int] = Counter()

#: mutations that always leave the file unusable: they must be refused
ALWAYS_REFUSED = {"gzip-cut", "records", "nest"}


def check(loaded: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory, name: str, kind: str,
          change: tuple[str, Mutation]) -> None:
    url, formats = loaded
    label, mutate = change
    original = (formats / name).read_bytes()
    mutated = mutate(original)
    folder = tmp_path_factory.mktemp("case")
    target = folder / (name + (".gz" if mutated[:2] == b"\x1f\x8b" else ""))
    target.write_bytes(mutated)
    before = position(url)
    result = CliRunner().invoke(app, ["import-sdtm", str(target), "--source", SOURCE, "--store", url,
                                      "--max-mib", "64"])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        label, result.exception, result.output)
    assert result.exit_code in (0, 2), (label, result.output)
    assert "Traceback" not in result.output
    OUTCOMES[result.exit_code] += 1
    if result.exit_code == 2:
        assert result.output.strip(), label
        assert position(url) == before, label  # a refusal changes nothing stored
    else:
        assert label not in ALWAYS_REFUSED or mutated == original, (label, result.output)
        json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize(("name", "kind"), [("ae.json", "json"), ("ae.ndjson", "ndjson"), ("ae.xpt", "xpt"),
                                            ("ae8.xpt", "xpt")])
def test_a_mutated_dataset_is_taken_or_refused_cleanly(loaded: tuple[str, Path],
                                                       tmp_path_factory: pytest.TempPathFactory, name: str, kind: str):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(change=mutation(kind))
    def run(change: tuple[str, Mutation]) -> None:
        check(loaded, tmp_path_factory, name, kind, change)

    OUTCOMES.clear()
    run()
    record(f"structurally mutated SDTM dataset ({name}): cut, spliced, gzipped and cut, nested, values swapped",
           sum(OUTCOMES.values()), sum(OUTCOMES.values()), 0, 0,
           f"{OUTCOMES[2]} refused with exit 2 and the store unchanged, {OUTCOMES[0]} taken whole; no traceback")


def test_a_decompression_bomb_is_refused_at_the_cap(loaded: tuple[str, Path], tmp_path: Path):
    url, _ = loaded
    bomb = tmp_path / "ae.json.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(b'{"datasetJSONVersion": "1.1.0", "name": "AE", "label": "')
        for _ in range(80):
            f.write(b" " * (1 << 20))
        f.write(b'"}')
    assert bomb.stat().st_size < 200_000
    before = position(url)
    result = CliRunner().invoke(app, ["import-sdtm", str(bomb), "--source", SOURCE, "--store", url, "--max-mib", "64"])
    assert result.exit_code == 2 and "expands to more than 64 MiB" in result.output and "--max-mib" in result.output
    assert position(url) == before
