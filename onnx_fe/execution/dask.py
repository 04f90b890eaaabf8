"""Run the shards on a Dask distributed cluster (``onnx-fe score --scheduler tcp://HOST:PORT``, ``client=``).

Needs the optional extra ``onnx-fe[dask]`` (``distributed``). What travels and what each worker does:

- **Tasks.** One task per shard, carrying only the plan's key (the config and two digests) and the bounds. A worker
  builds the plan once per process (cached) and keeps it for the next shards of the run.
- **The model.** Before the first task the driver asks every worker whether it sees the model file (same path, same
  size). If all do (a shared filesystem), the workers read it themselves. If any does not, the model's files are
  sent as bytes once per worker, in a worker plugin (:class:`ModelFiles`) that writes them to the worker's local
  directory and then drops them; workers that join later get the plugin too. Either way a worker checks the sha256
  of what it loads against the driver's.
- **The images** must be at the same path on every worker (a shared filesystem); the driver checks that each worker
  sees the path and each worker checks that it lists the same images.
- **The device.** Each worker chooses its own (``--device auto``: CUDA where its onnxruntime has a working GPU).
  onnxruntime gets as many threads as the Dask worker has unless the config sets ``threads``; run workers with one
  thread each (``--nthreads 1``) and as many worker processes as cores.
- **Failures.** A worker that dies mid-shard costs only that shard: the scheduler runs it again elsewhere and the
  result is the same. Results are handed to the driver in order, at most ``in_flight`` shards ahead.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import OnnxFeError, OptionError

_LOCAL_MODELS: dict[str, str] = {}  # in a worker: model sha256 → local copy written by ModelFiles


def _distributed():
    try:
        import distributed
    except ImportError:
        raise OptionError(
            "running on a Dask cluster needs the dask extra: pip install 'onnx-fe[dask]' (distributed)"
        ) from None
    return distributed


def _model_files(path: Path) -> dict[str, bytes]:
    """The model file and its external-data side files, by name relative to the model's directory."""
    import onnx

    files = {path.name: path.read_bytes()}
    skeleton = onnx.load(str(path), load_external_data=False)
    for t in skeleton.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location" and kv.value not in files:
                files[kv.value] = (path.parent / kv.value).read_bytes()
    return files


try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - only without the dask extra, where DaskExecutor refuses to start
    _WorkerPlugin = object


class ModelFiles(_WorkerPlugin):
    """Worker plugin: write the model's files into the worker's local directory once, then forget the bytes."""

    idempotent = True  # registering it again (a second run) does not send the bytes again to workers that have it

    def __init__(self, sha256: str, name: str, files: dict[str, bytes]):
        self.sha256, self.model_name, self.files = sha256, name, files
        self.name = f"onnx-fe-model-{sha256[:16]}"

    def setup(self, worker) -> None:
        d = Path(worker.local_directory) / "onnx-fe-models" / self.sha256
        d.mkdir(parents=True, exist_ok=True)
        for rel, data in (self.files or {}).items():
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".partial")
            tmp.write_bytes(data)
            os.replace(tmp, p)
        _LOCAL_MODELS[self.sha256] = str(d / self.model_name)
        self.files = None


def local_models() -> dict[str, str]:
    """On a worker: the models sent to it as bytes (sha256 → the local copy it loads); for ``client.run``."""
    return dict(_LOCAL_MODELS)


def _sees(path: str, size: int | None) -> bool:
    """On a worker: does ``path`` exist (with this size, for a file)?"""
    p = Path(path)
    if size is None:
        return p.exists()
    return p.is_file() and p.stat().st_size == size


def _dask_call(fn, key, start: int, stop: int):
    """On a worker: localise the model path if the driver sent the model's bytes, build the plan once (cached), and
    run the shard with one thread. ``key`` arrives as the worker's copy of data the driver scattered to all workers
    (once per worker, not with each task)."""
    from distributed import get_worker

    local = _LOCAL_MODELS.get(key.model_sha256)
    if local is not None:  # the model came as bytes: load this worker's copy
        key = dataclasses.replace(key, config=key.config.replace(model=local), prepared=None)
    key = key.with_threads(max(1, get_worker().state.nthreads))
    from .local import timed_call

    return timed_call(fn, key, start, stop)


class DaskExecutor:
    """Shards as tasks on a Dask cluster (see the module docstring). ``client``: a ``distributed.Client``.

    ``send_model``: None (default) sends the model's bytes only if some worker does not see its path; True always
    sends them (workers then load their own copy); False never does. ``in_flight``: shards submitted and not yet
    handed to the driver (default: twice the cluster's threads, plus two).
    """

    remote = True

    def __init__(
        self,
        client,
        in_flight: int | None = None,
        send_model: bool | None = None,
        own_client: bool = False,
        wait_s: float = 60,
        cluster=None,
        address: str | None = None,
    ):
        _distributed()
        self.client = client
        self.send_model = send_model
        self._in_flight = in_flight
        self._own = own_client
        self._cluster = cluster  # a cluster this executor started (dask-jobqueue): closed with it
        self.wait_s = wait_s
        self.address = address or getattr(getattr(client, "scheduler", None), "address", None)
        self.model_mode: str | None = None  # "path" or "bytes", once map() has decided
        self._quiet: _QuietDistributed | None = None  # Dask's log levels to restore when closed

    @classmethod
    def connect(cls, address: str, timeout: float = 10, **kw) -> DaskExecutor:
        """Connect to a running scheduler (the executor closes the connection when closed). An address where nothing
        answers, or where something else than a Dask scheduler answers, fails at once (a plain TCP connection is tried
        first, for at most 5 s), not after ``timeout``."""
        distributed = _distributed()
        _probe(address, min(5.0, timeout))
        quiet = _QuietDistributed()
        try:
            client = distributed.Client(address, timeout=f"{timeout}s", set_as_default=False)
        except Exception as e:  # whatever answers there, the user gets one line
            quiet.restore()
            raise OnnxFeError(f"cannot connect to the Dask scheduler at {address}: {_first_line(e)}") from None
        ex = cls(client, own_client=True, address=address, **kw)
        ex._quiet = quiet
        return ex

    @property
    def slots(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def _prepare(self, key, model_path: Path):
        """Wait for a worker, check the data path, and decide how the model reaches the workers."""
        try:
            self.client.wait_for_workers(1, timeout=self.wait_s)
        except TimeoutError:
            raise OnnxFeError(f"no Dask worker joined the scheduler in {self.wait_s:.0f} s") from None
        cfg = key.config
        blind = [w for w, ok in self.client.run(_sees, cfg.data, None).items() if not ok]
        if blind:
            raise OnnxFeError(
                f"the images at {cfg.data} are not reachable from Dask worker(s) {', '.join(sorted(blind))}: "
                "put them on a filesystem the workers share, at the same path (docs/scaling.md)"
            )
        size = model_path.stat().st_size
        if self.send_model is None:
            send = not all(self.client.run(_sees, cfg.model, size).values())
        else:
            send = self.send_model
        if not send:
            self.model_mode = "path"
        else:
            self.model_mode = "bytes"
            self.client.register_plugin(ModelFiles(key.model_sha256, model_path.name, _model_files(model_path)))

    def map(
        self,
        fn: Callable[..., Any],
        plan: Any,
        bounds: Iterable[tuple[int, int]],
        workers: int,
        on_done: Callable[[int, int], None] | None = None,
    ) -> Iterator[Any]:
        distributed = _distributed()
        key = plan.key()
        self._prepare(key, Path(key.config.model))
        limit = self._in_flight or 2 * self.slots + 2
        token = uuid.uuid4().hex[:8]
        shared = self.client.scatter(key, broadcast=True, hash=False)  # one copy per worker (image listing included)
        todo = deque(bounds)
        order: deque = deque()  # (bounds, future), submitted and not yet yielded, in the order of bounds
        reported: set[tuple[int, int]] = set()
        # Every wait goes through this client (never a default one: the CLI's client is not the default, and a
        # caller's need not be): each future wakes the driver through its own client's callback when it is done.
        woken = threading.Event()
        watch = _WorkerWatch(self.client, self.wait_s)
        try:
            while todo or order:
                while todo and len(order) < limit:
                    s, e = todo.popleft()
                    f = self.client.submit(
                        _dask_call, fn, shared, s, e, key=f"onnx-fe-shard-{s}-{e}-{token}", pure=False
                    )
                    f.add_done_callback(lambda _f: woken.set())
                    order.append(((s, e), f))
                woken.clear()  # a future done from here on sets it again; one done before is seen below
                fresh = False
                for b, f in order:
                    if b not in reported and f.status == "finished":
                        reported.add(b)
                        fresh = True
                        if on_done is not None:
                            on_done(*b)
                b, f = order[0]
                if not f.done():
                    if not fresh and not woken.wait(1.0):
                        watch.check(self._lost)
                    continue
                watch.progress()
                if f.cancelled():  # the client cancels every future when it loses the scheduler
                    raise self._lost()
                try:
                    r = f.result()
                except distributed.KilledWorker as e:
                    raise OnnxFeError(
                        f"images {b[0]}..{b[1] - 1} killed several Dask workers ({e}; out of memory? try a smaller "
                        "--batch-size or --shard-size); the shards before them are saved and a new run resumes there"
                    ) from None
                except distributed.client.FutureCancelledError:
                    raise self._lost() from None
                order.popleft()
                reported.discard(b)
                yield r
        finally:
            if order and self.client.status == "running":  # an error, Ctrl-C or the caller stopped early
                self.client.cancel([f for _, f in order])
            if self.client.status == "running":
                self.client.cancel([shared])

    def _lost(self) -> OnnxFeError:
        """The error for futures cancelled under the driver: by the client, when it lost the scheduler, or by the
        scheduler, when every worker that held the run's scattered key left (no worker left)."""
        if self.client.status == "running":
            return _no_workers_left("every Dask worker left the cluster mid-run (killed, or their jobs ended)")
        at = f" at {self.address}" if self.address else ""
        return OnnxFeError(
            f"lost the connection to the Dask scheduler{at} mid-run; the shards written so far are saved and the same "
            "command resumes after them (on this or another cluster, or locally)"
        )

    def close(self) -> None:
        try:
            if self._own:
                self.client.close()
            if self._cluster is not None:
                self._cluster.close()
        finally:
            if self._quiet is not None:
                self._quiet.restore()
                self._quiet = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _WorkerWatch:
    """Stops a run whose cluster has no worker left for ``wait_s`` seconds (all killed, jobs ended) instead of
    waiting for ever; asks the scheduler at most every few seconds, only while no shard finishes."""

    def __init__(self, client, wait_s: float):
        self.client, self.wait_s = client, wait_s
        self.since = time.monotonic()  # last progress, or the last time a worker was seen
        self.asked = 0.0

    def progress(self) -> None:
        self.since = time.monotonic()

    def check(self, lost: Callable[[], OnnxFeError]) -> None:
        now = time.monotonic()
        if now - self.asked < min(5.0, self.wait_s / 4):
            return
        self.asked = now
        if self.client.status != "running":
            raise lost()
        try:
            n = len(self.client.nthreads())
        except OSError:
            raise lost() from None
        if n:
            self.since = now
        elif now - self.since > self.wait_s:
            raise _no_workers_left(
                f"no Dask worker has been left in the cluster for {self.wait_s:.0f} s (killed, or their jobs ended)"
            )


def _no_workers_left(what: str) -> OnnxFeError:
    return OnnxFeError(f"{what}; the shards written so far are saved and the same command resumes after them")


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _probe(address: str, timeout: float) -> None:
    """Fail at once, with one line, where nothing accepts a TCP connection at the scheduler's host and port, or
    where what accepts it is not a Dask server (a Dask server speaks first: the length of its handshake). ``tcp``
    addresses are read from, ``tls``, ``ws`` and ``wss`` only connected to; others are left to Dask."""
    proto, _, rest = address.partition("://")
    if proto not in ("tcp", "tls", "ws", "wss"):
        return
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            if proto != "tcp":
                return
            sock.settimeout(timeout)
            head = b""
            try:
                while len(head) < 8:
                    got = sock.recv(8 - len(head))
                    if not got:
                        break
                    head += got
            except TimeoutError:
                pass
    except socket.gaierror as e:
        raise OnnxFeError(f"cannot connect to the Dask scheduler at {address}: unknown host {host} ({e})") from None
    except (OSError, ValueError) as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise OnnxFeError(
            f"cannot connect to the Dask scheduler at {address}: {why} (is the scheduler running there?)"
        ) from None
    if len(head) < 8 or not 0 < int.from_bytes(head, "little") < 1 << 24:
        raise OnnxFeError(
            f"cannot connect to the Dask scheduler at {address}: something answers there, but not a Dask scheduler "
            f"(no Dask handshake in {timeout:g} s)"
        )


class _QuietDistributed:
    """While onnx-fe owns the client (``--scheduler``, ``--cluster``), Dask's own log lines about the connection
    (reconnecting, closing) would follow the run's one-line error: keep them at ERROR and above (CRITICAL for the
    client's), and restore the levels afterwards."""

    NAMES = {"distributed.client": logging.CRITICAL, "distributed": logging.ERROR}

    def __init__(self):
        self.saved = {}
        for name, level in self.NAMES.items():
            lg = logging.getLogger(name)
            self.saved[name] = lg.level
            if lg.getEffectiveLevel() < level:
                lg.setLevel(level)

    def restore(self) -> None:
        for name, level in self.saved.items():
            logging.getLogger(name).setLevel(level)
        self.saved = {}
