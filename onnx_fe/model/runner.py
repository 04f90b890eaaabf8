"""Stage 3 — inference: run the rewritten graph with onnxruntime, CUDA when it really loads."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx

from ..data.preprocess import to_input_dtype
from ..errors import OnnxFeError
from .graph import ConvUnit, LoadedModel, expose

# smallest map side on which a method can find a hole: a 4-connected ring around one pixel (3), a cycle of
# four vertices in the flag complex (4)
MIN_SIDE = {"cubical": 3, "clique": 4}

_PROTO_LIMIT = 1_900_000_000  # stay below protobuf's 2 GB message limit

ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


@contextmanager
def _quiet_stderr():
    """Silence onnxruntime's provider-loading messages for a moment: native writes to
    file descriptors 1 and 2 and Python-level prints (``preload_dlls`` prints)."""
    import io
    import sys
    from contextlib import redirect_stderr, redirect_stdout

    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass
    saved = []
    try:
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
    except OSError:  # no such descriptor: nothing to silence there
        pass
    with open(os.devnull, "w") as null, redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        for fd, _ in saved:
            os.dup2(null.fileno(), fd)
        try:
            yield
        finally:
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)


def ort_message(e: BaseException) -> str:
    """onnxruntime's whole error message on one line (it spans several lines; the reason is often not in the
    first, e.g. "Got: 12 Expected: 1")."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return " ".join(text.split()) or type(e).__name__


def import_onnxruntime():
    """``import onnxruntime`` with Ctrl-C held back until the import is over.

    onnxruntime's native module turns an interrupt during its initialisation into an ``ImportError`` (after
    printing a traceback itself); holding SIGINT back for the fraction of a second the import takes turns it
    into a plain KeyboardInterrupt afterwards instead."""
    import sys

    if "onnxruntime" in sys.modules and hasattr(sys.modules["onnxruntime"], "InferenceSession"):
        return sys.modules["onnxruntime"]
    import signal
    import threading

    got: list[int] = []
    old = None
    if threading.current_thread() is threading.main_thread():
        try:
            old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
        except (ValueError, OSError):
            old = None
    try:
        import onnxruntime
    except ImportError as e:
        if got:
            raise KeyboardInterrupt from None
        raise OnnxFeError(f"cannot import onnxruntime: {ort_message(e)}") from None
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    if got:
        raise KeyboardInterrupt
    return onnxruntime


@dataclass
class Runner:
    session: object
    device: str  # "cpu" | "cuda"
    providers: list[str]
    input_name: str
    input_dtype: type
    outputs: list[str]
    spec: dict | None = None  # make_runner's arguments: how to build the session again in another process
    fixed_batch: int | None = None  # the input's batch dim when the model fixes it (e.g. 1)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Outputs for a batch of any size; the session is (re)built on first use after unpickling. A model with a
        fixed batch is run in pieces of that size (the last one padded by repeating its last sample, whose extra
        outputs are dropped)."""
        if self.session is None:
            self._rebuild()
        x = to_input_dtype(x, self.input_dtype)
        fb = self.fixed_batch
        if not fb or len(x) == fb:
            return self.session.run(self.outputs, {self.input_name: x})
        parts = []
        for s in range(0, len(x), fb):
            piece = x[s : s + fb]
            n = len(piece)
            if n < fb:
                piece = np.concatenate([piece, np.repeat(piece[-1:], fb - n, axis=0)])
            parts.append([o[:n] for o in self.session.run(self.outputs, {self.input_name: piece})])
        return [np.concatenate([p[i] for p in parts]) for i in range(len(self.outputs))]

    def _rebuild(self) -> None:
        if self.spec is None:
            raise RuntimeError("this runner has no session and no spec to build one")
        fresh = make_runner(**self.spec)
        self.session, self.device, self.providers = fresh.session, fresh.device, fresh.providers
        self._tmpdir = fresh._tmpdir

    def __getstate__(self) -> dict:
        """Pickle without the onnxruntime session (not picklable); it is rebuilt lazily from ``spec``."""
        state = {k: v for k, v in self.__dict__.items() if k != "_tmpdir"}
        state["session"] = None
        return state


def _session(model_bytes_or_path, providers, quiet: bool, threads: int | None):
    ort = import_onnxruntime()

    # warnings such as cuDNN's "Conv running in Fallback mode" go to the default logger at run time
    ort.set_default_logger_severity(3)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    if quiet:  # CUDA provider loading failures are logged as errors, then onnxruntime falls back to CPU
        with _quiet_stderr():
            try:
                ort.set_default_logger_severity(4)
                return ort.InferenceSession(model_bytes_or_path, sess_options=so, providers=providers)
            finally:
                ort.set_default_logger_severity(3)
    return ort.InferenceSession(model_bytes_or_path, sess_options=so, providers=providers)


def make_runner(
    lm: LoadedModel, units: list[ConvUnit], device: str = "auto", threads: int | None = None, keep_outputs: bool = False
) -> Runner:
    """Create an onnxruntime session whose outputs are the units' taps (and the model outputs if asked)."""
    ort = import_onnxruntime()

    if device not in ("auto", "cpu", "cuda"):
        raise OnnxFeError(f"--device {device!r}: choose auto, cpu or cuda")
    taps = list(dict.fromkeys(u.tap for u in units))
    model_outputs = [o.name for o in lm.model.graph.output]
    wanted = (model_outputs + [t for t in taps if t not in model_outputs]) if keep_outputs else taps
    m = expose(lm.model, taps)
    tmpdir = None
    if m.ByteSize() < _PROTO_LIMIT:
        payload = m.SerializeToString()
    else:  # very large model: save beside a temporary external-data file
        tmpdir = tempfile.TemporaryDirectory(prefix="onnx-fe-")
        p = os.path.join(tmpdir.name, "model.onnx")
        onnx.save(m, p, save_as_external_data=True, location="model.onnx.data")
        payload = p
    cuda_ok = "CUDAExecutionProvider" in ort.get_available_providers()
    if cuda_ok and device != "cpu" and hasattr(ort, "preload_dlls"):
        # CUDA/cuDNN installed as pip packages (onnxruntime-gpu[cuda,cudnn]) are found this way
        with _quiet_stderr():
            try:
                ort.preload_dlls()
            except Exception:
                pass
    try:
        if device == "cpu" or (device == "auto" and not cuda_ok):
            sess = _session(payload, ["CPUExecutionProvider"], quiet=False, threads=threads)
        elif device == "cuda":
            if not cuda_ok:
                raise OnnxFeError(
                    "--device cuda: this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
                )
            sess = _session(
                payload,
                [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "DEFAULT"}), "CPUExecutionProvider"],
                quiet=True,
                threads=threads,
            )
            if "CUDAExecutionProvider" not in sess.get_providers():
                raise OnnxFeError(
                    "--device cuda: the CUDA provider could not be loaded (no GPU, or CUDA/cuDNN libraries "
                    "missing); use --device cpu or auto"
                )
        else:
            sess = _session(
                payload,
                [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "DEFAULT"}), "CPUExecutionProvider"],
                quiet=True,
                threads=threads,
            )
    except OnnxFeError:
        raise
    except Exception as e:
        raise OnnxFeError(f"onnxruntime cannot load {lm.path.name}: {ort_message(e)}") from None
    used = "cuda" if "CUDAExecutionProvider" in sess.get_providers() else "cpu"
    inp = sess.get_inputs()[0]
    dtype = ORT_TO_NUMPY.get(inp.type)
    if dtype is None:
        raise OnnxFeError(f"unsupported model input type {inp.type}")
    batch = inp.shape[0] if inp.shape else None
    runner = Runner(
        session=sess,
        device=used,
        providers=sess.get_providers(),
        input_name=inp.name,
        input_dtype=dtype,
        outputs=wanted,
        spec={"lm": lm, "units": units, "device": device, "threads": threads, "keep_outputs": keep_outputs},
        fixed_batch=batch if isinstance(batch, int) and batch > 0 else None,
    )
    runner._tmpdir = tmpdir  # keep alive with the session
    return runner


def probe_shapes(runner: Runner, units: list[ConvUnit], sample: np.ndarray) -> None:
    """Fill channels/height/width of each unit by running one sample; mark 1×1 outputs unscorable."""
    try:
        outs = runner.run(sample[:1])
    except Exception as e:
        raise OnnxFeError(f"the model failed on the input: {ort_message(e)}") from None
    by_tap = dict(zip(runner.outputs, outs))
    for u in units:
        a = by_tap[u.tap]
        if a.ndim != 4:
            u.reason = f"output has rank {a.ndim}, not 4"
            continue
        u.channels, u.height, u.width = int(a.shape[1]), int(a.shape[2]), int(a.shape[3])
        if u.height * u.width <= 1:
            u.reason = "1×1 output (no spatial map)"
        elif min(u.height, u.width) < MIN_SIDE["cubical"]:
            u.reason = (
                f"{u.height}×{u.width} map: too small for a birth point "
                f"(a hole needs a ring around a pixel, so at least {MIN_SIDE['cubical']}×{MIN_SIDE['cubical']})"
            )
