"""Train the networks of the generalisation benchmark (docs/preregistration_generalization.md, issue 23).

    . /work/venv-build/bin/activate
    python -m models.build_genzoo --list          # the 72 networks, their settings and whether each is done
    python -m models.build_genzoo                 # train every network not yet done, 2 worker processes
    python -m models.build_genzoo --only digits_vgg_01010101,shapes_depth_01101000 -j 1

The grid. Four families: {digits, shapes} × {vgg, depth} (``models/nets.py``: ``vgg``, and ``depthnet``, the
constant-map-size network). Eight hyperparameter axes with two levels each (level 0 / level 1, see ``AXES``). In every
family two *base* configurations without label noise (a bit string and its complement in the other seven axes,
amendment 1 of the pre-registration) and, for each base, the eight configurations that differ from it in exactly one
axis: 2 × 9 = 18 networks a family, 72 in all. Every axis thus has, in every family, two pairs of networks that differ
in that axis only; label noise occurs only in a family's two label-noise changes. A network is named
``<family>_<bits>`` (bits in the order of ``AXES``).

Training. One training seed for every network (``SEED``: the same initial weights wherever two networks have the same
architecture, the same batch order wherever they have the same batch size and training set), AdamW at a constant
learning rate, no augmentation. After every epoch the cross-entropy of the whole training set (its training labels,
eval mode) is measured; training stops at the first epoch where it is <= ``TARGET_CE`` (converged) or at the family's
epoch cap (not converged: kept and carded, excluded by the pre-registered rule). The training state is saved after
every epoch (``checkpoint.pt``), so a killed build resumes where it stopped, bit-identically on the same torch and CPU;
the card lists the segments with the torch version and CPU of each.

Data. The training images scored by onnx-fe are ``models/data/<dataset>/train`` (500 PNGs, 50 a class); every
network's training set contains them, and their labels are never corrupted. Digits: the scoring images plus the
first n − 500 of the other 847 training digits in a seeded order. Shapes: the first n generated training images
(the scoring PNGs are drawn from the first 1000). Label noise: round(rate · n) labels, drawn from the training
images outside the scoring set (seeded by dataset and n only), each replaced by another class.

Outputs (git-ignored, rebuilt): ``models/genzoo/<name>/model.onnx``, ``labels.npz`` (the training indices and labels
used) and, last, ``card.json`` (settings, per-epoch losses, train / test accuracy and loss from onnxruntime, the
generalisation gap, seconds, SHA-256 of the files). A network whose card exists and whose files match their digests is
skipped, so an interrupted build resumes. The cards are copied into docs/generalization-results/cards/ by the study.
Each network trains in a fresh process with one torch thread, so its bytes do not depend on -j.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "models"

import numpy as np

from models import common as C

ZOO_DIR = C.MODELS_DIR / "genzoo"
SEED = 23
TARGET_CE = 0.01
N_SCORE = 500  # models/data/<dataset>/train

# axis: (level 0, level 1)
AXES = {
    "width": ("narrow", "wide"),
    "depth": ("shallow", "deep"),
    "lr": (5e-4, 2e-3),
    "batch_size": (32, 128),
    "weight_decay": (0.0, 0.05),
    "dropout": (0.0, 0.3),
    "n_train": ("small", "large"),
    "label_noise": (0.0, 0.1),
}
AXIS_NAMES = list(AXES)

FAMILIES = {
    # family: dataset, architecture, epoch cap, base bit string (the other base: its complement, label noise at 0).
    # Amendment 1 of the pre-registration: both bases without label noise, caps 600 / 300 (were 150 / 80).
    "digits_vgg": dict(dataset="digits", arch="vgg", cap=600, base="01010100"),
    "digits_depth": dict(dataset="digits", arch="depth", cap=600, base="00110010"),
    "shapes_vgg": dict(dataset="shapes", arch="vgg", cap=300, base="00001110"),
    "shapes_depth": dict(dataset="shapes", arch="depth", cap=300, base="01101000"),
}
N_TRAIN = {"digits": (700, 1347), "shapes": (1000, 2000)}
WIDTH = {"vgg": (0.5, 1.0), "depth": (16, 32)}  # vgg: multiplier of the block widths; depth: channels
DEPTH = {("digits", "vgg"): (3, 4), ("shapes", "vgg"): (4, 5), ("digits", "depth"): (3, 6), ("shapes", "depth"): (3, 6)}
VGG_WIDTHS = {"digits": [16, 32, 64, 64], "shapes": [16, 32, 64, 64, 128]}


def _flip(bits: str, i: int) -> str:
    return bits[:i] + ("1" if bits[i] == "0" else "0") + bits[i + 1 :]


def _complement(bits: str) -> str:
    """The other base: every axis at the other level, except label noise, which is 0 in both bases (amendment 1)."""
    return "".join("1" if b == "0" else "0" for b in bits[:-1]) + "0"


def grid() -> list[dict]:
    """Every network of the protocol: name, family, bits, base, the axis it differs from its base in, settings."""
    nets = []
    for fam, f in FAMILIES.items():
        for base in (f["base"], _complement(f["base"])):
            for flipped in [None, *range(len(AXES))]:
                bits = base if flipped is None else _flip(base, flipped)
                nets.append(
                    {
                        "name": f"{fam}_{bits}",
                        "family": fam,
                        "bits": bits,
                        "base": base,
                        "differs_in": None if flipped is None else AXIS_NAMES[flipped],
                        **settings(fam, bits),
                    }
                )
    names = [n["name"] for n in nets]
    assert len(set(names)) == len(names) == 72, "the grid must hold 72 distinct networks"
    return nets


def settings(family: str, bits: str) -> dict:
    f = FAMILIES[family]
    ds, arch = f["dataset"], f["arch"]
    lv = {a: int(b) for a, b in zip(AXIS_NAMES, bits)}
    width = WIDTH[arch][lv["width"]]
    depth = DEPTH[(ds, arch)][lv["depth"]]
    if arch == "vgg":
        widths = [max(1, int(round(w * width))) for w in VGG_WIDTHS[ds][:depth]]
        cfg = dict(
            in_ch=1 if ds == "digits" else 3,
            widths=widths,
            in_size=32 if ds == "digits" else 64,
            hidden=64 if ds == "digits" else 0,
            bn=ds == "shapes",
            init="kaiming",
        )
    else:
        cfg = dict(in_ch=1 if ds == "digits" else 3, stems=1 if ds == "digits" else 2, width=width, depth=depth)
        cfg["bn"] = ds == "shapes"
    return {
        "dataset": ds,
        "arch": arch,
        "net": cfg,
        "lr": AXES["lr"][lv["lr"]],
        "batch_size": AXES["batch_size"][lv["batch_size"]],
        "weight_decay": AXES["weight_decay"][lv["weight_decay"]],
        "dropout": AXES["dropout"][lv["dropout"]],
        "n_train": N_TRAIN[ds][lv["n_train"]],
        "label_noise": AXES["label_noise"][lv["label_noise"]],
        "epoch_cap": f["cap"],
    }


def by_name() -> dict:
    return {n["name"]: n for n in grid()}


# --------------------------------------------------------------------------- #
# files and resumption
# --------------------------------------------------------------------------- #
def net_dir(name: str) -> Path:
    return ZOO_DIR / name


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_done(name: str) -> bool:
    card = net_dir(name) / "card.json"
    if not card.exists():
        return False
    try:
        c = json.loads(card.read_text())
        if c.get("smoke_max_epochs") is not None:  # a smoke test's network is never a network of the study
            return False
        if c["settings"]["epoch_cap"] != by_name()[name]["epoch_cap"]:  # trained under other settings
            return False
        return all(sha256(net_dir(name) / p) == d for p, d in c["sha256"].items())
    except (OSError, ValueError, KeyError):
        return False


# --------------------------------------------------------------------------- #
# data
# --------------------------------------------------------------------------- #
def _score_indices(ds: str) -> np.ndarray:
    """Training-set indices of the 500 scoring PNGs (models/data/<ds>/train), from the committed manifest."""
    man = json.loads((C.MODELS_DIR / "data" / ds / "manifest.json").read_text())
    idx = np.array(sorted(int(i) for i in man["train"]["png_to_index"].values()), dtype=np.int64)
    assert len(idx) == N_SCORE, (ds, len(idx))
    return idx


def training_set(ds: str, n: int, noise: float):
    """(x_train float NCHW, indices, labels used, clean labels, x_test, y_test) of one network's training data."""
    from models import build as B

    if ds == "digits":
        xtr_u, ytr, xte_u, yte = B.digits()
    else:
        xtr_u, ytr, xte_u, yte = B.shapes()
    score = _score_indices(ds)
    if ds == "digits":
        rest = np.setdiff1d(np.arange(len(ytr)), score)
        rest = rest[np.random.default_rng(0).permutation(len(rest))]
        idx = np.sort(np.concatenate([score, rest[: n - N_SCORE]]))
    else:
        assert score.max() < n, "the shapes scoring PNGs lie in the first 1000 training images"
        idx = np.arange(n)
    assert len(idx) == n and np.isin(score, idx).all()
    y_clean = ytr[idx].astype(np.int64)
    y_used = y_clean.copy()
    k = int(round(noise * n))
    if k:
        rng = np.random.default_rng([23, 0 if ds == "digits" else 1, n])
        pool = np.flatnonzero(~np.isin(idx, score))  # positions outside the scoring set
        pos = np.sort(rng.choice(pool, k, replace=False))
        y_used[pos] = (y_clean[pos] + rng.integers(1, 10, k)) % 10
    return C.to_nchw_float(xtr_u[idx]), idx, y_used, y_clean, C.to_nchw_float(xte_u), yte.astype(np.int64)


# --------------------------------------------------------------------------- #
# one network (run inside a fresh worker)
# --------------------------------------------------------------------------- #
def make_net(s: dict):
    """The torch network of a setting, with a Dropout(p) right before the first Linear layer when p > 0."""
    import torch.nn as nn

    from models import nets

    cfg = s["net"]
    if s["arch"] == "vgg":
        net = nets.vgg(
            cfg["in_ch"], cfg["widths"], in_size=cfg["in_size"], bn=cfg["bn"], hidden=cfg["hidden"], init=cfg["init"]
        )
    else:
        net = nets.depthnet(cfg["in_ch"], stems=cfg["stems"], width=cfg["width"], depth=cfg["depth"], bn=cfg["bn"])
    if s["dropout"] > 0:
        mods = list(net)
        first = next(i for i, m in enumerate(mods) if isinstance(m, nn.Linear))
        mods.insert(first, nn.Dropout(s["dropout"]))
        net = nn.Sequential(*mods)
    return net


def _loss_acc(net, x, y, batch=500):
    import torch
    import torch.nn.functional as F

    net.eval()
    tot, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            out = net(torch.from_numpy(x[i : i + batch]))
            yb = torch.from_numpy(y[i : i + batch])
            tot += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
    return tot / len(y), correct / len(y)


def _onnx_loss_acc(path: Path, x, y):
    logits = C.onnx_logits(path, x).astype(np.float64)
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()), float((logits.argmax(1) == y).mean())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a kill leaves the previous checkpoint or the new one, never half of one."""
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def run_net(name: str, max_epochs: int | None = None) -> tuple[str, float]:
    """Train one network and write its model, labels and card. ``max_epochs`` (smoke tests only) lowers the cap.

    After every epoch the state (weights, optimiser, the batch-order generator, torch's global generator that
    dropout draws from, the history) is saved to ``checkpoint.pt``; a killed build resumes from it, and the resumed
    network is bit-identical to one trained without a break (same torch, same CPU kind: see the card's ``segments``).
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    import torch.nn.functional as F

    t0 = time.time()
    s = by_name()[name]
    d = net_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    (d / "card.json").unlink(missing_ok=True)
    C.seed_everything(SEED)
    torch.set_num_threads(1)
    x, idx, y, y_clean, xte, yte = training_set(s["dataset"], s["n_train"], s["label_noise"])
    np.savez_compressed(d / "labels.npz", train_indices=idx, train_labels_used=y, train_labels_clean=y_clean)
    net = make_net(s)
    cap = s["epoch_cap"] if max_epochs is None else min(max_epochs, s["epoch_cap"])
    opt = torch.optim.AdamW(net.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    g = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    hist, converged, seconds_before, segments = [], False, 0.0, []
    ckpt = d / "checkpoint.pt"
    if ckpt.exists():
        st = torch.load(ckpt, weights_only=False)
        if st.get("settings") == {k: v for k, v in s.items()} and st.get("max_epochs") == max_epochs:
            net.load_state_dict(st["net"])
            opt.load_state_dict(st["opt"])
            g.set_state(st["generator"])
            torch.set_rng_state(st["torch_rng"])
            hist, converged, seconds_before, segments = st["history"], st["converged"], st["seconds"], st["segments"]
            print(f"[{name}] resumed after epoch {len(hist)}", flush=True)
    segments = [*segments, {"from_epoch": len(hist) + 1, "torch": torch.__version__, "cpu": _cpu_model()}]
    t_seg = time.time()
    ep = len(hist)
    while not converged and ep < cap and (not hist or np.isfinite(hist[-1]["train_ce"])):
        ep += 1
        te = time.time()
        net.train()
        perm = torch.randperm(len(yt), generator=g)
        run_loss = 0.0
        for i in range(0, len(yt), s["batch_size"]):
            b = perm[i : i + s["batch_size"]]
            loss = F.cross_entropy(net(xt[b]), yt[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run_loss += loss.item() * len(b)
        ce, acc = _loss_acc(net, x, y)
        hist.append({"epoch": ep, "train_ce": ce, "train_acc": acc, "running_loss": run_loss / len(y)})
        print(f"[{name}] epoch {ep:3d} train CE {ce:.4f} acc {acc:.4f} ({time.time() - te:.1f}s)", flush=True)
        converged = bool(ce <= TARGET_CE)
        _save_checkpoint(
            ckpt,
            {
                "settings": dict(s),
                "max_epochs": max_epochs,
                "net": net.state_dict(),
                "opt": opt.state_dict(),
                "generator": g.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": hist,
                "converged": converged,
                "seconds": seconds_before + time.time() - t_seg,
                "segments": segments,
            },
        )
    train_seconds = seconds_before + time.time() - t_seg
    path = d / "model.onnx"
    in_shape = tuple(x.shape[1:])
    C.export_onnx(net, path, in_shape)
    diff = C.verify_onnx(net, path, xte[:200])
    assert diff < 1e-3, f"{path}: onnx vs torch diff {diff}"
    tr_ce, tr_acc = _onnx_loss_acc(path, x, y)
    _, tr_acc_clean = _onnx_loss_acc(path, x, y_clean)
    te_ce, te_acc = _onnx_loss_acc(path, xte, yte)
    card = {
        "name": name,
        "family": s["family"],
        "bits": s["bits"],
        "axes": dict(zip(AXIS_NAMES, (int(b) for b in s["bits"]))),
        "base": s["base"],
        "differs_in": s["differs_in"],
        "settings": {k: s[k] for k in ("dataset", "arch", "net", "lr", "batch_size", "weight_decay", "dropout")}
        | {k: s[k] for k in ("n_train", "label_noise", "epoch_cap")},
        "architecture": repr(net),
        "optimizer": "AdamW (torch defaults but lr, weight_decay), constant learning rate, no augmentation",
        "seed": SEED,
        "torch_threads": 1,
        "torch_version": torch.__version__,
        "segments": segments,
        "target_train_ce": TARGET_CE,
        "converged": converged,
        "epochs": len(hist),
        "history": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()} for h in hist],
        "n_labels_corrupted": int((y != y_clean).sum()),
        "train_ce": tr_ce,
        "train_acc": tr_acc,
        "train_acc_clean_labels": tr_acc_clean,
        "test_ce": te_ce,
        "test_acc": te_acc,
        "gap": tr_acc - te_acc,
        "n_test": int(len(yte)),
        "onnx_vs_torch_max_abs_diff": diff,
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "train_seconds": round(train_seconds, 1),
        "smoke_max_epochs": max_epochs,
    }
    # every segment's training plus this segment's data loading, export and checks (earlier segments' data loading,
    # a few seconds each, is not counted)
    card["seconds"] = round(seconds_before + time.time() - t0, 1)
    card["sha256"] = {f: sha256(d / f) for f in ("labels.npz", "model.onnx")}
    C.write_json(d / "card.json", card)
    state = "converged" if converged else "NOT converged"
    print(f"[{name}] {state} after {len(hist)} epochs: gap {card['gap']:.3f} (test {te_acc:.3f})", flush=True)
    return name, time.time() - t0


def _run(args):
    return run_net(*args)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated network names (see --list)")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    ap.add_argument("--list", action="store_true", help="list the networks and whether each is done")
    ap.add_argument("--max-epochs", type=int, default=None, help=argparse.SUPPRESS)  # smoke tests only
    a = ap.parse_args(argv)
    nets = grid()
    names = [x for x in a.only.split(",") if x] or [n["name"] for n in nets]
    known = {n["name"] for n in nets}
    bad = [x for x in names if x not in known]
    if bad:
        raise SystemExit(f"unknown network(s) {bad}; see --list")
    if a.list:
        for n in nets:
            if n["name"] in names:
                s = {k: n[k] for k in ("lr", "batch_size", "weight_decay", "dropout", "n_train", "label_noise")}
                arch = (
                    n["net"].get("widths", n["net"].get("width")),
                    n["net"].get("depth", len(n["net"].get("widths", []))),
                )
                print(f"{n['name']:24s} {'done' if is_done(n['name']) else '-':4s} {arch} {s}")
        return
    # the likely longest first (label noise, then the shapes data, then the larger training sets), so that the last
    # networks to finish are short ones and every worker stays busy
    spec = by_name()
    names = sorted(names, key=lambda x: (-spec[x]["label_noise"], spec[x]["dataset"] != "shapes", -spec[x]["n_train"]))
    todo = [(x, a.max_epochs) for x in names if not is_done(x)]
    print(f"{len(todo)} networks to train", flush=True)
    t0 = time.time()
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(a.jobs, maxtasksperchild=1) as pool:
        for name, secs in pool.imap_unordered(_run, todo):
            print(f"===== {name} done in {secs:.0f}s (elapsed {time.time() - t0:.0f}s) =====", flush=True)
    print(f"all done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
