"""Progress reporting for the CLI: a terminal bar on stderr, or JSON lines on stdout."""
from __future__ import annotations

import json
import sys
import time


class ProgressReporter:
    """Callable ``(stage, done, total)``; ``mode`` is ``"bar"``, ``"jsonl"`` or ``"none"``."""

    def __init__(self, mode: str = "bar") -> None:
        self.mode = mode
        self._last = 0.0
        self._stage = None

    def __call__(self, stage: str, done: int, total: int) -> None:
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
            if done >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()
