"""Shared helpers for building the onnx-fe model zoo.

Everything here is deterministic given a seed: data come from scikit-learn's
bundled ``load_digits`` or are generated procedurally (see ``shapes.py``).
Nothing is downloaded.  torch is only needed to *build* models, never to score.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
REPO_DIR = MODELS_DIR.parent
OPSET = 17


# --------------------------------------------------------------------------- #
# determinism
# --------------------------------------------------------------------------- #
def seed_everything(seed: int) -> None:
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)


def rel(p: Path) -> str:
    """Path relative to the repository root, as a posix string."""
    return Path(p).resolve().relative_to(REPO_DIR).as_posix()


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


# --------------------------------------------------------------------------- #
# digits data (scikit-learn bundled, no download)
# --------------------------------------------------------------------------- #
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 0.25


def load_digits_uint8(size: int = 32):
    """Return (x_train, y_train, x_test, y_test) with x as uint8 [N, size, size].

    digits values 0..16 are scaled to 0..255 (float), bilinearly upsampled
    8x8 -> size x size (align_corners=False, as torch/PIL-free reference), then
    rounded and clipped to uint8.  The network is trained on exactly
    ``uint8 / 255``, which is also what loading the saved PNGs and multiplying
    by 1/255 gives.  Fixed stratified split (seed 0, 25 % test).
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float64) * (255.0 / 16.0)  # [N, 8, 8] in 0..255
    y = d.target.astype(np.int64)
    xt = torch.from_numpy(x).float().unsqueeze(1)
    up = F.interpolate(xt, size=(size, size), mode="bilinear", align_corners=False)
    x_u8 = up.squeeze(1).round().clamp(0, 255).to(torch.uint8).numpy()
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=DIGITS_TEST_SIZE, random_state=DIGITS_SPLIT_SEED, stratify=y)
    tr, te = np.sort(tr), np.sort(te)
    return x_u8[tr], y[tr], x_u8[te], y[te]


# --------------------------------------------------------------------------- #
# image folders
# --------------------------------------------------------------------------- #
def save_image_folder(
    root: Path, x_u8: np.ndarray, y: np.ndarray, per_class: int, seed: int = 0, class_names=None
) -> dict:
    """Save up to ``per_class`` images of each class as PNGs under root/<class>/<i>.png.

    x_u8: [N, H, W] (grey) or [N, H, W, 3] (RGB) uint8.  The first ``per_class``
    images of each class (in a seeded permutation) are written.  Returns
    {class_name: count}.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    counts = {}
    root = Path(root)
    classes = sorted(set(int(c) for c in y))
    for c in classes:
        name = str(c) if class_names is None else class_names[c]
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.png"):
            old.unlink()
        sel = [i for i in order if y[i] == c][:per_class]
        for k, i in enumerate(sel):
            img = x_u8[i]
            mode = "L" if img.ndim == 2 else "RGB"
            Image.fromarray(img, mode=mode).save(d / f"{k}.png", optimize=True)
        counts[name] = len(sel)
    return counts


def load_image_folder(root: Path, color: str = "gray"):
    """Read back an ImageFolder (class dirs sorted numerically/lexically) -> uint8 arrays."""
    from PIL import Image

    root = Path(root)
    classes = sorted(
        [p.name for p in root.iterdir() if p.is_dir()], key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else s)
    )
    xs, ys = [], []
    for ci, c in enumerate(classes):
        files = sorted((root / c).glob("*.png"), key=lambda p: int(p.stem))
        for f in files:
            im = Image.open(f).convert("L" if color == "gray" else "RGB")
            xs.append(np.asarray(im))
            ys.append(ci)
    return np.stack(xs), np.array(ys), classes


def to_nchw_float(x_u8: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W] or [N,H,W,3] -> float32 NCHW scaled by 1/255."""
    x = x_u8.astype(np.float32) / 255.0
    if x.ndim == 3:
        return x[:, None, :, :]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------- #
# training
# --------------------------------------------------------------------------- #
def evaluate(model, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            xb = torch.from_numpy(x[i : i + batch])
            pred = model(xb).argmax(1).numpy()
            correct += int((pred == y[i : i + batch]).sum())
    return correct / len(y)


def train(
    model,
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    *,
    epochs: int,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    augment=None,
    x_te=None,
    y_te=None,
    on_epoch_end=None,
    log_prefix="",
    optimizer: str = "adam",
    lr_schedule: str = "cosine",
) -> list[dict]:
    """Simple deterministic mini-batch training loop. Returns per-epoch history.

    augment: optional callable(torch.Tensor batch, torch.Generator) -> batch.
    on_epoch_end: optional callable(epoch (1-based), model, history_entry).
    """
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = (len(y_tr) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    if lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total) / total)))
    else:
        sched = None
    xt = torch.from_numpy(x_tr)
    yt = torch.from_numpy(y_tr)
    hist = []
    for ep in range(1, epochs + 1):
        t0 = time.time()
        model.train()
        perm = torch.randperm(len(yt), generator=g)
        tot_loss, tot_n, tot_c = 0.0, 0, 0
        for i in range(0, len(yt), batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = xt[idx], yt[idx]
            if augment is not None:
                xb = augment(xb, g)
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            tot_loss += loss.item() * len(yb)
            tot_n += len(yb)
            tot_c += int((out.argmax(1) == yb).sum())
        entry = {
            "epoch": ep,
            "train_loss": tot_loss / tot_n,
            "train_acc_running": tot_c / tot_n,
            "seconds": round(time.time() - t0, 2),
        }
        if x_te is not None:
            entry["test_acc"] = evaluate(model, x_te, y_te)
        hist.append(entry)
        print(
            f"{log_prefix}epoch {ep:3d} loss {entry['train_loss']:.4f} "
            f"run-acc {entry['train_acc_running']:.4f}"
            + (f" test {entry['test_acc']:.4f}" if "test_acc" in entry else "")
            + f" ({entry['seconds']}s)",
            flush=True,
        )
        if on_epoch_end is not None:
            on_epoch_end(ep, model, entry)
    model.eval()
    return hist


# --------------------------------------------------------------------------- #
# ONNX export + verification
# --------------------------------------------------------------------------- #
def export_onnx(model, path: Path, in_shape, *, input_name="input", output_name="logits") -> None:
    """Export with the legacy TorchScript exporter (opset 17), dynamic batch,
    single self-contained file (no external data), BatchNormalization kept as a
    node (no Conv+BN fusion, do_constant_folding=False keeps the graph literal)."""
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    dummy = torch.zeros((1,) + tuple(in_shape), dtype=torch.float32)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes={input_name: {0: "N"}, output_name: {0: "N"}},
        do_constant_folding=True,
        training=torch.onnx.TrainingMode.PRESERVE,
    )
    m = onnx.load(str(path))
    # make sure everything is inline (no .onnx.data side file)
    onnx.save(m, str(path), save_as_external_data=False)
    side = Path(str(path) + ".data")
    if side.exists():
        side.unlink()
    onnx.checker.check_model(onnx.load(str(path)))


def onnx_logits(path: Path, x: np.ndarray, batch: int = 500) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs)


def verify_onnx(model, path: Path, x: np.ndarray) -> float:
    """Max abs diff between torch and onnxruntime logits on x."""
    import torch

    model.eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = onnx_logits(path, x)
    return float(np.max(np.abs(ref - got)))


def onnx_summary(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path))
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {
        "opset": m.opset_import[0].version,
        "ir_version": m.ir_version,
        "ops": ops,
        "bytes": Path(path).stat().st_size,
    }
