"""Executors that run on this machine: in this process, or in a pool of local processes."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import OnnxFeError


class SerialExecutor:
    """Run each shard in turn in this process (``workers`` threads are left to the shard function)."""

    slots = 1  # shards that run at once
    remote = False  # shards run on the driver's own plan

    def map(
        self,
        fn: Callable[..., Any],
        plan: Any,
        bounds: Iterable[tuple[int, int]],
        workers: int,
        on_done: Callable[[int, int], None] | None = None,
    ) -> Iterator[Any]:
        for start, stop in bounds:
            r = fn(plan, start, stop, workers)
            if on_done is not None:
                on_done(start, stop)
            yield r

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_KEY = None  # in a worker process: the run's plan key, received once when the process starts

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: have the kernel kill this process (SIGKILL) when the process that started it dies, however it dies
    (``kill -9`` included). The fork server calls it (through its preload, :mod:`onnx_fe.execution._warm`), and so
    does every pool worker: the driver's death takes the fork server down, the fork server's its workers, and the
    resource tracker, whose pipe they all held, then reads its end and exits. Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # pragma: no cover - no prctl: the worker lives on as before
        return
    if os.getppid() == 1:  # the parent died before the request was made
        os._exit(1)


def _init_worker(key) -> None:
    global _KEY
    die_with_parent()
    _KEY = key
    # Ctrl-C goes to the whole process group: the driver handles it and stops the pool
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _call(fn, start: int, stop: int):
    """In a worker process: the plan is built from the key once per process (cached), then the shard runs."""
    return timed_call(fn, _KEY, start, stop)


def timed_call(fn, key, start: int, stop: int):
    """``fn(key.plan(), start, stop, 1)``, adding the time spent getting the plan (its build, on a process's first
    shard) to the result's ``seconds["setup"]`` when it has one."""
    t = time.perf_counter()
    plan = key.plan()
    t = time.perf_counter() - t
    r = fn(plan, start, stop, 1)
    if isinstance(getattr(r, "seconds", None), dict):
        r.seconds["setup"] = r.seconds.get("setup", 0.0) + t
    return r


# The user's main module is left alone in worker processes. multiprocessing runs it again in every new process
# (as __mp_main__) so that functions defined there can be unpickled; a script without an
# ``if __name__ == "__main__":`` guard then starts its run again in each worker, which fails, and a script fed on
# stdin cannot be run again at all. The shard functions live in onnx-fe, so the workers never need it: their
# processes are started with the main module's entry left out of multiprocessing's preparation data (for the thread
# that starts them only; any other process started in the meantime is prepared as usual).
_LEAVE_MAIN = threading.local()
_PREPARATION_DATA = None


def _preparation_data(name):
    d = _PREPARATION_DATA(name)
    if getattr(_LEAVE_MAIN, "on", False):
        d.pop("init_main_from_path", None)
        d.pop("init_main_from_name", None)
    return d


class _LeaveMain:
    """A process class mixin: start() prepares the new process without the user's main module."""

    def start(self):
        global _PREPARATION_DATA
        from multiprocessing import spawn

        with _INSTALL_LOCK:
            if _PREPARATION_DATA is None:
                _PREPARATION_DATA = spawn.get_preparation_data
                spawn.get_preparation_data = _preparation_data
        _LEAVE_MAIN.on = True
        try:
            super().start()
        finally:
            _LEAVE_MAIN.on = False


_INSTALL_LOCK = threading.Lock()

if hasattr(multiprocessing.context, "ForkServerContext"):

    class _ForkServerProcess(_LeaveMain, multiprocessing.context.ForkServerProcess):
        pass

    class _ForkServerContext(multiprocessing.context.ForkServerContext):
        Process = _ForkServerProcess


class _SpawnProcess(_LeaveMain, multiprocessing.context.SpawnProcess):
    pass


class _SpawnContext(multiprocessing.context.SpawnContext):
    Process = _SpawnProcess


def _context(leave_main: bool = False):
    """``forkserver`` where there is one: workers fork from a clean server process that has imported onnx-fe once
    (fast start, no threads inherited from the driver); ``spawn`` elsewhere. ``leave_main``: the workers do not run
    the user's main module again (the functions they run are not defined there)."""
    if sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = _ForkServerContext() if leave_main else multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["onnx_fe.execution._warm"])  # onnx-fe and its engines, loaded once
        return ctx
    return _SpawnContext() if leave_main else multiprocessing.get_context("spawn")


def prestart() -> None:
    """Start the fork server now (Linux), so that it loads onnx-fe and the engines while the driver builds its plan;
    the pool's workers fork from it later. Harmless where there is none."""
    ctx = _context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


class ProcessExecutor:
    """A pool of ``processes`` local worker processes, each computing one shard at a time with one thread.

    - Each process rebuilds the plan from ``plan.key()`` once (not once per shard) and keeps it for the next shards.
    - onnxruntime gets one thread in each process (``-j N`` uses N cores) unless the config sets ``threads``.
    - At most ``in_flight`` shards (default: twice the processes) are submitted and not yet handed to the driver,
      so a slow shard at the head holds back at most that many finished results in memory.
    - A worker process that dies (killed, out of memory) breaks the pool: it is started again and the shards that
      were lost are computed again (results unchanged), up to ``max_restarts`` times per run.
    """

    remote = True

    def __init__(self, processes: int, in_flight: int | None = None, max_restarts: int = 2):
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.processes = int(processes)
        self.slots = self.processes
        self.in_flight = int(in_flight or 2 * self.processes)
        self.max_restarts = int(max_restarts)
        self.restarts = 0
        self._pool: ProcessPoolExecutor | None = None
        self._pool_key = None  # the key the pool's processes were started with

    def _key(self, key):
        if hasattr(key, "with_threads"):  # -j N is N cores: one onnxruntime thread per process (unless --threads)
            key = key.with_threads(1)
        return key

    def _submit(self, fn, key, b: tuple[int, int]):
        if self._pool is not None and self._pool_key is not key:  # another run: workers with the new key
            self.close()
        if self._pool is None:  # the key (with the image listing) goes to each process once, not with each shard
            leave_main = getattr(fn, "__module__", None) != "__main__"
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=_context(leave_main), initializer=_init_worker, initargs=(key,)
            )
            self._pool_key = key
        try:
            return self._pool.submit(_call, fn, b[0], b[1])
        except BrokenProcessPool as e:  # it broke since the last look: handled like the shards it took down
            f: Future = Future()
            f.set_exception(e)
            return f

    def map(
        self,
        fn: Callable[..., Any],
        plan: Any,
        bounds: Iterable[tuple[int, int]],
        workers: int,
        on_done: Callable[[int, int], None] | None = None,
    ) -> Iterator[Any]:
        try:
            pickle.dumps(fn)
        except Exception as e:
            raise TypeError(f"the shard function cannot be sent to worker processes ({e}); run with -j 1") from None
        key = self._key(plan.key())
        todo = deque(bounds)
        order: deque[list] = deque()  # [bounds, future], submitted and not yet yielded, in the order of bounds
        reported: set[tuple[int, int]] = set()
        finished = False
        try:
            while todo or order:
                while todo and len(order) < self.in_flight:
                    b = todo.popleft()
                    order.append([b, self._submit(fn, key, b)])
                if not order[0][1].done():
                    wait([f for _, f in order if not f.done()], return_when=FIRST_COMPLETED)
                for b, f in order:
                    if b not in reported and _succeeded(f):
                        reported.add(b)
                        if on_done is not None:
                            on_done(*b)
                b, f = order[0]
                if not f.done():
                    continue
                if isinstance(f.exception(), BrokenProcessPool):
                    self._restart()
                    for item in order:
                        if not _succeeded(item[1]):
                            item[1] = self._submit(fn, key, item[0])
                    continue
                order.popleft()
                reported.discard(b)
                yield f.result()
            finished = True
        finally:
            if not finished:  # an error, Ctrl-C or the caller stopped early: stop the shards still running
                self._abort()

    def _restart(self) -> None:
        self.restarts += 1
        codes = self._abort()
        if self.restarts > self.max_restarts:
            raise OnnxFeError(
                f"a worker process died {self.restarts} times (the last time {death_cause(codes)}); the shards "
                "finished so far are saved and a new run resumes after them"
            )

    def _abort(self) -> list[int]:
        """Stop the pool at once; returns the exit codes of the processes that had already ended."""
        pool, self._pool = self._pool, None
        self._pool_key = None
        if pool is None:
            return []
        procs = list((getattr(pool, "_processes", None) or {}).values())
        codes = [p.exitcode for p in procs if p.exitcode is not None]
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # a running shard is lost anyway: do not wait for it
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(10)
        return codes

    def close(self) -> None:
        pool, self._pool = self._pool, None
        self._pool_key = None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# A pool costs each of its processes about a second before its first shard (onnx-fe, onnxruntime and the model
# loaded again), so a run whose whole work takes a core about as long is computed in this process: it is the
# default -j's choice only (results are the same either way). The work is counted in map pixels, every map also
# costing MAP_COST pixels (a birth point's fixed cost: see benchmarks/). IN_PROCESS_WORK: about 2 s of one core.
MAP_COST = 150
IN_PROCESS_WORK = 50_000_000


def estimated_work(n_images: int, maps) -> int:
    """The work of ``n_images`` images whose scored layers give ``maps``: (channels, height, width) per layer."""
    return int(n_images) * sum(int(c) * (int(h) * int(w) + MAP_COST) for c, h, w in maps)


def worth_a_pool(n_images: int, maps) -> bool:
    """Whether a pool of worker processes pays for its start, or the run is computed faster in this process."""
    return estimated_work(n_images, maps) >= IN_PROCESS_WORK


def death_cause(exitcodes) -> str:
    """How worker processes ended, in words, from their exit codes (negative: the signal that killed them)."""
    codes = [c for c in exitcodes if c]
    if not codes:
        return "it ended unexpectedly: see the messages above"
    if -signal.SIGKILL in codes:
        return (
            "it was killed (SIGKILL): out of memory, or killed by another process; a smaller --batch-size or "
            "fewer --workers need less memory"
        )
    c = codes[0]
    if c < 0:
        try:
            name = signal.Signals(-c).name
        except ValueError:
            name = f"signal {-c}"
        return f"it crashed ({name}): see the messages above"
    return f"it exited with status {c}: see the messages above"


def _succeeded(f) -> bool:
    return f.done() and not f.cancelled() and f.exception() is None
