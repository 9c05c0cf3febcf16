"""The runner with real child processes: ordered progress, result, one-line errors, cancel of the tree."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from EDIQALib import backgrounds
from EDIQALib.io import interrupts_held
from EDIQALib.runner import Runner
from EDIQALib.simulate import phantom
from conftest import ct_image


def test_progress_in_order_and_result(tmp_path):
    src = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=3, size=80, spacing=(0.7, 0.7, 2.0)), str(src))
    runner = Runner(["simulate", src, "--doses", "1,0.5", "--views", "60", "--out", tmp_path / "sim"])
    runner.start()
    outcome = runner.wait(timeout=300)
    events = runner.events()
    assert outcome.returncode == 0 and outcome.error is None
    assert [(e.stage, e.done, e.total) for e in events] == [("simulate", k, 3) for k in (1, 2, 3)]
    assert [Path(p).name for p in outcome.result["outputs"]] == ["ct_dose1_views60_ramp.nrrd", "ct_dose0.5_views60_ramp.nrrd"]
    assert all(Path(p).is_file() for p in outcome.result["outputs"])


def test_the_child_runs_in_the_folder_it_is_given_not_the_caller_s(tmp_path, monkeypatch):
    """``python -m`` puts its working folder first on the module path: Slicer's working folder could hold
    a ``json.py`` that the child would import instead of the standard library's."""
    src = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=80, spacing=(0.7, 0.7, 2.0)), str(src))
    (tmp_path / "json.py").write_text("raise SystemExit('a stray json.py was imported')\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    args = ["simulate", src, "--doses", "1", "--views", "60", "--out", tmp_path / "sim"]
    stray = Runner(args)
    stray.start()
    assert stray.wait(timeout=300).returncode != 0  # the hazard is real
    runner = Runner(args, cwd=Path(__file__).resolve().parent.parent)
    runner.start()
    outcome = runner.wait(timeout=300)
    assert outcome.returncode == 0, outcome.error
    assert [Path(p).name for p in outcome.result["outputs"]] == ["ct_dose1_views60_ramp.nrrd"]


def test_a_stray_line_before_the_result_does_not_hide_it(tmp_path):
    """A library's message on stdout (here printed by a wrapper of the interpreter) before the result line."""
    src = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=80, spacing=(0.7, 0.7, 2.0)), str(src))
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "a library says hello"\nexec {sys.executable} "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    runner = Runner(["simulate", src, "--doses", "1", "--views", "60", "--out", tmp_path / "sim"], python=str(python))
    runner.start()
    outcome = runner.wait(timeout=300)
    assert outcome.returncode == 0, outcome.error
    assert [Path(p).name for p in outcome.result["outputs"]] == ["ct_dose1_views60_ramp.nrrd"]


def test_a_child_that_leaves_a_process_behind_does_not_hold_up_its_result(tmp_path):
    """The child exits while a process it started still holds its output open: the wait ends with the
    child, and the leftover process is ended."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nsleep 600 &\necho $! > {tmp_path / "left.pid"}\nexec {sys.executable} "$@"\n',
                      encoding="utf-8")
    python.chmod(0o755)
    runner = Runner(["teacher", tmp_path / "missing.nrrd", "--out", tmp_path / "o"], python=str(python))
    runner.start()
    outcome = runner.wait(timeout=120)  # a hang (the leftover lives 600 s) would end in TimeoutExpired
    assert outcome.returncode == 2 and outcome.error.startswith("input not found")
    left = int((tmp_path / "left.pid").read_text(encoding="utf-8"))
    deadline = time.monotonic() + 5
    while _alive(left) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(left)


def test_warnings_of_a_successful_child_reach_the_caller(tmp_path):
    air = tmp_path / "air.nrrd"
    image = sitk.GetImageFromArray(np.random.default_rng(2).normal(-1000, 5, (1, 160, 160)).astype(np.float32))
    sitk.WriteImage(image, str(air))
    runner = Runner(["assess", air, "--modality", "ct", "--out", tmp_path / "out"])
    runner.start()
    outcome = runner.wait(timeout=300)
    assert outcome.returncode == 0 and outcome.error is None
    assert outcome.warnings == ["air: no slice is assessable (too little body for a lesion); it has no score (null in "
                                "result.json, NaN in Python)"]


def test_failing_child_surfaces_its_one_line_error(tmp_path):
    runner = Runner(["teacher", tmp_path / "missing.nrrd", "--out", tmp_path / "o"])
    runner.start()
    outcome = runner.wait(timeout=120)
    assert outcome.returncode == 2
    assert outcome.error.startswith("input not found")  # the line without its "ediqa: error: "
    assert outcome.stderr.startswith("ediqa: error: input not found")


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text(encoding="utf-8").split()
        except OSError:
            continue
        for k in map(int, kids):
            found.add(k)
            todo.append(k)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _end_group(pgid: int) -> None:
    """Kill what is left of a runner's process group (after a failed check: no workers left running)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_cancel_ends_the_child_and_its_children(tmp_path):
    # building the training bank runs worker processes: a child with children of its own. Its output is a
    # pipe, block-buffered as in Slicer's child environment (unless PYTHONUNBUFFERED is set, as here)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    runner = Runner(["train-detector", "--out", tmp_path / "run", "--phantoms", "2", "--bank-projections", "40",
                     "--workers", "2"], env=env)
    runner.start()
    try:
        deadline = time.monotonic() + 120
        kids: set[int] = set()
        while time.monotonic() < deadline and len(kids) < 2:
            time.sleep(0.5)
            kids = _descendants(runner.pid)
        assert len(kids) >= 2, "the bank workers did not start"
        events: list = []  # progress arrives while the child works (the panel's progress bar), not at its end
        while not events and time.monotonic() < deadline:
            time.sleep(0.2)
            events = runner.events()
        assert runner.running and events and events[0].stage == "bank", events
        pid = runner.pid
        runner.cancel()  # a polite signal, then, after a 3 s grace, a kill of the whole group
        # cancel alone ends them all (the Slicer panel cancels and never waits), not the group kill of a later wait
        deadline = time.monotonic() + 10  # the kernel's reaping of the workers, on a busy machine
        while any(_alive(k) for k in kids | {pid}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(k) for k in kids | {pid})
        assert not runner.running
        outcome = runner.wait(timeout=10)
        assert outcome.cancelled and outcome.returncode != 0
        assert not (tmp_path / "run" / "bank.npz").exists()  # nothing half-written
    finally:
        _end_group(runner.pid)


def _launcher(folder: Path) -> Path:
    """A launcher as Slicer's ``PythonSlicer`` is one: it runs Python as its child (no exec), and ends at
    once on SIGTERM."""
    launcher = folder / "launcher"
    launcher.write_text(f'#!/bin/sh\n{sys.executable} "$@"\n', encoding="utf-8")
    launcher.chmod(0o755)
    return launcher


def test_cancel_through_a_launcher_lets_the_command_end_as_on_ctrl_c(tmp_path):
    """The launcher ended at once on the polite signal, and the kill that followed at once ended Python
    before it could discard its unfinished output."""
    runner = Runner(["train-detector", "--out", tmp_path / "run", "--phantoms", "2", "--bank-projections", "40",
                     "--workers", "2"], python=str(_launcher(tmp_path)))
    runner.start()
    try:
        deadline, events = time.monotonic() + 120, []
        while not events and time.monotonic() < deadline:
            time.sleep(0.2)
            events = runner.events()
        assert events and events[0].stage == "bank", events
        runner.cancel(grace=120)  # time to end on a busy machine: the bank's projections under way end first
        outcome = runner.wait(timeout=10)
        assert outcome.cancelled and outcome.error == "interrupted", outcome
        assert not [p for p in (tmp_path / "run").rglob("*") if p.name.startswith(".tmp")]
    finally:
        _end_group(runner.pid)


def test_output_that_is_no_utf_8_neither_stops_the_reader_nor_loses_the_error(tmp_path):
    """A byte the reader could not decode ended its thread: the child then blocked on a full pipe, and its
    error line was lost."""
    child = tmp_path / "child"
    child.write_text("#!/bin/sh\nprintf 'caf\\351\\n' >&2\nhead -c 300000 /dev/zero | tr '\\0' '\\351'\n"
                     "printf 'ediqa: error: the end\\n' >&2\nexit 2\n", encoding="utf-8")
    child.chmod(0o755)
    runner = Runner(["assess"], python=str(child))
    runner.start()
    outcome = runner.wait(timeout=60)
    assert outcome.returncode == 2 and outcome.error == "the end"


def _fake_child(tmp_path, script: str) -> Runner:
    """A runner of a stand-in for the engine: ``script`` (Python) in place of ``python -m EDIQALib ...``."""
    child = tmp_path / "child"
    child.write_text(f"#!{sys.executable}\n{script}", encoding="utf-8")
    child.chmod(0o755)
    return Runner(["assess"], python=str(child))


def test_a_child_killed_by_a_signal_says_so_not_its_last_warning(tmp_path):
    """Killed (as for lack of memory), the child prints no error of its own: its last stderr line, a
    library's warning, was shown as the error."""
    runner = _fake_child(tmp_path, "import os, signal, sys\nsys.stderr.write('x.py:1: UserWarning: big\\n  warn()\\n')\n"
                                   "sys.stderr.flush()\nos.kill(os.getpid(), signal.SIGKILL)\n")
    runner.start()
    outcome = runner.wait(timeout=60)
    assert outcome.returncode == -signal.SIGKILL and not outcome.cancelled
    assert outcome.error == "the engine was stopped by SIGKILL, perhaps for lack of memory"
    assert "UserWarning: big" in outcome.stderr  # kept for the details


def test_a_crash_shows_its_exception_and_keeps_its_traceback(tmp_path):
    runner = _fake_child(tmp_path, "raise RuntimeError('something broke')\n")
    runner.start()
    outcome = runner.wait(timeout=60)
    assert outcome.returncode == 1 and outcome.error == "RuntimeError: something broke"
    assert outcome.stderr.startswith("Traceback")


@pytest.mark.parametrize("bad", ['{"stage": "x", "done": 1, "total": null}', '{"stage": "x", "done": 1, "total": Infinity}',
                                 '{"stage": "x", "done": "one", "total": 2}'])
def test_a_malformed_progress_line_neither_stops_the_reader_nor_hides_the_result(tmp_path, bad):
    """The reader ended on such a line: the child then blocked on a full pipe, and the job hung. A stray line
    after the result does not hide it either."""
    runner = _fake_child(tmp_path, f"import sys\nprint({bad!r})\nprint('x' * 300_000)\n"
                                   "print('{\"stage\": \"x\", \"done\": 2, \"total\": 2}')\n"
                                   f"print('{{\"score\": 0.5}}')\nprint('a library says goodbye')\nprint({bad!r})\n")
    runner.start()
    outcome = runner.wait(timeout=60)
    assert outcome.returncode == 0 and outcome.result == {"score": 0.5}
    assert [(e.stage, e.done, e.total) for e in runner.events()] == [("x", 2, 2)]


@pytest.mark.skipif(sys.platform != "linux", reason="reads processes from /proc")
@pytest.mark.parametrize("launcher", [False, True], ids=["python", "through-a-launcher"])
def test_the_child_ends_when_the_process_that_started_it_is_gone(tmp_path, launcher):
    """Slicer killed or crashed can cancel nothing: its job ends as on Cancel within seconds, though it
    would print no progress for minutes (one teacher repeat of 50 000 realisations); nothing is written.
    Slicer starts Python through a launcher (``PythonSlicer``) that outlives it: the job's parent is that."""
    src = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=160, spacing=(0.7, 0.7, 2.0)), str(src))
    out = tmp_path / "out"
    python = _launcher(tmp_path) if launcher else sys.executable
    job = ["teacher", str(src), "--realizations", "50000", "--repeats", "1", "--device", "cpu", "--out", str(out)]
    parent = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom EDIQALib.runner import Runner\n"
                               f"runner = Runner({job!r}, python={str(python)!r})\nrunner.start()\n"
                               "print(runner.pid, flush=True)\ntime.sleep(600)\n"], stdout=subprocess.PIPE, text=True)
    group = int(parent.stdout.readline())  # the runner's child leads the job's process group
    try:
        time.sleep(10)  # past loading torch and the detector: inside the repeat
        job_processes = {group} | _descendants(group)
        assert all(_alive(p) for p in job_processes) and len(job_processes) == 1 + launcher
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in job_processes) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in job_processes)
        assert not out.exists()
    finally:
        parent.kill()
        parent.wait()
        _end_group(group)


def test_the_child_s_own_ediqa_processes_do_not_watch_its_parent():
    """A command that runs ``ediqa`` in a process of its own (the bench's volume) does not pass the runner's
    parent on: that process's parent is the command, and it would end at once, its group with it."""
    from EDIQALib.runner import PARENT_ENV

    code = ("import os\nfrom EDIQALib.commands.process import end_with_parent\nend_with_parent()\n"
            f"print(os.environ.get({PARENT_ENV!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, PARENT_ENV: str(os.getpid())})
    assert proc.returncode == 0 and proc.stdout.strip() == "None", proc.stderr


def test_without_a_writable_home_an_error_is_still_one_line_and_nothing_is_left_in_the_temporary_folder(tmp_path):
    """Matplotlib, unable to write under the home folder (a container run under another user ID), printed two
    lines of its own before the error and left a folder in the temporary folder on every run."""
    home, temporary = tmp_path / "home", tmp_path / "tmp"
    home.write_text("a file where the home folder should be", encoding="utf-8")
    temporary.mkdir()
    src = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=80, spacing=(0.7, 0.7, 2.0)), str(src))
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    proc = subprocess.run([sys.executable, "-m", "EDIQALib", "assess", str(src), "--out", str(home / "out"),
                           "--progress", "none"], capture_output=True, text=True, timeout=300,
                          env={**env, "HOME": str(home), "TMPDIR": str(temporary)})
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"ediqa: error: cannot write {home / 'out' / 'result.json'}: {home} is a file, not a folder"], proc.stderr
    assert not list(temporary.iterdir())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_is_one_line_and_leaves_no_staging_behind(tmp_path, sig):
    """Ctrl-C (SIGINT to the terminal's process group) or ``kill``/Cancel (SIGTERM) while the bank's workers
    run: one line, not a traceback from each worker; nothing half-written, no worker left."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "EDIQALib", "train-detector", "--out", str(out), "--phantoms", "2",
                             "--bank-projections", "40", "--workers", "2", "--progress", "none"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # as a terminal's foreground program: a shell's background job (a CI runner's, at
                            # times) ignores Ctrl-C, and a child started from it would ignore it too
                            preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)])
    try:
        deadline, kids = time.monotonic() + 120, set()
        while time.monotonic() < deadline and len(kids) < 2:
            time.sleep(0.5)
            kids = _descendants(proc.pid)
        assert len(kids) >= 2, "the bank workers did not start"
        os.killpg(proc.pid, sig)
        _, stderr = proc.communicate(timeout=120)  # the bank's projections under way end first
        assert proc.returncode == 130 and stderr.strip() == "ediqa: interrupted", stderr
        assert not [p for p in out.rglob("*") if p.name.startswith(".tmp")] and not (out / "bank.npz").exists()
        deadline = time.monotonic() + 10
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(k) for k in kids)
    finally:
        _end_group(proc.pid)


def test_an_interrupt_before_the_command_starts_is_one_line():
    """Ctrl-C in the console entry's first steps, before the command's own handling began (as the watch on
    the starting process is set up), printed a traceback."""
    code = ("import EDIQALib.cli as cli\n"
            "def interrupted():\n    raise KeyboardInterrupt\n"
            "cli.end_with_parent = interrupted\ncli.run()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and proc.stderr == "ediqa: interrupted\n", proc.stderr

def test_an_interrupted_bank_waits_for_the_projections_under_way_only(monkeypatch):
    """Interrupted, the bank ran every projection its pool had queued before it let go (up to five at two
    workers; interrupted while handing them out, all of them): it now hands a projection out only to a free
    worker, so that the interrupt waits for those under way only."""
    futures = []

    class Recording(ProcessPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            futures.append(super().submit(fn, *args, **kwargs))
            return futures[-1]

    def interrupted(stage, done, total):
        raise KeyboardInterrupt

    monkeypatch.setattr(backgrounds, "ProcessPoolExecutor", Recording)
    with pytest.raises(KeyboardInterrupt):
        backgrounds.build_bank({"p": phantom(61, size=192, kind="body")}, 12, workers=2, progress=interrupted)
    assert len(futures) == 2 and all(f.done() for f in futures)


@pytest.mark.skipif(sys.platform != "linux", reason="workers end with their parent on Linux")
def test_the_bank_s_workers_end_with_the_process_that_started_them():
    """A second Ctrl-C while the bank waited for its projections ended the command at once (``os._exit``),
    and its workers, which ignore signals, ran on without it, holding the run's lock and the pipes."""
    code = ("import os, sys, time\nfrom EDIQALib import backgrounds\nprint(os.getpid(), flush=True)\n"
            "backgrounds._in_workers(time.sleep, [60, 60], 2)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    children = Path(f"/proc/{pid}/task/{pid}/children")
    deadline = time.monotonic() + 60
    while len(children.read_text().split()) < 2 and time.monotonic() < deadline:  # both workers started
        time.sleep(0.1)
    workers = [int(w) for w in children.read_text().split()]
    assert len(workers) >= 2
    time.sleep(1.0)  # their start (the end-with-parent setting among it) done
    parent.kill()
    parent.wait()

    def alive(worker: int) -> bool:
        try:
            return Path(f"/proc/{worker}/stat").read_text().split(") ")[-1][0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 10
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers)
    # under a fork server (Python 3.14's default on Linux) a worker's parent is the server, not the pool's
    # process: the workers run (the check that the parent still lived ended every one, and the pool broke)
    code = ("import multiprocessing\nfrom EDIQALib import backgrounds\nif __name__ == '__main__':\n"
            "    multiprocessing.set_start_method('forkserver')\n    print(backgrounds._in_workers(abs, [-1, -2], 2))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[1, 2]", proc.stderr[-2000:]


def test_an_interrupt_while_a_worker_is_started_is_delivered_once_it_is(ctrl_c_interrupts):
    """A worker forked while Ctrl-C arrived could die of it before it ignored it, with a traceback: while a
    job is handed out (and a worker perhaps forked), the interrupt is held, then delivered as it was."""
    handed_out = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            handed_out = True
    assert handed_out and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_cancel_ends_a_job_started_where_sigterm_is_ignored(tmp_path):
    """A job inherits the signal dispositions of the process that starts it: started from one that ignores
    SIGTERM, it ignored Cancel's polite signal, and only the kill after the grace ended it."""
    src = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=100, size=160, spacing=(0.7, 0.7, 2.0)), str(src))
    runner = Runner(["simulate", src, "--doses", "1,0.5", "--views", "720", "--out", tmp_path / "sim"])
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        runner.start()
    finally:
        signal.signal(signal.SIGTERM, previous)
    try:
        deadline, events = time.monotonic() + 120, []
        while not events and time.monotonic() < deadline:
            time.sleep(0.1)
            events = runner.events()
        assert events and events[-1].done < events[-1].total, events  # under way
        runner.cancel(grace=60)
        outcome = runner.wait(timeout=10)
        assert outcome.returncode == 130 and outcome.error == "interrupted", outcome
        assert not (tmp_path / "sim").exists()
    finally:
        _end_group(runner.pid)

def test_cancel_kills_a_child_that_ignores_the_polite_signal(tmp_path):
    """A child (and a process it started) that ignores SIGTERM is killed, group and all, once the grace
    is over: cancel returns, and nothing of the group is left. (The engine keeps a SIGTERM ignored when it
    starts; it overrode it once its imports were done, which this test passed only while they were slow.)"""
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\ntrap '' TERM\nsleep 600 &\necho $! > {tmp_path / 'left.pid'}\n"
                      f"exec {sys.executable} \"$@\"\n", encoding="utf-8")
    python.chmod(0o755)
    runner = Runner(["train-detector", "--out", tmp_path / "run", "--phantoms", "2", "--bank-projections", "40",
                     "--workers", "1"], python=str(python))
    runner.start()
    try:
        left_pid, deadline = tmp_path / "left.pid", time.monotonic() + 60
        while not (left_pid.exists() and left_pid.read_text(encoding="utf-8").strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = int(left_pid.read_text(encoding="utf-8"))
        pid = runner.pid
        cancel = threading.Thread(target=runner.cancel, kwargs={"grace": 1.0}, daemon=True)
        cancel.start()
        cancel.join(60)  # a hang bound: without the kill, cancel would wait for the whole training
        assert not cancel.is_alive(), "cancel did not return: the child ignored SIGTERM and was not killed"
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in (pid, left)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in (pid, left))
        outcome = runner.wait(timeout=10)
        assert outcome.cancelled and outcome.returncode == -signal.SIGKILL
    finally:
        _end_group(runner.pid)


def _assess_command(tmp_path: Path, *extra: str) -> list[str]:
    src = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=160, spacing=(0.7, 0.7, 2.0)), str(src))
    return [sys.executable, "-m", "EDIQALib", "assess", str(src), "--out", str(tmp_path / "out"), *extra]


def test_a_closed_stdout_is_no_traceback(tmp_path):
    """Started with stdout closed (``>&-``), the run ended in a traceback after its work (exit 1)."""
    command = " ".join(shlex.quote(a) for a in _assess_command(tmp_path, "--progress", "none"))
    proc = subprocess.run(["sh", "-c", f"exec {command} >&-"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert (tmp_path / "out" / "result.json").is_file()


def test_a_reader_that_goes_away_is_one_line(tmp_path):
    """``ediqa ... --progress jsonl | head -1``: the reader gone, a traceback and exit 120; now one line, and
    nothing written."""
    proc = subprocess.Popen(_assess_command(tmp_path, "--progress", "jsonl"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 2 and stderr.strip().splitlines() == [
        "ediqa: error: standard output was closed by the program reading it (a broken pipe)"], stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="/dev/full is Linux's")
def test_an_error_with_stderr_on_a_full_device_keeps_its_exit_code(tmp_path):
    """Saying the error failed too, inside its own handler: exit 1 or 120, not the error's 2."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "EDIQALib", "assess", str(tmp_path / "missing.nrrd"),
                               "--out", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=full, timeout=300)
    assert proc.returncode == 2 and proc.stdout == b""


def test_an_mplconfigdir_that_cannot_be_written_gets_a_temporary_folder(tmp_path):
    """matplotlib printed two lines about it and left a folder in the temporary folder on every run."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    not_a_folder = tmp_path / "mpl"
    not_a_folder.write_text("a file", encoding="utf-8")
    proc = subprocess.run(_assess_command(tmp_path, "--progress", "none"), capture_output=True, text=True,
                          timeout=300, env={**os.environ, "MPLCONFIGDIR": str(not_a_folder), "TMPDIR": str(temporary)})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert not [p for p in temporary.iterdir() if "matplotlib" in p.name]  # (torch leaves a cache folder of its own)


def test_a_current_folder_that_was_removed_is_one_line(tmp_path):
    """torch failed to load its libraries there (a oneMKL fatal error), and a relative --out was a bare
    'No such file or directory'."""
    script = f"mkdir gone && cd gone && rmdir ../gone && exec {shlex.quote(sys.executable)} -m EDIQALib assess ct.nrrd"
    proc = subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "ediqa: error: the current folder no longer exists (it was removed or moved): change to one that does"], proc.stderr
