"""NDJSON file adapter: one contract message per line, with its file and line as its position."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from events.admission import RawMessage


def read_ndjson(path: str) -> Iterator[RawMessage]:
    """Raw lines of an NDJSON file (``-`` for standard input); blank lines are skipped."""
    if path == "-":
        yield from _lines(sys.stdin.buffer, "<stdin>")
        return
    with Path(path).open("rb") as f:
        yield from _lines(f, path)


def _lines(f: BinaryIO, name: str) -> Iterator[RawMessage]:
    for number, line in enumerate(f, start=1):
        stripped = line.rstrip(b"\r\n")
        if stripped.strip():
            yield RawMessage(stripped, {"file": name, "line": number})


def size_of(path: str) -> int | None:
    """Bytes in the file, for a progress bar; None for standard input."""
    return None if path == "-" else Path(path).stat().st_size
