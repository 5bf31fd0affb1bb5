"""Processes of a benchmark, read from Linux /proc: the tree under a process, its peak memory and its
CPU time (all threads), so a section can say which process the time goes to."""

from __future__ import annotations

import os
import re
from pathlib import Path


def process_tree(pid: int) -> list[int]:
    """A process and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


def high_water_mb(pid: int) -> float:
    """A process's peak resident size so far (VmHWM: its own, not the parent's it was forked from, which
    ``ru_maxrss`` counts too)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) / 1024 if found else 0.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, every thread included (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
