"""Stage 3 — inference: run the rewritten graph with onnxruntime, CUDA when it really loads."""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ..data.preprocess import to_input_dtype
from ..errors import OnnxFeError
from .graph import ConvUnit, LoadedModel, expose, load_model

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
    # a SIGINT the process inherited as ignored (nohup, `cmd &` in a script) stays ignored: no handler, no window
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
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


def _session(model_bytes_or_path, providers, quiet: bool, threads: int | None, lean: bool = False):
    ort = import_onnxruntime()

    # warnings such as cuDNN's "Conv running in Fallback mode" go to the default logger at run time
    ort.set_default_logger_severity(3)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    if lean:  # no second copy of the weights (pre-packed), no arena or memory pattern that keeps a batch's peak
        so.add_session_config_entry("session.disable_prepacking", "1")
        # the scoring process computes birth points right after each batch: idle intra-op threads that spin-wait
        # for the next run would take the cores from it (the default -j's in-process runs were 1.3× slower)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.enable_cpu_mem_arena = False
        so.enable_mem_pattern = False
    if quiet:  # CUDA provider loading failures are logged as errors, then onnxruntime falls back to CPU
        with _quiet_stderr():
            try:
                ort.set_default_logger_severity(4)
                return ort.InferenceSession(model_bytes_or_path, sess_options=so, providers=providers)
            finally:
                ort.set_default_logger_severity(3)
    return ort.InferenceSession(model_bytes_or_path, sess_options=so, providers=providers)


def _with_outputs(model: onnx.ModelProto, tensors: list[str]) -> int:
    """Add the tensors to the graph's outputs in place (undo with ``del model.graph.output[n:]``); return n."""
    n = len(model.graph.output)
    existing = {o.name for o in model.graph.output}
    elem = {vi.name: vi.type.tensor_type.elem_type for vi in list(model.graph.value_info) + list(model.graph.output)}
    for t in tensors:
        if t not in existing:
            model.graph.output.append(helper.make_tensor_value_info(t, elem.get(t, onnx.TensorProto.FLOAT), None))
            existing.add(t)
    return n


def _pruned(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto | None:
    """A new model whose outputs are ``outputs`` and which holds only the nodes (and initializers) they depend on:
    a classifier head after the last tap is neither loaded nor run. Built from the graph's pieces (the weights are
    references by now, so nothing large is copied). None when the graph has subgraphs (If, Loop, Scan)."""
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        return None
    producer = {o: k for k, n in enumerate(g.node) for o in n.output if o}
    seen: set[str] = set()
    need: set[int] = set()
    stack = list(outputs)
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        k = producer.get(t)
        if k is not None and k not in need:
            need.add(k)
            stack.extend(i for i in g.node[k].input if i)
    m = onnx.ModelProto()
    m.ir_version, m.producer_name, m.producer_version = model.ir_version, model.producer_name, model.producer_version
    m.domain, m.model_version = model.domain, model.model_version
    m.opset_import.extend(model.opset_import)
    m.functions.extend(model.functions)
    m.graph.name = g.name
    m.graph.node.extend(g.node[k] for k in sorted(need))
    m.graph.initializer.extend(t for t in g.initializer if t.name in seen)
    m.graph.sparse_initializer.extend(t for t in g.sparse_initializer if t.values.name in seen)
    m.graph.input.extend(i for i in g.input if i.name in seen)
    m.graph.value_info.extend(v for v in g.value_info if v.name in seen)
    declared = {o.name: o for o in g.output}
    elem = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.output)}
    for t in outputs:
        if t in declared:
            m.graph.output.append(declared[t])
        else:
            m.graph.output.append(helper.make_tensor_value_info(t, elem.get(t, onnx.TensorProto.FLOAT), None))
    return m


_ALIGN = 1 << 16  # offsets of the weights in the side file: a multiple of the page size, so onnxruntime maps them


def _move_weights_out(lm: LoadedModel) -> str:
    """Write the model's weights to one side file in a private temporary directory and turn the in-memory
    initializers into references to it (in place); return the directory. Done once per loaded model.

    onnxruntime then maps the weights from the file instead of holding its own copies, and the Python model keeps
    only the graph: the weights are in memory once (issue 12). Small tensors (< 1 kB) stay in the graph. The
    directory also holds the graph (``skeleton.onnx``) and the model's digest (``stamp.json``), so that other
    processes on this machine can use the same weights without reading the model again (:func:`load_prepared`).
    """
    d = weights_dir(lm)
    if d is not None:
        return d
    tmp = tempfile.TemporaryDirectory(prefix="onnx-fe-")
    offset = 0
    with open(os.path.join(tmp.name, "weights.bin"), "wb") as out:
        for t in lm.model.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL or len(t.raw_data) < 1024:
                continue
            offset = -(-offset // _ALIGN) * _ALIGN
            out.seek(offset)
            data = t.raw_data
            out.write(data)
            del t.external_data[:]
            for k, v in (("location", "weights.bin"), ("offset", str(offset)), ("length", str(len(data)))):
                e = t.external_data.add()
                e.key, e.value = k, v
            t.data_location = onnx.TensorProto.EXTERNAL
            t.ClearField("raw_data")
            offset += len(data)
            del data
    with open(os.path.join(tmp.name, "skeleton.onnx"), "wb") as out:
        out.write(lm.model.SerializeToString())
    with open(os.path.join(tmp.name, "stamp.json"), "w") as out:
        json.dump({"sha256": lm.sha256, "path": str(lm.path)}, out)
    lm._weights_dir = tmp  # removed when the loaded model is
    return tmp.name


def weights_dir(lm: LoadedModel) -> str | None:
    """The directory a lean runner keeps this model's weights in (None before the first lean runner)."""
    d = getattr(lm, "_weights_dir", None)
    return d if d is None or isinstance(d, str) else d.name


def load_prepared(d: str, sha256: str, path) -> LoadedModel | None:
    """The model another process of this machine prepared in ``d`` (:func:`_move_weights_out`), if it is there and
    is the model with this digest; its weights stay in the shared file (no copy). None otherwise."""
    try:
        with open(os.path.join(d, "stamp.json")) as f:
            if json.load(f)["sha256"] != sha256:
                return None
    except (OSError, ValueError, KeyError):
        return None
    lm = load_model(os.path.join(d, "skeleton.onnx"), external_data=False)
    lm.path, lm.sha256 = Path(path), sha256
    lm._weights_dir = d  # borrowed: its owner removes it
    return lm


_GRAPHS = itertools.count()


def make_runner(
    lm: LoadedModel,
    units: list[ConvUnit],
    device: str = "auto",
    threads: int | None = None,
    keep_outputs: bool = False,
    lean: bool = False,
) -> Runner:
    """Create an onnxruntime session whose outputs are the units' taps (and the model outputs if asked).

    ``lean``: keep the weights in memory once. The in-memory model's weights move to a temporary side file that
    onnxruntime maps (the model object keeps only its graph afterwards, so use it for nothing that needs weights;
    ``ConvUnit.weight_l1`` keeps the filter norms); the session holds only the nodes the outputs need (no classifier
    head after the last tap); weight pre-packing, the memory arena and memory patterns are off; no copy of the model
    is made or serialised with its weights. The outputs are bit-identical (measured on the zoo, ResNet-18, VGG11).
    """
    ort = import_onnxruntime()

    if device not in ("auto", "cpu", "cuda"):
        raise OnnxFeError(f"--device {device!r}: choose auto, cpu or cuda")
    taps = list(dict.fromkeys(u.tap for u in units))
    model_outputs = [o.name for o in lm.model.graph.output]
    wanted = (model_outputs + [t for t in taps if t not in model_outputs]) if keep_outputs else taps
    tmpdir = None
    if lean:
        d = _move_weights_out(lm)
        payload = os.path.join(d, f"graph-{os.getpid()}-{next(_GRAPHS)}.onnx")
        pruned = _pruned(lm.model, wanted or model_outputs)  # no taps: the model's outputs keep the graph valid
        if pruned is not None:
            with open(payload, "wb") as out:
                out.write(pruned.SerializeToString())
            del pruned
        else:  # subgraphs: not pruned, the taps are added to the whole graph's outputs for a moment
            n = _with_outputs(lm.model, taps)
            try:
                with open(payload, "wb") as out:
                    out.write(lm.model.SerializeToString())
            finally:
                del lm.model.graph.output[n:]
    else:
        m = expose(lm.model, taps)
        if m.ByteSize() < _PROTO_LIMIT:
            payload = m.SerializeToString()
        else:  # very large model: save beside a temporary external-data file
            tmpdir = tempfile.TemporaryDirectory(prefix="onnx-fe-")
            p = os.path.join(tmpdir.name, "model.onnx")
            onnx.save(m, p, save_as_external_data=True, location="model.onnx.data")
            payload = p
        del m
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
            sess = _session(payload, ["CPUExecutionProvider"], quiet=False, threads=threads, lean=lean)
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
                lean=lean,
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
                lean=lean,
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
        spec={
            "lm": lm,
            "units": units,
            "device": device,
            "threads": threads,
            "keep_outputs": keep_outputs,
            "lean": lean,
        },
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
