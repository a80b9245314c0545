"""bench/run_queue.py: tasks in worker processes, in order, after what they need, and stopped at
a deadline. Standard-library callables stand in for trainings (spawned workers import them)."""

import math
import operator
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from run_queue import Task, run_tasks  # noqa: E402


def test_a_task_starts_after_the_one_it_needs_while_others_fill_the_workers(tmp_path):
    """ "start" ends only once "run from scratch" has run beside it (it waits for its file, 60 s
    at most), and "run from the start" waits for "start"."""
    signal = tmp_path / "scratch ran"
    wait_for_signal = (
        f"for i in $(seq 600); do [ -e '{signal}' ] && exit 0; sleep 0.1; done; exit 1"
    )
    order = []
    tasks = [
        Task("start", subprocess.call, (["bash", "-c", wait_for_signal],)),
        Task("run from the start", operator.add, (1, 2), needs="start"),
        Task("run from scratch", signal.touch),
    ]
    results = run_tasks(tasks, jobs=2, threads=None, on_done=lambda t, _: order.append(t.name))
    assert results == {"start": 0, "run from the start": 3, "run from scratch": None}
    assert order == ["run from scratch", "start", "run from the start"]


def test_the_deadline_stops_running_tasks_and_starts_no_more():
    tasks = [Task("long", time.sleep, (120,)), Task("after it", operator.add, (1, 1))]
    began = time.monotonic()
    results = run_tasks(tasks, jobs=1, deadline_s=3, threads=None)
    assert results == {}
    assert time.monotonic() - began < 60  # the sleeping worker was stopped, not waited for


_STOPPED_BY_SIGTERM = """
import sys, time
from pathlib import Path
sys.path.insert(0, {bench!r})
from run_queue import Task, run_tasks
run_tasks(
    [Task("long", time.sleep, (300,)), Task("mark", Path({mark!r}).touch)], jobs=2, threads=None
)
"""


def _children(pid: int) -> set[int]:
    listing = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(line) for line in listing.split()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended


def test_sigterm_stops_the_workers_with_the_caller(tmp_path):
    """A benchmark killed with SIGTERM takes its workers with it: none trains on, orphaned."""
    mark = tmp_path / "workers started"
    bench = str(Path(__file__).resolve().parents[1] / "bench")
    script = _STOPPED_BY_SIGTERM.format(bench=bench, mark=str(mark))
    caller = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    # The caller's children: its two workers and multiprocessing's resource tracker.
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert mark.exists(), "the workers never started"
        children = _children(caller.pid)
        assert len(children) >= 2 and all(_alive(pid) for pid in children)
        caller.terminate()
        _, stderr = caller.communicate(timeout=60)
        assert caller.returncode == 143, stderr
        assert "SIGTERM: stopping the running tasks" in stderr
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in children)
    finally:  # leave no sleeping process behind, whatever failed
        for pid in (caller.pid, *children):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        caller.wait(timeout=60)


def test_workers_run_with_the_threads_asked_for():
    import torch

    results = run_tasks([Task("threads", torch.get_num_threads)], jobs=1, threads=1)
    assert results == {"threads": 1}


def test_a_failing_task_raises_its_error():
    with pytest.raises(ValueError, match="math domain error"):
        run_tasks([Task("bad", math.sqrt, (-1.0,)), Task("good", abs, (-2,))], jobs=1, threads=None)


def test_bad_task_lists_are_refused_with_the_names():
    with pytest.raises(ValueError, match=r"task names repeat: \['a'\]"):
        run_tasks([Task("a", abs, (1,)), Task("a", abs, (2,))], jobs=1)
    with pytest.raises(ValueError, match=r"need \['nowhere'\]"):
        run_tasks([Task("a", abs, (1,), needs="nowhere")], jobs=1)
    with pytest.raises(ValueError, match="wait on each other"):
        run_tasks([Task("a", abs, (1,), needs="b"), Task("b", abs, (2,), needs="a")], jobs=1)


def test_a_task_with_a_passing_error_is_passed_over_with_those_that_need_it(tmp_path):
    """A run another process is training (here: a missing file's FileNotFoundError) leaves the
    other tasks going; the task that needs it is passed over with its error, not left waiting."""
    missing = tmp_path / "held elsewhere"
    passed = []
    tasks = [
        Task("held", os.stat, (missing,)),
        Task("from it", operator.add, (1, 2), needs="held"),
        Task("free", abs, (-2,)),
    ]
    results = run_tasks(
        tasks,
        jobs=1,
        threads=None,
        passing=(FileNotFoundError,),
        on_passed=lambda task, error: passed.append(
            (task.name, type(error), str(missing) in str(error))
        ),
    )
    assert results == {"free": 2}
    assert passed == [("held", FileNotFoundError, True), ("from it", FileNotFoundError, True)]
    with pytest.raises(FileNotFoundError):  # an error not named passing still stops the call
        run_tasks(tasks, jobs=1, threads=None, passing=(PermissionError,))
