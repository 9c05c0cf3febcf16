"""The ``ediqa`` process itself: an interrupt (Ctrl-C, SIGTERM) as one line, memory the allocator keeps,
the end of a job whose starting process is gone, and a folder for matplotlib where it has none."""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..progress import tell


def interrupted() -> int:
    """Say that the command was interrupted, in one line after any progress bar; the exit code."""
    io = sys.modules.get("EDIQALib.io")  # not imported: no read has sent stderr elsewhere
    if io is not None:
        io.restore_native_stderr()
    tell("ediqa: interrupted")
    return 130


def keep_freed_memory() -> None:
    """Ask glibc's allocator to keep freed memory for reuse instead of handing it back to the system.
    Each forward pass allocates and frees the same few tensors of several MB; by default glibc maps such
    blocks fresh or trims them from the heap, so every pass pays page faults to touch them again (a
    third of one student's time per 512² slice). The peak memory is unchanged. Elsewhere, a no-op."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB free at the heap's top
    libc.mallopt(-3, 1 << 25)  # M_MMAP_THRESHOLD: blocks up to 32 MiB come from the heap, not fresh maps


def interrupt_on_signal(signum: int, frame: object) -> None:
    """A signal handler that interrupts as Ctrl-C does (SIGTERM: ``kill``, the Slicer panel's Cancel)."""
    raise KeyboardInterrupt


def end_with_parent() -> None:
    """Started by :class:`~EDIQALib.runner.Runner` (the Slicer panel), end as its Cancel ends it once the
    process that started it is gone: killed or crashed, that process can cancel nothing, and the work (hours
    of labelling or training) would go on unseen until its next progress line failed. A daemon thread checks
    each second that the process named in ``PARENT_ENV`` still exists (not this process's parent: Slicer
    starts Python through a launcher, which outlives it); then it signals this process's group, which the
    runner made for the job, as Cancel does. Elsewhere, or when not started by a runner, a no-op."""
    from ..runner import PARENT_ENV

    parent = os.environ.pop(PARENT_ENV, "")  # not for this process's own children: their parent is this one
    if os.name != "posix" or not parent.isdigit():
        return

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a process of another user's: it exists
            pass
        return True

    def watch() -> None:
        while alive(int(parent)):
            time.sleep(1.0)
        os.killpg(os.getpgrp(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def _can_write_folder(folder: Path) -> bool:
    """Whether ``folder`` is, or could be made, a folder this process can write in (nothing is made)."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    return existing.is_dir() and os.access(existing, os.W_OK)


@contextmanager
def matplotlib_folder() -> Iterator[None]:
    """Where matplotlib cannot write its configuration and cache folders (a home folder that is not writable
    or does not exist, as in a container run under another user ID), a temporary one of its own, removed at
    the end: matplotlib would make one, print two lines about it on stderr on every run, and leave it behind
    (:func:`run` exits without the interpreter's clean-up); so too where ``MPLCONFIGDIR`` names a folder that
    cannot be written. Elsewhere, where ``MPLCONFIGDIR`` names one that can, or where no temporary folder can
    be made either (matplotlib then says why), a no-op. The folders are matplotlib's:
    under ``XDG_CONFIG_HOME`` and ``XDG_CACHE_HOME`` on Linux and FreeBSD, ``~/.matplotlib`` elsewhere."""
    try:
        if sys.platform.startswith(("linux", "freebsd")):
            folders = [Path(os.environ.get(xdg) or Path.home() / default) / "matplotlib"
                       for xdg, default in (("XDG_CONFIG_HOME", ".config"), ("XDG_CACHE_HOME", ".cache"))]
        else:
            folders = [Path.home() / ".matplotlib"]
        writable = all(_can_write_folder(f) for f in folders)
    except RuntimeError:  # no home folder to be found
        writable = False
    chosen = os.environ.get("MPLCONFIGDIR")
    if (_can_write_folder(Path(chosen)) if chosen else writable):
        yield
        return
    try:
        temporary = tempfile.TemporaryDirectory(prefix="ediqa-matplotlib-")
    except OSError:
        yield
        return
    with temporary as folder:
        os.environ["MPLCONFIGDIR"] = folder
        # its font cache is built on every run: matplotlib's note, after 5 s, that it is being built is no news
        logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
        yield
