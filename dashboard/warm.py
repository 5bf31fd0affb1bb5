"""The answers the board keeps for every session, computed in a thread of its own when the board's process
starts instead of by the first visitor after it (issue 28: the first visit of Arms and drugs after a start
took 1.6 s, of Expedited reports 1.0 s; visits after it 0.3-0.4 s).

Each page that keeps an answer (``st.cache_data``, keyed by its read model's revision) says which one it
shows first, every control at its default (its ``warm``); the thread computes them through the same cached
functions, so a visitor finds them kept. A failure here costs nothing but the head start: the page computes
its answer when visited, and says there why it cannot.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from projections.board import BoardData

log = logging.getLogger(__name__)

#: the warm-up thread's name: Streamlit's warning that it runs outside a script run is dropped for it only
THREAD = "board-warm-up"


def warm(data: BoardData, kept: Sequence[Callable[[BoardData], None]] | None = None) -> list[str]:
    """Compute each page's first answer; the names of those that failed (each page then computes its own)."""
    from dashboard.pages import WARM

    failed: list[str] = []
    for page_warm in WARM if kept is None else kept:
        try:
            page_warm(data)
        except Exception:  # the visit computes it again and reports the error in the page
            log.info("board warm-up: %s failed; the page computes it when visited", page_warm.__module__,
                     exc_info=True)
            failed.append(page_warm.__module__)
    return failed


class _OutsideScriptRun(logging.Filter):
    """Streamlit warns when a cached function runs in a thread with no script run: here that is the point."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != THREAD


_OUTSIDE_SCRIPT_RUN = _OutsideScriptRun()


def start(data: BoardData) -> threading.Thread:
    """Warm the kept answers in a daemon thread (the board does not wait for it)."""
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(_OUTSIDE_SCRIPT_RUN)
    thread = threading.Thread(target=warm, args=(data,), name=THREAD, daemon=True)
    thread.start()
    return thread
