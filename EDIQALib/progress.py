"""What the CLI shows while it works: progress as a terminal bar on stderr or JSON lines on stdout, and
one-line messages on stderr."""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

Progress = Callable[[str, int, int], None]  # (stage, done, total): what reports progress, all through the engine

_open_line = False  # a bar is drawn on stderr and its line not ended (a stage cut short by an error)


def end_line() -> None:
    """End the line of a bar cut short, so that what is written next to stderr starts a line of its own."""
    global _open_line
    if _open_line:
        sys.stderr.write("\n")
        _open_line = False


_ONE_LINE = str.maketrans({"\n": "\\n", "\r": "\\r"})


def say(kind: str, text: str) -> None:
    """``ediqa: <kind>: <text>`` as one line on stderr (:func:`tell`): a line break in ``text`` (a file's name
    may hold one) is written as ``\\n``."""
    tell(f"ediqa: {kind}: {text.translate(_ONE_LINE)}")


def tell(line: str) -> None:
    """``line`` on stderr, a progress bar's line cut short ended first. Where stderr cannot be written (a full
    device, a pipe whose reader has gone), nothing: there is nowhere else to say it."""
    try:
        end_line()
        sys.stderr.write(f"{line}\n")
    except OSError:
        pass


class ProgressReporter:
    """Callable ``(stage, done, total)``; ``mode`` is ``"bar"``, ``"jsonl"`` or ``"none"``."""

    def __init__(self, mode: str = "bar") -> None:
        self.mode = mode
        self._last = 0.0
        self._stage = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        global _open_line
        if self.mode == "jsonl":
            print(json.dumps({"stage": stage, "done": done, "total": total}), flush=True)
        elif self.mode == "bar" and sys.stderr.isatty():
            now = time.monotonic()
            if done < total and stage == self._stage and now - self._last < 0.2:
                return
            self._last, self._stage = now, stage
            width = 30
            filled = int(width * done / max(total, 1))
            sys.stderr.write(f"\r{stage:>15} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
            _open_line = done < total
            if not _open_line:
                sys.stderr.write("\n")
            sys.stderr.flush()
