"""Readers of CDISC SDTM datasets: SAS XPORT (v5 and v8, ``xport.py``) and Dataset-JSON (1.0, and 1.1 as
``.json`` or ``.ndjson``, ``dataset_json.py``), plain or gzip-compressed. The format is told by the
content (the XPORT library header, the JSON keys), not trusted from the extension.

Every reader yields rows as ``{VARIABLE: value}`` with the same values whatever the format: text without
trailing blanks and ``None`` for empty, numbers as ``int`` when whole and ``float`` otherwise, missing
numbers as ``None``. Rows are streamed: an XPORT file in chunks (pyreadstat), a Dataset-JSON file row by
row from a buffered text stream, an NDJSON file line by line, so a large LB is never in memory whole.

A dataset is taken only whole (issue 23): an XPORT file is a whole number of 80-byte records whose
member header agrees with the observations read, Dataset-JSON's ``records`` equals its rows, every row
has one value per column, a gzip stream ends properly, and nothing decompresses past ``max_bytes``.
Anything else is a :class:`DatasetError` naming the file and what is wrong, never a traceback, and
since a transfer is read whole before anything is sent, nothing stored changes.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

_XPT5 = b"HEADER RECORD*******LIBRARY HEADER RECORD!!!!!!!"
_XPT8 = b"HEADER RECORD*******LIBV8   HEADER RECORD!!!!!!!"
#: decompressed bytes one dataset may expand to (``import-sdtm --max-mib`` changes it)
DEFAULT_MAX_BYTES = 2 * 1024**3
CHUNK = 1 << 20


class DatasetError(ValueError):
    """A file that is not a whole SDTM dataset this monitor reads; the message says which and why."""


@dataclass
class Dataset:
    """One domain's dataset in a transfer: its name, where it came from, and a way to read its rows."""

    domain: str
    path: Path
    format: str
    columns: list[str]
    _rows: Any = field(repr=False)

    def rows(self) -> Iterator[dict[str, Any]]:
        return self._rows()


def value(v: Any) -> Any:
    """One cell, the same from every format."""
    if v is None:
        return None
    if isinstance(v, str):
        v = v.rstrip()
        return v or None
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        f = float(v)
        if math.isnan(f):
            return None
        return int(f) if f.is_integer() else f
    return v


# --- bytes in: capped, gzip checked --------------------------------------------------------------------


class Capped:
    """A binary stream that refuses to give more than ``limit`` bytes and turns a damaged gzip stream
    into a DatasetError (a truncated ``.gz`` raises EOFError deep inside gzip)."""

    def __init__(self, path: Path, raw: IO[bytes] | gzip.GzipFile, limit: int):
        self.path, self.raw, self.limit, self.count = path, raw, limit, 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.raw.read(n if n >= 0 else self.limit + 1 - self.count)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise DatasetError(f"{self.path}: the gzip stream is damaged or cut short ({exc}); send the whole "
                               "file again") from None
        self.count += len(data)
        if self.count > self.limit:
            raise DatasetError(f"{self.path}: expands to more than {self.limit / 2**20:,.0f} MiB; split the "
                               "transfer, or raise the limit with --max-mib if the dataset is really that large")
        return data


@contextmanager
def opened(path: Path, limit: int) -> Iterator[Capped]:
    """The file's bytes (gunzipped when compressed), capped at ``limit``."""
    with path.open("rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        if compressed:
            with gzip.GzipFile(fileobj=f) as g:
                yield Capped(path, g, limit)
        else:
            yield Capped(path, f, limit)


def read_dataset(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Dataset:
    """The dataset in ``path``, whichever supported format it is in."""
    path = Path(path)
    try:
        with opened(path, max_bytes) as stream:
            head = stream.read(256)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    if head.startswith(_XPT5) or head.startswith(_XPT8):
        from events.sdtm.xport import read_xport

        return read_xport(path, "xpt-v8" if head.startswith(_XPT8) else "xpt-v5", max_bytes)
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{":
        from events.sdtm.dataset_json import read_dataset_json

        return read_dataset_json(path, max_bytes)
    raise DatasetError(f"{path}: neither SAS XPORT (v5, v8) nor Dataset-JSON: send .xpt, .json or .ndjson datasets")


def read_transfer(paths: Sequence[str | Path], max_bytes: int = DEFAULT_MAX_BYTES) -> list[Dataset]:
    """The datasets of one transfer: files, or folders whose dataset files are taken (sorted by name)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.is_file() and _looks_like_dataset(f))
        elif p.is_file():
            found.append(p)
        else:
            raise DatasetError(f"{p}: no such file or folder")
    datasets = [read_dataset(f, max_bytes) for f in found]
    seen: dict[str, Path] = {}
    for d in datasets:
        if d.domain in seen:
            raise DatasetError(f"{d.path}: a second {d.domain} dataset in one transfer (first: {seen[d.domain]})")
        seen[d.domain] = d.path
    return datasets


def _looks_like_dataset(f: Path) -> bool:
    name = f.name.lower().removesuffix(".gz")
    return name.endswith((".xpt", ".json", ".ndjson"))


