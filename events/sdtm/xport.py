"""SAS XPORT (v5 and v8) datasets: read with pyreadstat in chunks, taken only when the file is whole.

An XPORT file is a whole number of 80-byte records with one member; its observation length is the sum of
its variables' lengths (NAMESTR records), and the data after the OBS header is whole observations plus
blank padding to the next 80 bytes; an XPORT v8 OBS header's count must agree (issue 23).
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from events.sdtm.readers import CHUNK, Dataset, DatasetError, opened, value


def read_xport(path: Path, fmt: str, limit: int) -> Dataset:
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
        with os.fdopen(fd, "wb") as out, opened(path, limit) as src:
            while chunk := src.read(CHUNK):
                out.write(chunk)
        yield name
    finally:
        os.unlink(name)


