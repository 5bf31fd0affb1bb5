"""Readers of CDISC SDTM datasets: SAS XPORT (v5 and v8) and Dataset-JSON (1.0, and 1.1 as ``.json``
or ``.ndjson``), plain or gzip-compressed. The format is told by the content (the XPORT library header,
the JSON keys), not trusted from the extension.

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

import codecs
import gzip
import json
import math
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

_XPT5 = b"HEADER RECORD*******LIBRARY HEADER RECORD!!!!!!!"
_XPT8 = b"HEADER RECORD*******LIBV8   HEADER RECORD!!!!!!!"
_DECODER = json.JSONDecoder()
_NOT_BLANK = re.compile(r"[^ \t\r\n]")
#: decompressed bytes one dataset may expand to (``import-sdtm --max-mib`` changes it)
DEFAULT_MAX_BYTES = 2 * 1024**3
_CHUNK = 1 << 20


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


class _Capped:
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
def _opened(path: Path, limit: int) -> Iterator[_Capped]:
    """The file's bytes (gunzipped when compressed), capped at ``limit``."""
    with path.open("rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        if compressed:
            with gzip.GzipFile(fileobj=f) as g:
                yield _Capped(path, g, limit)
        else:
            yield _Capped(path, f, limit)


def read_dataset(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Dataset:
    """The dataset in ``path``, whichever supported format it is in."""
    path = Path(path)
    try:
        with _opened(path, max_bytes) as stream:
            head = stream.read(256)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    if head.startswith(_XPT5) or head.startswith(_XPT8):
        return _xport(path, "xpt-v8" if head.startswith(_XPT8) else "xpt-v5", max_bytes)
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{":
        return _dataset_json(path, max_bytes)
    raise DatasetError(f"{path}: neither SAS XPORT (v5, v8) nor Dataset-JSON: send .xpt, .json or .ndjson datasets")


# --- SAS XPORT -----------------------------------------------------------------------------------------


def _xport(path: Path, fmt: str, limit: int) -> Dataset:
    import pyreadstat

    with _local_file(path, limit) as local:
        expected = _xport_observations(path, local)
        meta = None
        for encoding in ("UTF-8", "WINDOWS-1252"):
            try:
                _, meta = pyreadstat.read_xport(local, metadataonly=True, encoding=encoding)
                break
            except Exception as exc:  # pyreadstat raises several kinds for a file it cannot take
                problem = exc
        if meta is None:
            raise DatasetError(f"{path}: not a readable SAS XPORT file ({problem})")
    columns = [c.upper() for c in meta.column_names]
    domain = str(meta.table_name or path.name.split(".")[0]).upper()

    def rows() -> Iterator[dict[str, Any]]:
        # XPORT names no encoding: UTF-8 while every text decodes as UTF-8, else Windows-1252 (what SAS on
        # Windows writes; the CDISC pilot's TS holds it). A chunk that fails is read again, not half-used.
        with _local_file(path, limit) as local:
            encoding, offset = "UTF-8", 0
            while True:
                try:
                    for chunk, _ in pyreadstat.read_file_in_chunks(pyreadstat.read_xport, local, chunksize=20000,
                                                                    offset=offset, encoding=encoding):
                        for record in chunk.itertuples(index=False, name=None):
                            yield {c: value(v) for c, v in zip(columns, record, strict=True)}
                        offset += len(chunk)
                    break
                except (UnicodeDecodeError, pyreadstat.ReadstatError) as exc:
                    if encoding != "UTF-8":
                        raise DatasetError(f"{path}: cannot decode its text ({exc})") from None
                    encoding = "WINDOWS-1252"
                except Exception as exc:
                    raise DatasetError(f"{path}: not a readable SAS XPORT file ({exc})") from None
        if offset != expected:
            raise DatasetError(f"{path} ({domain}): {offset} observations read where the file's layout holds "
                               f"{expected}; the file is damaged: send it again")

    return Dataset(domain, path, fmt, columns, rows)


def _xport_observations(path: Path, local: str) -> int:
    """How many observations the file's own layout holds: its size is a whole number of 80-byte records,
    it has one member, the observation length is the sum of its variables' lengths (NAMESTR records), and
    the data after the OBS header is whole observations plus blank padding to the next 80 bytes. XPORT v8
    also writes the count in the OBS header: it must agree."""
    size = os.path.getsize(local)
    damaged = f"{path}: not a whole SAS XPORT file"
    if size % 80:
        raise DatasetError(f"{damaged}: its {size:,} bytes are not a whole number of 80-byte records (cut short "
                           "in transfer?); send the whole file again")
    with open(local, "rb") as f:
        head = f.read(min(size, 1 << 20))
        members = head.count(b"HEADER RECORD*******MEMBER  HEADER RECORD") + head.count(
            b"HEADER RECORD*******MEMBV8  HEADER RECORD")
        if members != 1:
            raise DatasetError(f"{damaged}: it holds {members} members; send one dataset per file")
        try:
            member = head.index(b"HEADER RECORD*******MEMB")
            namestr_size = int(head[member + 74 : member + 78])
            names = head.index(b"HEADER RECORD*******NAMSTV8" if b"NAMSTV8" in head else b"HEADER RECORD*******NAMESTR")
            variables = int(head[names + 54 : names + 58])
            first = names + 80
            lengths = [struct.unpack(">h", head[first + i * namestr_size + 4 : first + i * namestr_size + 6])[0]
                       for i in range(variables)]
            obs_header = head.index(b"HEADER RECORD*******OBS")
        except (ValueError, struct.error) as exc:
            raise DatasetError(f"{damaged}: its headers are damaged ({exc}); send it again") from None
        record = sum(lengths)
        if record <= 0 or any(n <= 0 for n in lengths):
            raise DatasetError(f"{damaged}: its variable lengths are damaged; send it again")
        start = obs_header + 80
        data_size = size - start
        f.seek(start + max(0, data_size - 80 - record))
        tail = f.read()  # the last observation and the padding after it
        tail_at = size - len(tail)

        def blank_from(offset: int) -> bool:
            return not tail[offset - tail_at :].strip(b" ")

        whole = data_size // record
        if data_size - whole * record >= 80 or not blank_from(start + whole * record):
            raise DatasetError(f"{damaged}: its last observation is cut short; send the whole file again")
        # SAS pads the last 80-byte record with blanks: blank observations inside it are padding, not data
        while whole and data_size - (whole - 1) * record < 80 and blank_from(start + (whole - 1) * record):
            whole -= 1
        count_v8 = head[obs_header + 48 : obs_header + 80].strip()
        if head[obs_header + 20 : obs_header + 25] == b"OBSV8" and count_v8.isdigit() and int(count_v8) != whole:
            raise DatasetError(f"{damaged}: its header says {int(count_v8)} observations and it holds {whole}")
    return whole


@contextmanager
def _local_file(path: Path, limit: int) -> Iterator[str]:
    """A plain file for pyreadstat (it reads paths, not streams): the file itself, or its gunzipped copy."""
    with path.open("rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    if not compressed:
        yield str(path)
        return
    fd, name = tempfile.mkstemp(suffix=".xpt")
    try:
        with os.fdopen(fd, "wb") as out, _opened(path, limit) as src:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
        yield name
    finally:
        os.unlink(name)


# --- Dataset-JSON ---------------------------------------------------------------------------------------


class _JSONText:
    """JSON values decoded one at a time from a UTF-8 stream held a chunk at a time (the stdlib's C
    decoder on a sliding buffer): a 400 MB ``rows`` array is never in memory whole."""

    def __init__(self, path: Path, stream: _Capped):
        self.path, self.stream = path, stream
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
        self.buf, self.i, self.eof = "", 0, False

    def _more(self, size: int = _CHUNK) -> bool:
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
        size = _CHUNK
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
    with _opened(path, limit) as stream:
        yield _JSONText(path, stream)


def _dataset_json(path: Path, limit: int) -> Dataset:
    with _opened(path, limit) as stream:
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


def _first_line(stream: _Capped) -> tuple[str, bool]:
    """The first line (the metadata of an NDJSON dataset: at most 16 MiB), and whether anything but
    white space follows it. Chunks are searched as they come, never joined into one large buffer."""
    chunks: list[bytes] = []
    size = 0
    while size < (16 << 20):
        chunk = stream.read(_CHUNK)
        if not chunk:
            return b"".join(chunks).decode("utf-8-sig", errors="replace"), False
        end = chunk.find(b"\n")
        if end >= 0:
            chunks.append(chunk[:end])
            rest = chunk[end + 1 :]
            while rest and not rest.strip():
                rest = stream.read(_CHUNK)
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

