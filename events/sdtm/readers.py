"""Readers of CDISC SDTM datasets: SAS XPORT (v5 and v8) and Dataset-JSON (1.0, and 1.1 as ``.json``
or ``.ndjson``), plain or gzip-compressed. The format is told by the content (the XPORT library header,
the JSON keys), not trusted from the extension.

Every reader yields rows as ``{VARIABLE: value}`` with the same values whatever the format: text without
trailing blanks and ``None`` for empty, numbers as ``int`` when whole and ``float`` otherwise, missing
numbers as ``None``. Rows are streamed: an XPORT file in chunks (pyreadstat), a Dataset-JSON file row by
row from its text, an NDJSON file line by line, so a large LB is never in memory twice.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_XPT5 = b"HEADER RECORD*******LIBRARY HEADER RECORD!!!!!!!"
_XPT8 = b"HEADER RECORD*******LIBV8   HEADER RECORD!!!!!!!"
_DECODER = json.JSONDecoder()


class DatasetError(ValueError):
    """A file that is not an SDTM dataset this monitor reads; the message says which and why."""


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


def _opened(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def read_dataset(path: str | Path) -> Dataset:
    """The dataset in ``path``, whichever supported format it is in."""
    path = Path(path)
    try:
        head = _head(path)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    if head.startswith(_XPT5) or head.startswith(_XPT8):
        return _xport(path, "xpt-v8" if head.startswith(_XPT8) else "xpt-v5")
    if head.lstrip()[:1] == b"{":
        return _dataset_json(path)
    raise DatasetError(f"{path}: neither SAS XPORT (v5, v8) nor Dataset-JSON: send .xpt, .json or .ndjson datasets")


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        start = f.read(2)
        f.seek(0)
        stream: Any = gzip.GzipFile(fileobj=f) if start == b"\x1f\x8b" else f
        return bytes(stream.read(256))


# --- SAS XPORT -----------------------------------------------------------------------------------------


def _xport(path: Path, fmt: str) -> Dataset:
    import pyreadstat

    local, cleanup = _local_file(path)
    try:
        try:
            _, meta = pyreadstat.read_xport(local, metadataonly=True, encoding="UTF-8")
        except Exception:
            _, meta = pyreadstat.read_xport(local, metadataonly=True, encoding="WINDOWS-1252")
    finally:
        cleanup()
    columns = [c.upper() for c in meta.column_names]

    def rows() -> Iterator[dict[str, Any]]:
        # XPORT names no encoding: UTF-8 while every text decodes as UTF-8, else Windows-1252 (what SAS on
        # Windows writes; the CDISC pilot's TS holds it). A chunk that fails is read again, not half-used.
        local, cleanup = _local_file(path)
        encoding, offset = "UTF-8", 0
        try:
            while True:
                try:
                    for chunk, _ in pyreadstat.read_file_in_chunks(pyreadstat.read_xport, local, chunksize=20000,
                                                                    offset=offset, encoding=encoding):
                        for record in chunk.itertuples(index=False, name=None):
                            yield {c: value(v) for c, v in zip(columns, record, strict=True)}
                        offset += len(chunk)
                    return
                except (UnicodeDecodeError, pyreadstat.ReadstatError) as exc:
                    if encoding != "UTF-8":
                        raise DatasetError(f"{path}: cannot decode its text ({exc})") from None
                    encoding = "WINDOWS-1252"
        finally:
            cleanup()

    return Dataset(str(meta.table_name or path.name.split(".")[0]).upper(), path, fmt, columns, rows)


def _local_file(path: Path) -> tuple[str, Any]:
    """A plain file for pyreadstat (it reads paths, not streams): the file itself, or its gunzipped copy."""
    with path.open("rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    if not compressed:
        return str(path), lambda: None
    fd, name = tempfile.mkstemp(suffix=".xpt")
    with os.fdopen(fd, "wb") as out, gzip.open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    return name, lambda: os.unlink(name)


# --- Dataset-JSON ---------------------------------------------------------------------------------------


def _dataset_json(path: Path) -> Dataset:
    with _line_stream(path) as lines:
        first_line = next(lines, "")
        more = any(line.strip() for line in lines)
    try:
        first = json.loads(first_line)
    except ValueError:
        first = None
    if isinstance(first, dict) and "datasetJSONVersion" in first and more:
        return _ndjson(path, first)
    text = _opened(path).decode("utf-8-sig")
    meta, rows_at = _top_level(path, text)
    if "clinicalData" in meta or "referenceData" in meta:
        return _json_10(path, meta)
    if "datasetJSONVersion" in meta:
        return _json_11(path, meta, rows_at)
    raise DatasetError(f"{path}: JSON without datasetJSONVersion (1.1) or clinicalData (1.0): not Dataset-JSON")


def _check_version(path: Path, meta: dict[str, Any]) -> None:
    version = str(meta.get("datasetJSONVersion", ""))
    if not version.startswith("1.1"):
        raise DatasetError(f"{path}: datasetJSONVersion {version!r}: this reader takes 1.1 (and 1.0's layout)")


def _columns_11(path: Path, meta: dict[str, Any]) -> tuple[list[str], list[bool]]:
    columns = meta.get("columns")
    if not isinstance(columns, list) or not columns:
        raise DatasetError(f"{path}: Dataset-JSON without columns")
    names = [str(c["name"]).upper() for c in columns]
    # 1.1 writes decimals as strings, to keep their precision
    decimal = [c.get("dataType") == "decimal" for c in columns]
    return names, decimal


def _row(names: list[str], decimal: list[bool], row: list[Any]) -> dict[str, Any]:
    out = {}
    for name, is_decimal, v in zip(names, decimal, row, strict=True):
        if is_decimal and isinstance(v, str) and v.strip():
            v = float(v)
        out[name] = value(v)
    return out


def _json_11(path: Path, meta: dict[str, Any], rows_at: int | None) -> Dataset:
    """A Dataset-JSON 1.1 object: its metadata decoded member by member, its rows one at a time."""
    _check_version(path, meta)
    names, decimal = _columns_11(path, meta)

    def rows() -> Iterator[dict[str, Any]]:
        if rows_at is None:
            return
        body = _opened(path).decode("utf-8-sig")
        for row, _ in _elements(path, body, rows_at):
            yield _row(names, decimal, row)

    return Dataset(str(meta.get("name") or path.name.split(".")[0]).upper(), path, "dataset-json-1.1", names, rows)


def _top_level(path: Path, text: str) -> tuple[dict[str, Any], int | None]:
    """Every top-level member but ``rows`` (skipped element by element, never held whole), and where
    ``rows`` starts."""
    meta: dict[str, Any] = {}
    rows_at = None
    i = _skip(text, 0)
    if text[i : i + 1] != "{":
        raise DatasetError(f"{path}: not a JSON object")
    i = _skip(text, i + 1)
    try:
        while text[i : i + 1] != "}":
            key, i = _DECODER.raw_decode(text, i)
            i = _skip(text, i)
            if text[i : i + 1] != ":":
                raise DatasetError(f"{path}: malformed JSON near character {i}")
            i = _skip(text, i + 1)
            if key == "rows":
                rows_at = i
                if "columns" in meta and "name" in meta:
                    break  # what the reader needs came first (as written by CDISC's tools): no second pass
                for _, i in _elements(path, text, rows_at):  # noqa: B007 - i: where the array ends
                    pass
                i = _array_end(path, text, i if text[rows_at + 1 : i].strip() else rows_at + 1)
            else:
                meta[key], i = _DECODER.raw_decode(text, i)
            i = _skip(text, i)
            if text[i : i + 1] == ",":
                i = _skip(text, i + 1)
    except ValueError as exc:
        raise DatasetError(f"{path}: malformed JSON ({exc})") from None
    return meta, rows_at


def _elements(path: Path, text: str, i: int) -> Iterator[tuple[Any, int]]:
    """The elements of the JSON array at ``i``, decoded one at a time, each with where it ends."""
    if text[i : i + 1] != "[":
        raise DatasetError(f"{path}: rows must be a JSON array")
    i = _skip(text, i + 1)
    while text[i : i + 1] not in ("]", ""):
        item, i = _DECODER.raw_decode(text, i)
        yield item, i
        i = _skip(text, i)
        if text[i : i + 1] == ",":
            i = _skip(text, i + 1)


def _array_end(path: Path, text: str, i: int) -> int:
    i = _skip(text, i)
    if text[i : i + 1] != "]":
        raise DatasetError(f"{path}: malformed rows array near character {i}")
    return i + 1


def _skip(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in " \t\r\n":
        i += 1
    return i


def _ndjson(path: Path, meta: dict[str, Any]) -> Dataset:
    _check_version(path, meta)
    names, decimal = _columns_11(path, meta)

    def rows() -> Iterator[dict[str, Any]]:
        with _line_stream(path) as lines:
            next(lines, None)  # the metadata
            for line in lines:
                if line.strip():
                    yield _row(names, decimal, json.loads(line))

    return Dataset(str(meta.get("name") or path.name.split(".")[0]).upper(), path, "dataset-ndjson-1.1", names,
                   rows)


@contextmanager
def _line_stream(path: Path) -> Iterator[Iterator[str]]:
    """The lines of a text file, gunzipped when it is compressed."""
    with path.open("rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    with (gzip.open(path, "rt", encoding="utf-8-sig") if compressed else path.open(encoding="utf-8-sig")) as f:
        yield iter(f)


def _json_10(path: Path, document: dict[str, Any]) -> Dataset:
    """Dataset-JSON 1.0: ``clinicalData`` (or ``referenceData``) -> ``itemGroupData`` -> one item group,
    whose ``items`` name the columns (the first is ITEMGROUPDATASEQ) and ``itemData`` holds the rows."""
    data = document.get("clinicalData") or document.get("referenceData") or {}
    groups = data.get("itemGroupData") or {}
    if len(groups) != 1:
        raise DatasetError(f"{path}: Dataset-JSON 1.0 with {len(groups)} item groups: send one dataset per file")
    (group,) = groups.values()
    names = [str(item["name"]).upper() for item in group["items"]]
    decimal = [item.get("type") == "decimal" for item in group["items"]]
    keep = [i for i, n in enumerate(names) if n != "ITEMGROUPDATASEQ"]

    def rows() -> Iterator[dict[str, Any]]:
        for row in group.get("itemData", []):
            full = _row(names, decimal, row)
            yield {names[i]: full[names[i]] for i in keep}

    return Dataset(str(group.get("name") or path.name.split(".")[0]).upper(), path, "dataset-json-1.0",
                   [names[i] for i in keep], rows)


def read_transfer(paths: Sequence[str | Path]) -> list[Dataset]:
    """The datasets of one transfer: files, or folders whose dataset files are taken (sorted by name)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.is_file() and _looks_like_dataset(f))
        elif p.is_file():
            found.append(p)
        else:
            raise DatasetError(f"{p}: no such file or folder")
    datasets = [read_dataset(f) for f in found]
    seen: dict[str, Path] = {}
    for d in datasets:
        if d.domain in seen:
            raise DatasetError(f"{d.path}: a second {d.domain} dataset in one transfer (first: {seen[d.domain]})")
        seen[d.domain] = d.path
    return datasets


def _looks_like_dataset(f: Path) -> bool:
    name = f.name.lower().removesuffix(".gz")
    return name.endswith((".xpt", ".json", ".ndjson"))


