"""CDISC Dataset-JSON datasets: 1.1 (``.json`` and ``.ndjson``) read row by row from a buffered text
stream, 1.0 read whole; taken only when whole (``records`` equals the rows, every row an array of one
value per column, the JSON complete) (issue 23).
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from events.sdtm.readers import CHUNK, Capped, Dataset, DatasetError, opened, value

_DECODER = json.JSONDecoder()
_NOT_BLANK = re.compile(r"[^ \t\r\n]")



class _JSONText:
    """JSON values decoded one at a time from a UTF-8 stream held a chunk at a time (the stdlib's C
    decoder on a sliding buffer): a 400 MB ``rows`` array is never in memory whole."""

    def __init__(self, path: Path, stream: Capped):
        self.path, self.stream = path, stream
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
        self.buf, self.i, self.eof = "", 0, False

    def _more(self, size: int = CHUNK) -> bool:
        if self.eof:
            return False
        data = self.stream.read(size)
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{self.path}: not UTF-8 text ({exc.reason} at byte {exc.start} of a chunk); "
                               "Dataset-JSON is written in UTF-8") from None
        self.eof = not data
        self.buf = self.buf[self.i :] + text
        self.i = 0
        return True

    def peek(self) -> str:
        """The next character that is not white space ('' at the end)."""
        while True:
            found = _NOT_BLANK.search(self.buf, self.i)
            if found is not None:
                self.i = found.start()
                return self.buf[self.i]
            self.i = len(self.buf)
            if not self._more():
                return ""

    def expect(self, char: str, what: str) -> None:
        if self.peek() != char:
            found = self.peek() or "the end of the file"
            raise DatasetError(f"{self.path}: malformed JSON: {what} expected, found {found!r}; the file is damaged "
                               "or cut short")
        self.i += 1

    def value(self) -> Any:
        """The next JSON value; a value cut by the chunk's end is read again with more text."""
        self.peek()
        size = CHUNK
        while True:
            try:
                v, end = _DECODER.raw_decode(self.buf, self.i)
            except json.JSONDecodeError as exc:
                if self._more(size):
                    size *= 2  # a large value: read geometrically more, so it is decoded O(log n) times
                    continue
                raise DatasetError(f"{self.path}: malformed JSON ({exc.msg} near character {exc.pos}); the file is "
                                   "damaged or cut short") from None
            except RecursionError:
                raise DatasetError(f"{self.path}: JSON nested too deeply to be a dataset") from None
            if end == len(self.buf) and self._more():
                continue  # a number may go on in the next chunk
            self.i = end
            return v

    def members(self) -> Iterator[str]:
        """The keys of the object that starts here, leaving each value to the caller."""
        self.expect("{", "a JSON object")
        first = True
        while self.peek() != "}":
            if not first:
                self.expect(",", "',' between members")
            first = False
            key = self.value()
            if not isinstance(key, str):
                raise DatasetError(f"{self.path}: malformed JSON object: a member's name must be text")
            self.expect(":", "':' after a member's name")
            yield key
        self.i += 1

    def elements(self) -> Iterator[Any]:
        """The elements of the array that starts here, decoded one at a time."""
        self.expect("[", "a JSON array")
        first = True
        while self.peek() != "]":
            if not first:
                self.expect(",", "',' between elements")
            first = False
            yield self.value()
        self.i += 1

    def end(self) -> None:
        if self.peek() != "":
            raise DatasetError(f"{self.path}: text after the end of the JSON document; the file is damaged")


@contextmanager
def _json_text(path: Path, limit: int) -> Iterator[_JSONText]:
    with opened(path, limit) as stream:
        yield _JSONText(path, stream)


def read_dataset_json(path: Path, limit: int) -> Dataset:
    with opened(path, limit) as stream:
        first_line, more = _first_line(stream)
    try:
        first = json.loads(first_line)
    except (ValueError, RecursionError):
        first = None
    if isinstance(first, dict) and "datasetJSONVersion" in first and more:
        return _ndjson(path, first, limit)
    meta = _metadata(path, limit)
    if "clinicalData" in meta or "referenceData" in meta:
        return _json_10(path, limit)
    if "datasetJSONVersion" in meta:
        return _json_11(path, meta, limit)
    raise DatasetError(f"{path}: JSON without datasetJSONVersion (1.1) or clinicalData (1.0): not Dataset-JSON")


def _first_line(stream: Capped) -> tuple[str, bool]:
    """The first line (the metadata of an NDJSON dataset: at most 16 MiB), and whether anything but
    white space follows it. Chunks are searched as they come, never joined into one large buffer."""
    chunks: list[bytes] = []
    size = 0
    while size < (16 << 20):
        chunk = stream.read(CHUNK)
        if not chunk:
            return b"".join(chunks).decode("utf-8-sig", errors="replace"), False
        end = chunk.find(b"\n")
        if end >= 0:
            chunks.append(chunk[:end])
            rest = chunk[end + 1 :]
            while rest and not rest.strip():
                rest = stream.read(CHUNK)
            return b"".join(chunks).decode("utf-8-sig", errors="replace"), bool(rest.strip())
        chunks.append(chunk)
        size += len(chunk)
    return "", False


def _metadata(path: Path, limit: int) -> dict[str, Any]:
    """Every top-level member but the rows (skipped element by element when they come before the
    metadata; not read at all when ``columns`` and ``name`` came first, as CDISC's tools write them)."""
    meta: dict[str, Any] = {}
    with _json_text(path, limit) as text:
        for key in text.members():
            if key == "rows":
                if "columns" in meta and "name" in meta:
                    break
                for _ in text.elements():
                    pass
            elif key in ("clinicalData", "referenceData"):
                meta[key] = True  # 1.0: read whole later
                break
            else:
                meta[key] = text.value()
    return meta


def _check_version(path: Path, meta: dict[str, Any]) -> None:
    version = str(meta.get("datasetJSONVersion", ""))
    if not version.startswith("1.1"):
        raise DatasetError(f"{path}: datasetJSONVersion {version!r}: this reader takes 1.1 (and 1.0's layout)")


def _columns_11(path: Path, meta: dict[str, Any]) -> tuple[list[str], list[bool]]:
    columns = meta.get("columns")
    if not isinstance(columns, list) or not columns:
        raise DatasetError(f"{path}: Dataset-JSON without columns; send the columns' metadata")
    names, decimal = [], []
    for n, c in enumerate(columns, start=1):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"].strip():
            raise DatasetError(f"{path}: column {n} has no name; every column needs its variable name")
        names.append(c["name"].strip().upper())
        decimal.append(c.get("dataType") == "decimal")  # 1.1 writes decimals as strings, to keep precision
    return names, decimal


def _domain(path: Path, name: Any) -> str:
    if name is not None and not isinstance(name, str):
        raise DatasetError(f"{path}: name must be the dataset's name as text, e.g. \"AE\"")
    return str(name or path.name.split(".")[0]).upper()


def _row(path: Path, n: int, names: list[str], decimal: list[bool], row: Any) -> dict[str, Any]:
    """One row as ``{VARIABLE: value}``: an array with one scalar per column, or a DatasetError naming
    the row and the column."""
    if not isinstance(row, list):
        kind = "an object" if isinstance(row, dict) else type(row).__name__
        raise DatasetError(f"{path}: row {n} is {kind}, not an array of values in the columns' order; write each "
                           "row as [value, value, ...]")
    if len(row) != len(names):
        raise DatasetError(f"{path}: row {n} has {len(row)} values for {len(names)} columns")
    out = {}
    for name, is_decimal, v in zip(names, decimal, row, strict=True):
        if isinstance(v, (list, dict)):
            raise DatasetError(f"{path}: row {n}, column {name}: a JSON {'array' if isinstance(v, list) else 'object'} "
                               "where one value belongs")
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise DatasetError(f"{path}: row {n}, column {name}: text with an unpaired surrogate (\\ud800 to "
                                   "\\udfff); write the character itself") from None
            if is_decimal and v.strip():
                try:
                    v = float(v)
                except ValueError:
                    raise DatasetError(f"{path}: row {n}, column {name}: {v[:40]!r} is not a decimal number") from None
        if (isinstance(v, float) and math.isinf(v)) or (isinstance(v, int) and not isinstance(v, bool)
                                                         and abs(v) > 1e300):
            raise DatasetError(f"{path}: row {n}, column {name}: a number out of range")
        out[name] = value(v)
    return out


def _count_check(path: Path, domain: str, declared: Any, read: int) -> None:
    if declared is None:
        return
    if not isinstance(declared, int) or isinstance(declared, bool) or declared != read:
        raise DatasetError(f"{path} ({domain}): records says {declared!r} and the file holds {read} rows; the file is "
                           "incomplete or damaged: send it again")


def _json_11(path: Path, meta: dict[str, Any], limit: int) -> Dataset:
    """A Dataset-JSON 1.1 object: its metadata decoded member by member, its rows one at a time, checked
    against ``records`` once the document has been read to its end."""
    _check_version(path, meta)
    names, decimal = _columns_11(path, meta)
    domain = _domain(path, meta.get("name"))

    def rows() -> Iterator[dict[str, Any]]:
        n = 0
        declared = meta.get("records")
        with _json_text(path, limit) as text:
            for key in text.members():
                if key == "rows":
                    for row in text.elements():
                        n += 1
                        yield _row(path, n, names, decimal, row)
                else:
                    v = text.value()
                    if key == "records":
                        declared = v
            text.end()
        _count_check(path, domain, declared, n)

    return Dataset(domain, path, "dataset-json-1.1", names, rows)


def _ndjson(path: Path, meta: dict[str, Any], limit: int) -> Dataset:
    _check_version(path, meta)
    names, decimal = _columns_11(path, meta)
    domain = _domain(path, meta.get("name"))

    def rows() -> Iterator[dict[str, Any]]:
        n = 0
        with _json_text(path, limit) as text:
            lines = _lines(text)
            next(lines, None)  # the metadata
            for number, line in lines:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as exc:
                    raise DatasetError(f"{path}: line {number} is not JSON ({exc}); the file is damaged") from None
                n += 1
                yield _row(path, n, names, decimal, row)
        _count_check(path, domain, meta.get("records"), n)

    return Dataset(domain, path, "dataset-ndjson-1.1", names, rows)


def _lines(text: _JSONText) -> Iterator[tuple[int, str]]:
    """The lines of the stream, numbered from 1."""
    number = 0
    while True:
        end = text.buf.find("\n", text.i)
        while end < 0 and text._more():
            end = text.buf.find("\n", text.i)
        if end < 0:
            if text.i < len(text.buf):
                number += 1
                yield number, text.buf[text.i :]
            return
        number += 1
        yield number, text.buf[text.i : end]
        text.i = end + 1


def _json_10(path: Path, limit: int) -> Dataset:
    """Dataset-JSON 1.0: ``clinicalData`` (or ``referenceData``) -> ``itemGroupData`` -> one item group,
    whose ``items`` name the columns (the first is ITEMGROUPDATASEQ) and ``itemData`` holds the rows.
    Read whole (1.0 files are the older, smaller ones), within the size limit."""
    with _json_text(path, limit) as text:
        document = text.value()
        text.end()
    data = document.get("clinicalData") or document.get("referenceData") or {}
    groups = data.get("itemGroupData") if isinstance(data, dict) else None
    if not isinstance(groups, dict) or len(groups) != 1:
        count = len(groups) if isinstance(groups, dict) else 0
        raise DatasetError(f"{path}: Dataset-JSON 1.0 with {count} item groups: send one dataset per file")
    (group,) = groups.values()
    items = group.get("items") if isinstance(group, dict) else None
    if not isinstance(items, list) or not items:
        raise DatasetError(f"{path}: Dataset-JSON 1.0 item group without items; send the columns' metadata")
    names, decimal = _columns_11(path, {"columns": [
        {"name": i.get("name"), "dataType": i.get("type")} if isinstance(i, dict) else i for i in items]})
    keep = [i for i, n in enumerate(names) if n != "ITEMGROUPDATASEQ"]
    domain = _domain(path, group.get("name"))
    item_data = group.get("itemData", [])
    if not isinstance(item_data, list):
        raise DatasetError(f"{path}: itemData must be an array of rows")

    def rows() -> Iterator[dict[str, Any]]:
        for n, row in enumerate(item_data, start=1):
            full = _row(path, n, names, decimal, row)
            yield {names[i]: full[names[i]] for i in keep}
        _count_check(path, domain, group.get("records"), len(item_data))

    return Dataset(domain, path, "dataset-json-1.0", [names[i] for i in keep], rows)


