"""Run ``ediqa`` commands in a child process with progress events and cancel (used by the Slicer module).

The child runs ``python -m EDIQALib <command> ... --progress jsonl`` in its own process group, so that
cancelling ends it *and* its children (e.g. simulation workers). A reader thread turns the child's
JSON-lines progress into events on a queue; the caller drains them from its own thread (a GUI timer).
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


WARNING_PREFIX = "ediqa: warning: "
ERROR_PREFIX = "ediqa: error: "
PROGRESS_START = '{"stage"'  # how a progress event's line (``--progress jsonl``) begins
PARENT_ENV = "EDIQA_PARENT_PID"  # the process that started the child: the child ends when it is gone


@dataclass
class ProgressEvent:
    """One progress event of the child."""

    stage: str
    done: int
    total: int


@dataclass
class RunResult:
    """How the child ended: exit code, its JSON result (``None`` when it printed none), what went wrong in one
    line (:func:`error_line`; ``None`` on success), its warning lines (``ediqa: warning: ...`` without the
    prefix, e.g. an input without an assessable slice) and its whole stderr, for the details of a failure."""

    returncode: int
    result: object | None
    error: str | None
    cancelled: bool = False
    warnings: list[str] = field(default_factory=list)
    stderr: str = ""


class Runner:
    """A background ``ediqa`` command.

    Example::

        runner = Runner(["teacher", "ct.nrrd", "--out", "out"])
        runner.start()
        while runner.running:
            for event in runner.events(): ...
        outcome = runner.wait()
    """

    def __init__(self, args: Sequence[str], python: str = sys.executable, env: dict | None = None,
                 cwd: str | os.PathLike | None = None) -> None:
        self.args = [python, "-m", "EDIQALib", *map(str, args), "--progress", "jsonl"]
        self.env = env
        self.cwd = cwd  # ``python -m`` puts its working folder first on the module path
        self._proc: subprocess.Popen | None = None
        self._events: queue.Queue[ProgressEvent] = queue.Queue()
        self._output: list[str] = []
        self._stderr = ""
        self._cancelled = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the child in a new process group (session on POSIX; on Windows without a console window,
        which would close the job with it). On POSIX the child ends, as on Cancel, when this process is gone
        (``PARENT_ENV``)."""
        kwargs: dict = {"start_new_session": True} if os.name == "posix" else {
            "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
        # its output in UTF-8 whatever the locales (one undecodable byte ended the reader, and the child then
        # blocked on a full pipe); a byte that is none anyway is replaced, not fatal
        env = {**(os.environ if self.env is None else self.env), PARENT_ENV: str(os.getpid()),
               "PYTHONIOENCODING": "utf-8"}
        self._proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8",
                                      errors="replace", env=env, cwd=self.cwd, bufsize=1, **kwargs)
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """Whether the command is still running."""
        return self._proc is not None and self._proc.poll() is None

    def _read_stdout(self) -> None:
        assert self._proc and self._proc.stdout
        for line in self._proc.stdout:
            event = _progress_event(line)
            if event is not None:
                self._events.put(event)
            else:
                self._output.append(line)

    def _read_stderr(self) -> None:
        assert self._proc and self._proc.stderr
        self._stderr = self._proc.stderr.read()

    def events(self) -> list[ProgressEvent]:
        """Progress events received since the last call, in order."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def wait(self, timeout: float | None = None) -> RunResult:
        """Wait for the child to end and collect its result."""
        assert self._proc is not None, "start() first"
        code = self._proc.wait(timeout)
        if os.name == "posix":  # leftovers of its group would hold the output pipes open, and this wait
            _signal_group(self._proc.pid, signal.SIGKILL)  # with them: the command's work is done
        for t in self._threads:
            t.join(timeout=10)
        lines = [ln for ln in self._stderr.splitlines() if ln.strip()]
        warnings = [ln.removeprefix(WARNING_PREFIX) for ln in lines if ln.startswith(WARNING_PREFIX)]
        return RunResult(code, _last_json(self._output), error_line(code, lines) if code != 0 else None,
                         self._cancelled, warnings, self._stderr)

    def cancel(self, grace: float = 3.0) -> None:
        """End the child and its whole process group: a polite signal first, then, once the group is gone or
        after ``grace`` seconds, a kill. The group is waited for, not the child alone: Slicer's child is a
        launcher (``PythonSlicer``) that ends at once and leaves its own child, Python, ending the command as
        on Ctrl-C (discarding a write under way). On Windows, which has no such signal, the group is killed at
        once: a write under way leaves its hidden ``.tmp-*`` folder in the output folder."""
        if not self.running:
            return
        self._cancelled = True
        assert self._proc is not None
        if os.name == "posix":
            _signal_group(self._proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _group_exists(self._proc) and time.monotonic() < deadline:
                time.sleep(0.05)
            _signal_group(self._proc.pid, signal.SIGKILL)  # leftovers of the group, if any
        else:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._proc.pid)], capture_output=True,
                           creationflags=subprocess.CREATE_NO_WINDOW)  # no console flashed over Slicer
        self._proc.wait()


def _progress_event(line: str) -> ProgressEvent | None:
    """The progress event a line of the child's stdout is, or ``None`` (a result, or a stray message)."""
    if not line.startswith(PROGRESS_START):
        return None
    try:
        e = json.loads(line)
        return ProgressEvent(str(e["stage"]), int(e["done"]), int(e["total"]))
    except (ValueError, KeyError, TypeError, OverflowError):  # not one after all: kept as output
        return None


def _last_json(lines: list[str]) -> object | None:
    """The command's result: the last line of its stdout that is JSON (``--progress jsonl`` prints it on one
    line) and no progress event (a malformed one); a library's stray message before or after it is not part
    of it."""
    for line in reversed(lines):
        if line.startswith(PROGRESS_START):
            continue
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


def error_line(returncode: int, stderr_lines: list[str]) -> str | None:
    """What went wrong, in one line, for a child that ended with ``returncode`` (not 0): the command's own
    line (``ediqa: error: ...`` without its prefix, or ``ediqa: interrupted``); for a child killed by a
    signal, which prints none, the signal; else (a crash) the last line it printed, a traceback's exception."""
    own = [ln for ln in stderr_lines if ln.startswith("ediqa: ") and not ln.startswith(WARNING_PREFIX)]
    if own:
        return own[-1].removeprefix(ERROR_PREFIX).removeprefix("ediqa: ")
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        cause = ", perhaps for lack of memory" if returncode == -getattr(signal, "SIGKILL", 9) else ""
        return f"the engine was stopped by {name}{cause}"
    return stderr_lines[-1] if stderr_lines else None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):  # gone (macOS answers EPERM for a group of unreaped processes)
        pass


def _group_exists(leader: subprocess.Popen) -> bool:
    """Whether a process of ``leader``'s group is left; ``leader`` itself is reaped once it has ended (an
    unreaped process still counts in its group)."""
    leader.poll()
    try:
        os.killpg(leader.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
