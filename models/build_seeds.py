"""Train the confirmatory networks of the pre-registration (docs/preregistration.md): seeds 1-5.

    . /work/venv-build/bin/activate
    python -m models.build_seeds                 # all seeds, 2 worker processes (1 torch thread each)
    python -m models.build_seeds --seeds 1,2 -j 1
    python -m models.build_seeds --list          # the units and whether each is done

Every family of the pre-registration is one or more *units* (one training run each):
digits_vgg, shapes_vgg (exported after every epoch), shapes_vgg_bn, shapes_resnet,
depthnet_digits, depthnet_shapes, genA_n{6000,2000,600,200}, genB_{0.0..0.8}. A unit writes its
models under ``models/seeds/s<seed>/<unit>/`` (git-ignored: the models are rebuilt, not
committed) and, last, ``card.json`` with the SHA-256 of every model it wrote. A unit whose card
exists and whose models match their digests is skipped, so an interrupted build resumes where
it stopped. Recipes are those of ``models/build.py``; the seed is the only change (it seeds
the initial weights, the batch order, the augmentation and, for genB, the corrupted labels).

Each unit runs in a fresh worker process with one torch thread, so its bytes do not depend on
how many units run at once (-j). Other CPUs or torch builds may differ in the last bits.
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

SEEDS_DIR = C.MODELS_DIR / "seeds"
SEEDS = [1, 2, 3, 4, 5]

# depthnet (pre-registration, claim 3): stride-2 stem(s) down to 16x16, then six
# Conv3x3(pad 1, 32)-ReLU at 16x16, global average pool, linear.
DEPTH_DIGITS = dict(in_ch=1, stems=1, width=32, depth=6)
DEPTH_SHAPES = dict(in_ch=3, stems=2, width=32, depth=6, bn=True)  # amendment 2026-12-04: BN (see the pre-registration)

GENA = {  # name: (n_train, epochs, batch size)
    "genA_n6000": (6000, 10, 64),
    "genA_n2000": (2000, 20, 32),
    "genA_n600": (600, 40, 32),
    "genA_n200": (200, 100, 32),
}
GENB_RATES = [0.0, 0.2, 0.4, 0.6, 0.8]
UNITS = (
    ["digits_vgg", "shapes_vgg", "shapes_vgg_bn", "shapes_resnet", "depthnet_digits", "depthnet_shapes"]
    + list(GENA)
    + [f"genB_{r:.1f}" for r in GENB_RATES]
)


def unit_dir(seed: int, unit: str) -> Path:
    return SEEDS_DIR / f"s{seed}" / unit


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_done(seed: int, unit: str) -> bool:
    card = unit_dir(seed, unit) / "card.json"
    if not card.exists():
        return False
    try:
        c = json.loads(card.read_text())
        return all(sha256(unit_dir(seed, unit) / p) == d for p, d in c["sha256"].items())
    except (OSError, ValueError, KeyError):
        return False


# --------------------------------------------------------------------------- #
# training helpers (run inside a worker)
# --------------------------------------------------------------------------- #
def _loss_acc(model, x, y, batch=500):
    """Cross-entropy loss and accuracy of the model in eval mode on (x, y), no augmentation."""
    import torch
    import torch.nn.functional as F

    model.eval()
    tot, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            out = model(torch.from_numpy(x[i : i + batch]))
            yb = torch.from_numpy(y[i : i + batch])
            tot += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
    return tot / len(y), correct / len(y)


class _Unit:
    def __init__(self, seed: int, unit: str):
        self.seed, self.unit, self.dir = seed, unit, unit_dir(seed, unit)
        self.files: dict[str, str] = {}
        self.card: dict = {"unit": unit, "seed": seed, "torch_threads": 1, "models": {}}

    def export(self, net, name: str, x_tr, y_tr, x_te, y_te, **extra) -> dict:
        path = self.dir / f"{name}.onnx"
        C.export_onnx(net, path, tuple(x_te.shape[1:]))
        diff = C.verify_onnx(net, path, x_te[:200])
        assert diff < 1e-3, f"{path}: onnx vs torch diff {diff}"
        tr_loss, tr_acc = _loss_acc(net, x_tr, y_tr)
        te_loss, te_acc = _loss_acc(net, x_te, y_te)
        entry = {
            "path": C.rel(path),
            "train_loss_eval": tr_loss,
            "train_acc": tr_acc,
            "test_loss_eval": te_loss,
            "test_acc": te_acc,
            "onnx_vs_torch_max_abs_diff": diff,
            **extra,
        }
        self.card["models"][name] = entry
        self.files[f"{name}.onnx"] = path.name
        print(
            f"[s{self.seed} {self.unit}] {name}: train {tr_acc:.3f} (loss {tr_loss:.4f}) test {te_acc:.3f}", flush=True
        )
        return entry

    def finish(self, seconds: float) -> None:
        self.card["seconds"] = round(seconds, 1)
        self.card["sha256"] = {f: sha256(self.dir / f) for f in sorted(self.files)}
        C.write_json(self.dir / "card.json", self.card)


def _net(kind: str, cfg: dict):
    from models import build as B
    from models import nets

    if kind == "depthnet":
        return nets.depthnet(**cfg)
    return B.make_net(kind, cfg)


def run_unit(seed: int, unit: str) -> tuple[str, float]:
    """Train one unit (in a fresh process) and write its models and card."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    from models import build as B
    from models import nets

    t0 = time.time()
    C.seed_everything(seed)
    torch.set_num_threads(1)
    u = _Unit(seed, unit)
    u.dir.mkdir(parents=True, exist_ok=True)
    (u.dir / "card.json").unlink(missing_ok=True)
    aug = nets.random_shift_flip(4, True)

    if unit in ("digits_vgg", "depthnet_digits"):
        xtr_u, ytr, xte_u, yte = B.digits()
        data = (C.to_nchw_float(xtr_u), ytr, C.to_nchw_float(xte_u), yte)
        kind, cfg = ("vgg", B.VGG_DIGITS) if unit == "digits_vgg" else ("depthnet", DEPTH_DIGITS)
        net = _net(kind, cfg)
        u.card.update(architecture=B.arch_str(kind, cfg), dataset="digits32", epochs=30, lr=2e-3, batch_size=32)
        u.export(net, "init", *data, epoch=0)
        hist = C.train(
            net, data[0], data[1], epochs=30, seed=seed, lr=2e-3, batch_size=32, log_prefix=f"[s{seed} {unit}] "
        )
        u.export(net, "converged", *data, epoch=30, **B.hist_fields(hist))
    elif unit in ("shapes_vgg_bn", "shapes_resnet", "depthnet_shapes"):
        data = B._shapes_data()
        kind, cfg = {
            "shapes_vgg_bn": ("vgg", B.VGG_SHAPES_BN),
            "shapes_resnet": ("resnet", B.RES_SHAPES),
            "depthnet_shapes": ("depthnet", DEPTH_SHAPES),
        }[unit]
        net = _net(kind, cfg)
        u.card.update(architecture=B.arch_str(kind, cfg), dataset="shapes64", epochs=10, lr=2e-3, batch_size=64)
        u.card["augmentation"] = "random shift up to 4 px (reflect pad) + h-flip"
        u.export(net, "init", *data, epoch=0)
        hist = C.train(
            net,
            data[0],
            data[1],
            epochs=10,
            seed=seed,
            lr=2e-3,
            batch_size=64,
            augment=aug,
            log_prefix=f"[s{seed} {unit}] ",
        )
        u.export(net, "converged", *data, epoch=10, **B.hist_fields(hist))
    elif unit == "shapes_vgg":
        data = B._shapes_data()
        net = _net("vgg", B.VGG_SHAPES)
        u.card.update(
            architecture=B.arch_str("vgg", B.VGG_SHAPES), dataset="shapes64", epochs=10, lr=2e-3, batch_size=64
        )
        u.card["augmentation"] = "random shift up to 4 px (reflect pad) + h-flip"
        u.card["note"] = (
            "epoch_00 = init, epoch_10 = converged; train_loss_eval: full training set, eval mode, no augmentation"
        )
        u.export(net, "epoch_00", *data, epoch=0)

        def on_epoch(ep, model, entry):
            u.export(model, f"epoch_{ep:02d}", *data, epoch=ep, train_loss_running=entry["train_loss"])
            model.train()

        C.train(
            net,
            data[0],
            data[1],
            epochs=10,
            seed=seed,
            lr=2e-3,
            batch_size=64,
            augment=aug,
            on_epoch_end=on_epoch,
            log_prefix=f"[s{seed} {unit}] ",
        )
    elif unit in GENA:
        n, epochs, bs = GENA[unit]
        data = B._shapes_data(n)
        net = _net("vgg", B.VGG_SHAPES)
        u.card.update(
            architecture=B.arch_str("vgg", B.VGG_SHAPES),
            dataset="shapes64",
            n_train=n,
            epochs=epochs,
            lr=2e-3,
            batch_size=bs,
            augmentation="none",
        )
        hist = C.train(
            net, data[0], data[1], epochs=epochs, seed=seed, lr=2e-3, batch_size=bs, log_prefix=f"[s{seed} {unit}] "
        )
        u.export(net, "converged", *data, epoch=epochs, **B.hist_fields(hist))
    elif unit.startswith("genB_"):
        rate = float(unit.split("_")[1])
        xtr, ytr, xte, yte = B._shapes_data(B.GENB_N)
        label_seed = 1000 * (seed + 1) + int(round(rate * 10))  # seed 0 gives build.py's 1000 + 10*rate
        yc = B.corrupt_labels(ytr, rate, seed=label_seed)
        net = _net("vgg", B.VGG_SHAPES_BN)
        u.card.update(
            architecture=B.arch_str("vgg", B.VGG_SHAPES_BN),
            dataset="shapes64",
            n_train=B.GENB_N,
            epochs=B.GENB_EPOCHS,
            lr=3e-3,
            batch_size=32,
            augmentation="none",
            label_noise_rate=rate,
            label_seed=label_seed,
            n_labels_corrupted=int((yc != ytr).sum()),
        )
        np.savez_compressed(u.dir / "labels.npz", train_labels_used=yc, train_labels_clean=ytr)
        u.files["labels.npz"] = "labels.npz"
        hist = C.train(
            net, xtr, yc, epochs=B.GENB_EPOCHS, seed=seed, lr=3e-3, batch_size=32, log_prefix=f"[s{seed} {unit}] "
        )
        u.export(net, "converged", xtr, yc, xte, yte, epoch=B.GENB_EPOCHS, **B.hist_fields(hist))
        u.card["models"]["converged"]["train_acc_clean_labels"] = _loss_acc(net, xtr, ytr)[1]
    else:
        raise ValueError(unit)
    u.finish(time.time() - t0)
    return f"s{seed}/{unit}", time.time() - t0


def _run(args):
    return run_unit(*args)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--only", default="", help="comma-separated units: " + ",".join(UNITS))
    ap.add_argument("-j", "--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",") if s]
    units = [x for x in a.only.split(",") if x] or UNITS
    bad = [x for x in units if x not in UNITS]
    if bad:
        raise SystemExit(f"unknown unit(s) {bad}; choose from {UNITS}")
    todo = [(s, x) for s in seeds for x in units]
    if a.list:
        for s, x in todo:
            print(f"s{s} {x:18s} {'done' if is_done(s, x) else '-'}")
        return
    todo = [(s, x) for s, x in todo if not is_done(s, x)]
    print(f"{len(todo)} units to train", flush=True)
    t0 = time.time()
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(a.jobs, maxtasksperchild=1) as pool:
        for name, secs in pool.imap_unordered(_run, todo):
            print(f"===== {name} done in {secs:.0f}s (elapsed {time.time() - t0:.0f}s) =====", flush=True)
    print(f"all done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
