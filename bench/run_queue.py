"""Run a benchmark's tasks side by side in worker processes, in order, until a deadline.

A task may need another (a training run needs its pretrained start): it waits until that one
has finished, while the tasks after it that need nothing waiting fill the free workers. No task
starts after the deadline, and the tasks still running then are stopped: a benchmark whose runs
are cached and resume from their last checkpoint continues them at its next call. This is what
a short lease of a GPU needs (many small trainings on one device, a fixed time), and what lets
a long benchmark on the CPU end at a chosen time. A SIGTERM to the calling process (``kill``,
a job scheduler's stop) stops the running tasks too, as the deadline does, before it ends. A task
whose error is one the caller names as passing (a run another process is training) is passed
over, with the tasks that need it, and the others go on.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Task:
    """``function(*args)`` (picklable: a module-level function), called ``name`` (unique), to
    start once the task named ``needs`` (if any) has finished."""

    name: str
    function: Callable[..., Any]
    args: tuple = ()
    needs: str | None = None


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # Raised in the main thread, so that run_tasks' ``finally`` stops the workers: left alone,
    # SIGTERM ends the caller at once and its workers train on, orphaned.
    print("run_queue: SIGTERM: stopping the running tasks", file=sys.stderr)
    raise SystemExit(128 + signum)


def _pass_over(
    task: Task,
    error: Exception,
    queue: list[Task],
    on_passed: Callable[[Task, Exception], None] | None,
) -> None:
    """Report ``task`` passed over for ``error``, and with it every queued task that needs it
    (and those that need them)."""
    if on_passed is not None:
        on_passed(task, error)
    for waiting in [t for t in queue if t.needs == task.name]:
        queue.remove(waiting)
        _pass_over(waiting, error, queue, on_passed)


def run_tasks(
    tasks: Sequence[Task],
    jobs: int,
    deadline_s: float | None = None,
    threads: int | None = 1,
    on_done: Callable[[Task, Any], None] | None = None,
    passing: tuple[type[Exception], ...] = (),
    on_passed: Callable[[Task, Exception], None] | None = None,
) -> dict[str, Any]:
    """Run ``tasks`` in their order, ``jobs`` at a time in spawned processes of ``threads``
    torch threads each (``None``: leave torch alone), a task once the one it ``needs`` has
    finished; call ``on_done(task, result)`` as each finishes. A task that raises one of the
    ``passing`` errors is passed over, and so are the tasks that need it: ``on_passed(task,
    error)`` is called for each (with the error of the task it needed), and the others go on.
    After ``deadline_s`` seconds from the call, no task starts and the running ones are
    stopped. Called from the main thread, a SIGTERM stops the running tasks and raises
    ``SystemExit(143)``.

    Returns ``{name: result}`` of the tasks that finished (all of them without a deadline,
    but for those passed over).

    Raises:
        ValueError: two tasks share a name, a task needs one that is not among them, or
            tasks wait on each other.
        Exception: a task's own error, unless one of ``passing`` (the other running tasks are
            stopped first).
        SystemExit: a SIGTERM came (status 143; the running tasks are stopped first).
    """
    names = [task.name for task in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    missing = sorted({task.needs for task in tasks if task.needs} - set(names))
    if missing:
        raise ValueError(f"tasks need {missing}, which are not among the tasks")
    start = time.monotonic()
    queue = list(tasks)
    finished: dict[str, Any] = {}
    running: dict[Future, Task] = {}
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        jobs,
        mp_context=context,
        initializer=None if threads is None else _limit_threads,
        initargs=() if threads is None else (threads,),
    )
    # Only the main thread may set a signal handler; the one it replaces comes back at the end
    # (None: one set from C, which Python cannot put back).
    handles_sigterm = threading.current_thread() is threading.main_thread()
    previous_handler = None
    try:
        if handles_sigterm:
            previous_handler = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        while queue or running:
            late = deadline_s is not None and time.monotonic() - start >= deadline_s
            if late:
                break
            for task in list(queue):
                if len(running) == jobs:
                    break
                if task.needs is None or task.needs in finished:
                    queue.remove(task)
                    running[pool.submit(task.function, *task.args)] = task
            if not running:
                raise ValueError(f"tasks wait on each other: {[t.name for t in queue]}")
            timeout = (
                None if deadline_s is None else max(0.0, start + deadline_s - time.monotonic())
            )
            done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                try:
                    finished[task.name] = future.result()
                except passing as error:
                    _pass_over(task, error, queue, on_passed)
                    continue
                if on_done is not None:
                    on_done(task, finished[task.name])
    finally:
        if running:
            # No public way to stop a pool's busy workers before Python 3.14's kill_workers().
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    return finished
