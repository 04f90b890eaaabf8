"""Rebuild the whole onnx-fe model zoo from seeds.

    . /work/venv-build/bin/activate          # torch, onnx, onnxruntime, scikit-learn, pillow
    python -m models.build                   # everything (~20-25 min on 2 CPU cores)
    python -m models.build --only digits,shapes_vgg
    python -m models.build --list

Parts (run in this order by default):
  demo        models/demo/                   (see build_demo.py)
  data        models/data/{digits,shapes}/{train,test}/<class>/*.png + manifest.json
  digits      models/digits_vgg/{converged,random,rescaled}/
  shapes_vgg  models/shapes_vgg/{random,converged,rescaled,epochs}/   (one run, every epoch)
  shapes_bn   models/shapes_vgg_bn/converged/
  shapes_res  models/shapes_resnet/converged/
  genA        models/genA/<name>/            same arch as shapes_vgg, different test accuracy
  genB        models/genB/noise_<rate>/      label noise 0..0.8, trained to memorisation
  keras       models/digits_vgg/converged/model_keras.onnx (needs /work/venv-tf, see keras_twin.py)
  index       models/index.json              (always rebuilt at the end from the card files)

Every model is seeded independently (``seed_everything`` before the net is
built), so running one part alone gives the same bytes as a full rebuild.
Nothing is downloaded: digits come from scikit-learn, shapes from shapes.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "models"

import numpy as np

from models import common as C
from models import shapes as S

M = C.MODELS_DIR
DATA = M / "data"
PER_CLASS = 50  # PNGs per class per split in models/data, at most (digits/test has only 43–46 per class)
GENB_N = 1000  # genB training-set size (first 1000 shapes training images)

PRE_DIGITS = {
    "input_size": [32, 32],
    "scale": 1 / 255,
    "mean": [0.0],
    "std": [1.0],
    "color": "gray",
    "layout": "nchw",
    "input_name": "input",
    "input_shape": ["N", 1, 32, 32],
    "dtype": "float32",
}
PRE_SHAPES = {
    "input_size": [64, 64],
    "scale": 1 / 255,
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
    "color": "rgb",
    "layout": "nchw",
    "input_name": "input",
    "input_shape": ["N", 3, 64, 64],
    "dtype": "float32",
}

DS_DIGITS = {
    "name": "digits32",
    "source": "sklearn.datasets.load_digits (bundled with scikit-learn, no download)",
    "construction": "values 0..16 scaled by 255/16, bilinear upsample 8x8->32x32 (torch "
    "F.interpolate, align_corners=False), rounded to uint8 grey",
    "split": f"stratified train_test_split(test_size={C.DIGITS_TEST_SIZE}, random_state={C.DIGITS_SPLIT_SEED})",
    "n_train": 1347,
    "n_test": 450,
    "classes": [str(i) for i in range(10)],
}
DS_SHAPES = {
    "name": "shapes64",
    "source": "procedural, models/shapes.py (numpy only, no download)",
    "construction": "one pattern of 10 classes at random position/scale/colour on a noisy "
    "gradient background, 64x64 RGB uint8",
    "split": f"train = generate({S.N_TRAIN}, seed={S.SEED}), test = generate({S.N_TEST}, seed={S.SEED + 1})",
    "n_train": S.N_TRAIN,
    "n_test": S.N_TEST,
    "classes": S.CLASS_NAMES,
}
FOLDERS = {
    "digits32": {"train": "models/data/digits/train", "test": "models/data/digits/test"},
    "shapes64": {"train": "models/data/shapes/train", "test": "models/data/shapes/test"},
}

VGG_DIGITS = dict(in_ch=1, widths=[16, 32, 64, 64], in_size=32, hidden=64, init="kaiming")
VGG_SHAPES = dict(in_ch=3, widths=[16, 32, 64, 64, 128], in_size=64, init="kaiming")
VGG_SHAPES_BN = dict(VGG_SHAPES, bn=True)
RES_SHAPES = dict(in_ch=3, widths=[16, 32, 64, 128])


# --------------------------------------------------------------------------- #
# cached data
# --------------------------------------------------------------------------- #
_cache: dict = {}


def digits():
    if "digits" not in _cache:
        xtr, ytr, xte, yte = C.load_digits_uint8(32)
        _cache["digits"] = (xtr, ytr, xte, yte)
    return _cache["digits"]


def shapes():
    if "shapes" not in _cache:
        t = time.time()
        _cache["shapes"] = S.load_shapes()
        print(f"[data] generated shapes in {time.time() - t:.1f}s", flush=True)
    return _cache["shapes"]


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def arch_str(kind: str, cfg: dict) -> str:
    return f"{kind}({', '.join(f'{k}={v}' for k, v in cfg.items())})"


def make_net(kind: str, cfg: dict):
    from models import nets

    if kind == "vgg":
        return nets.vgg(
            cfg["in_ch"],
            cfg["widths"],
            in_size=cfg["in_size"],
            bn=cfg.get("bn", False),
            hidden=cfg.get("hidden", 0),
            init=cfg.get("init", "kaiming"),
        )
    if kind == "resnet":
        return nets.SmallResNet(cfg["in_ch"], tuple(cfg["widths"]))
    raise ValueError(kind)


def export_and_card(
    net,
    out_dir: Path,
    *,
    name: str,
    role: str,
    group: str,
    dataset: dict,
    pre: dict,
    x_tr,
    y_tr,
    x_te,
    y_te,
    extra: dict,
    fname="model.onnx",
    card_name="card.json",
    train_labels_note=None,
) -> dict:
    """Export net to out_dir/fname, verify vs torch, evaluate, write card."""
    onnx_path = out_dir / fname
    in_shape = tuple(pre["input_shape"][1:])
    C.export_onnx(net, onnx_path, in_shape)
    diff = C.verify_onnx(net, onnx_path, x_te)
    assert diff < 1e-3, f"{onnx_path}: onnx vs torch diff {diff}"
    tr_acc = C.evaluate(net, x_tr, y_tr) if x_tr is not None else None
    te_acc = C.evaluate(net, x_te, y_te)
    card = {
        "name": name,
        "role": role,
        "group": group,
        "onnx_path": C.rel(onnx_path),
        "dataset": dataset,
        "preprocessing": pre,
        "data_folders": FOLDERS[dataset["name"]],
        "train_acc": tr_acc,
        "test_acc": te_acc,
    }
    if train_labels_note:
        card["train_acc_note"] = train_labels_note
    card.update(extra)
    card["onnx"] = C.onnx_summary(onnx_path)
    card["onnx_vs_torch_max_abs_diff"] = diff
    C.write_json(out_dir / card_name, card)
    tr_s = "n/a" if tr_acc is None else f"{tr_acc:.4f}"
    print(f"[{group}] {role:>10s} {C.rel(onnx_path)}: train {tr_s} test {te_acc:.4f} onnx-diff {diff:.1e}", flush=True)
    return card


def train_settings(**kw) -> dict:
    d = {"optimizer": "adam", "schedule": "cosine (per step, to 0)", "loss": "cross entropy"}
    d.update(kw)
    return d


def hist_fields(hist: list[dict]) -> dict:
    out = {
        "train_loss_per_epoch": [round(h["train_loss"], 6) for h in hist],
        "train_acc_running_per_epoch": [round(h["train_acc_running"], 6) for h in hist],
    }
    if hist and "test_acc" in hist[0]:
        out["test_acc_per_epoch"] = [h["test_acc"] for h in hist]
    out["train_seconds"] = round(sum(h["seconds"] for h in hist), 1)
    return out


def rescale_twin(net, conv_idx: int, alpha: float):
    """Copy of net with conv[conv_idx] (W, b) *= alpha and conv[conv_idx+1] W /= alpha.

    Valid because only ReLU / MaxPool (positively homogeneous) lie between them.
    """
    import copy

    import torch

    from models import nets

    twin = copy.deepcopy(net)
    convs = nets.conv_layers(twin)
    with torch.no_grad():
        convs[conv_idx].weight.mul_(alpha)
        convs[conv_idx].bias.mul_(alpha)
        convs[conv_idx + 1].weight.div_(alpha)
    return twin


def do_rescaled(net, out_dir, *, group, dataset, pre, data, conv_idx=1, alpha=3.7, source=""):
    import torch

    xtr, ytr, xte, yte = data
    twin = rescale_twin(net, conv_idx, alpha)
    with torch.no_grad():
        d_torch = float((net(torch.from_numpy(xte)) - twin(torch.from_numpy(xte))).abs().max())
    card = export_and_card(
        twin,
        out_dir,
        name=f"{group}_rescaled",
        role="rescaled",
        group=group,
        dataset=dataset,
        pre=pre,
        x_tr=xtr,
        y_tr=ytr,
        x_te=xte,
        y_te=yte,
        extra={
            "rescaled_from": source,
            "alpha": alpha,
            "rescaling": f"conv #{conv_idx} (0-based, graph order) weight and bias *= alpha; "
            f"conv #{conv_idx + 1} weight /= alpha (bias unchanged). Only ReLU "
            f"and MaxPool lie between them, so the function is unchanged.",
            "max_abs_logit_diff_vs_source_torch": d_torch,
        },
    )
    src = M.parent / source
    d_onnx = float(np.max(np.abs(C.onnx_logits(src, xte) - C.onnx_logits(out_dir / "model.onnx", xte))))
    card["max_abs_logit_diff_vs_source_onnx"] = d_onnx
    C.write_json(out_dir / "card.json", card)
    print(f"[{group}] rescaled twin: max |logit diff| torch {d_torch:.2e} onnx {d_onnx:.2e}")
    assert d_onnx < 1e-3


# --------------------------------------------------------------------------- #
# parts
# --------------------------------------------------------------------------- #
def part_demo():
    from models import build_demo

    build_demo.build()


def part_data():
    xtr, ytr, xte, yte = digits()
    man = {"dataset": DS_DIGITS, "preprocessing": PRE_DIGITS, "per_class": PER_CLASS}
    for split, x, y in [("train", xtr, ytr), ("test", xte, yte)]:
        man[split] = _save_split(DATA / "digits" / split, x, y, None, seed=0)
    C.write_json(DATA / "digits" / "manifest.json", man)

    sxtr, sytr, sxte, syte = shapes()
    man = {
        "dataset": DS_SHAPES,
        "preprocessing": PRE_SHAPES,
        "per_class": PER_CLASS,
        "note": f"train PNGs are drawn from the first {GENB_N} training images, i.e. from "
        f"the subset every shapes model (and every genB model) was trained on",
    }
    man["train"] = _save_split(DATA / "shapes" / "train", sxtr[:GENB_N], sytr[:GENB_N], S.CLASS_NAMES, seed=0)
    man["test"] = _save_split(DATA / "shapes" / "test", sxte, syte, S.CLASS_NAMES, seed=0)
    C.write_json(DATA / "shapes" / "manifest.json", man)
    print(f"[data] wrote {DATA}", flush=True)


def _save_split(root: Path, x, y, names, seed: int) -> dict:
    """Save up to PER_CLASS PNGs per class (all of a class that has fewer); return {relative png path: dataset index}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    files = {}
    for c in range(10):
        cname = str(c) if names is None else names[c]
        d = root / cname
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.png"):
            old.unlink()
        sel = [int(i) for i in order if y[i] == c][:PER_CLASS]
        for k, i in enumerate(sel):
            img = x[i]
            Image.fromarray(img, mode="L" if img.ndim == 2 else "RGB").save(d / f"{k}.png")
            files[f"{cname}/{k}.png"] = i
    return {
        "root": C.rel(root),
        "class_names": [str(c) if names is None else names[c] for c in range(10)],
        "png_to_index": files,
    }


def part_digits():
    import torch

    xtr_u, ytr, xte_u, yte = digits()
    data = (C.to_nchw_float(xtr_u), ytr, C.to_nchw_float(xte_u), yte)
    xtr, _, xte, _ = data
    seed, epochs, lr, bs = 0, 30, 2e-3, 32
    group, root = "digits_vgg", M / "digits_vgg"
    C.seed_everything(seed)
    net = make_net("vgg", VGG_DIGITS)
    arch = arch_str("vgg", VGG_DIGITS)
    common = dict(group=group, dataset=DS_DIGITS, pre=PRE_DIGITS, x_tr=xtr, y_tr=ytr, x_te=xte, y_te=yte)
    settings = train_settings(lr=lr, batch_size=bs, weight_decay=0.0, augmentation="none")
    export_and_card(
        net,
        root / "random",
        name="digits_vgg_random",
        role="random",
        extra={
            "architecture": arch,
            "seed": seed,
            "epochs": 0,
            "note": "initial weights of digits_vgg/converged (init as in "
            "architecture, after seed_everything(0)), exported before training",
            "training": settings,
        },
        **common,
    )
    hist = C.train(
        net, xtr, ytr, epochs=epochs, seed=seed, lr=lr, batch_size=bs, x_te=xte, y_te=yte, log_prefix="[digits_vgg] "
    )
    export_and_card(
        net,
        root / "converged",
        name="digits_vgg",
        role="converged",
        extra={"architecture": arch, "seed": seed, "epochs": epochs, "training": settings, **hist_fields(hist)},
        **common,
    )
    # weights for the Keras twin
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    np.savez(root / "converged" / "weights.npz", **sd)
    do_rescaled(
        net,
        root / "rescaled",
        source="models/digits_vgg/converged/model.onnx",
        data=data,
        group=group,
        dataset=DS_DIGITS,
        pre=PRE_DIGITS,
    )
    del torch


def _shapes_data(n_train=None):
    xtr_u, ytr, xte_u, yte = shapes()
    if n_train is not None:
        xtr_u, ytr = xtr_u[:n_train], ytr[:n_train]
    return C.to_nchw_float(xtr_u), ytr, C.to_nchw_float(xte_u), yte


def part_shapes_vgg():
    from models import nets

    xtr, ytr, xte, yte = data = _shapes_data()
    seed, epochs, lr, bs = 0, 10, 2e-3, 64
    group, root = "shapes_vgg", M / "shapes_vgg"
    C.seed_everything(seed)
    net = make_net("vgg", VGG_SHAPES)
    arch = arch_str("vgg", VGG_SHAPES)
    settings = train_settings(
        lr=lr, batch_size=bs, weight_decay=0.0, augmentation="random shift up to 4 px (reflect pad) + h-flip"
    )
    common = dict(group=group, dataset=DS_SHAPES, pre=PRE_SHAPES, x_tr=xtr, y_tr=ytr, x_te=xte, y_te=yte)
    base = {"architecture": arch, "seed": seed, "training": settings}
    export_and_card(
        net,
        root / "random",
        name="shapes_vgg_random",
        role="random",
        extra={
            **base,
            "epochs": 0,
            "note": "initial weights of shapes_vgg/converged = epoch 0 of the run "
            "in shapes_vgg/epochs, exported before training",
        },
        **common,
    )
    ep_dir = root / "epochs"
    export_and_card(
        net,
        ep_dir,
        name="shapes_vgg_epoch_0",
        role="epoch_0",
        fname="epoch_00.onnx",
        card_name="epoch_00.json",
        extra={**base, "epoch": 0},
        **common,
    )
    log = []

    def on_epoch(ep, model, entry):
        card = export_and_card(
            model,
            ep_dir,
            name=f"shapes_vgg_epoch_{ep}",
            role=f"epoch_{ep}",
            fname=f"epoch_{ep:02d}.onnx",
            card_name=f"epoch_{ep:02d}.json",
            extra={**base, "epoch": ep, "train_loss_this_epoch": entry["train_loss"]},
            **common,
        )
        log.append(
            {
                "epoch": ep,
                "train_loss": entry["train_loss"],
                "train_acc_running": entry["train_acc_running"],
                "train_acc": card["train_acc"],
                "test_acc": card["test_acc"],
                "onnx_path": card["onnx_path"],
            }
        )
        model.train()

    hist = C.train(
        net,
        xtr,
        ytr,
        epochs=epochs,
        seed=seed,
        lr=lr,
        batch_size=bs,
        augment=nets.random_shift_flip(4, True),
        on_epoch_end=on_epoch,
        log_prefix="[shapes_vgg] ",
    )
    C.write_json(
        ep_dir / "training_log.json",
        {
            "run": "shapes_vgg (same run as shapes_vgg/converged)",
            "architecture": arch,
            "seed": seed,
            "training": settings,
            "epochs": log,
            "note": "epoch_00.onnx = initial weights; epoch_k.onnx exported after epoch k; "
            "train_loss = mean mini-batch loss during epoch k (augmented, train "
            "mode); train_acc/test_acc evaluated after epoch k",
        },
    )
    export_and_card(
        net,
        root / "converged",
        name="shapes_vgg",
        role="converged",
        extra={**base, "epochs": epochs, **hist_fields(hist), "note": "identical to shapes_vgg/epochs/epoch_10.onnx"},
        **common,
    )
    do_rescaled(
        net,
        root / "rescaled",
        source="models/shapes_vgg/converged/model.onnx",
        data=data,
        group=group,
        dataset=DS_SHAPES,
        pre=PRE_SHAPES,
    )


def _train_simple(
    group, out_dir, kind, cfg, *, seed, epochs, lr, bs, aug, n_train=None, role="converged", name=None, extra=None
):
    from models import nets

    xtr, ytr, xte, yte = _shapes_data(n_train)
    C.seed_everything(seed)
    net = make_net(kind, cfg)
    augment = nets.random_shift_flip(4, True) if aug else None
    hist = C.train(
        net, xtr, ytr, epochs=epochs, seed=seed, lr=lr, batch_size=bs, augment=augment, log_prefix=f"[{name or group}] "
    )
    settings = train_settings(
        lr=lr,
        batch_size=bs,
        weight_decay=0.0,
        n_train=len(ytr),
        augmentation="random shift up to 4 px (reflect pad) + h-flip" if aug else "none",
    )
    return net, export_and_card(
        net,
        out_dir,
        name=name or group,
        role=role,
        group=group,
        dataset=DS_SHAPES,
        pre=PRE_SHAPES,
        x_tr=xtr,
        y_tr=ytr,
        x_te=xte,
        y_te=yte,
        extra={
            "architecture": arch_str(kind, cfg),
            "seed": seed,
            "epochs": epochs,
            "training": settings,
            **hist_fields(hist),
            **(extra or {}),
        },
    )


def part_shapes_bn():
    _train_simple(
        "shapes_vgg_bn",
        M / "shapes_vgg_bn" / "converged",
        "vgg",
        VGG_SHAPES_BN,
        seed=0,
        epochs=10,
        lr=2e-3,
        bs=64,
        aug=True,
    )


def part_shapes_res():
    _train_simple(
        "shapes_resnet",
        M / "shapes_resnet" / "converged",
        "resnet",
        RES_SHAPES,
        seed=0,
        epochs=10,
        lr=2e-3,
        bs=64,
        aug=True,
    )


GENA = [  # name, n_train, epochs, batch size, augmentation
    ("genA_n6000_noaug", 6000, 10, 64, False),
    ("genA_n2000_noaug", 2000, 20, 32, False),
    ("genA_n600_noaug", 600, 40, 32, False),
    ("genA_n200_noaug", 200, 100, 32, False),
]


def part_genA():
    for name, n, ep, bs, aug in GENA:
        _train_simple(
            "genA",
            M / "genA" / name,
            "vgg",
            VGG_SHAPES,
            seed=0,
            epochs=ep,
            lr=2e-3,
            bs=bs,
            aug=aug,
            n_train=n,
            role=name,
            name=name,
            extra={
                "note": "same architecture as shapes_vgg/converged (which is a 5th "
                "member: n=6000, 10 epochs, with augmentation); training "
                f"set = first {n} shapes training images"
            },
        )


GENB_RATES = [0.0, 0.2, 0.4, 0.6, 0.8]
GENB_EPOCHS = 60


def corrupt_labels(y: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Replace round(rate*n) labels (a seeded random subset) by a different random class."""
    rng = np.random.default_rng(seed)
    y2 = y.copy()
    k = int(round(rate * len(y)))
    idx = rng.choice(len(y), k, replace=False)
    y2[idx] = (y[idx] + rng.integers(1, 10, k)) % 10
    return y2


def part_genB():
    xtr, ytr, xte, yte = _shapes_data(GENB_N)
    man = (
        json.loads((DATA / "shapes" / "manifest.json").read_text())
        if (DATA / "shapes" / "manifest.json").exists()
        else None
    )
    for rate in GENB_RATES:
        name = f"genB_noise_{rate:.1f}"
        out = M / "genB" / f"noise_{rate:.1f}"
        seed = 0
        yc = corrupt_labels(ytr, rate, seed=1000 + int(round(rate * 10)))
        C.seed_everything(seed)
        net = make_net("vgg", VGG_SHAPES_BN)
        lr, bs = 3e-3, 32
        hist = C.train(net, xtr, yc, epochs=GENB_EPOCHS, seed=seed, lr=lr, batch_size=bs, log_prefix=f"[{name}] ")
        train_acc_clean = C.evaluate(net, xtr, ytr)
        extra = {
            "architecture": arch_str("vgg", VGG_SHAPES_BN),
            "seed": seed,
            "epochs": GENB_EPOCHS,
            "label_noise_rate": rate,
            "n_labels_corrupted": int((yc != ytr).sum()),
            "corruption": "a seeded random subset of round(rate*n) training labels is "
            "replaced by a uniformly random *different* class "
            f"(numpy default_rng seed {1000 + int(round(rate * 10))})",
            "train_acc_clean_labels": train_acc_clean,
            "training": train_settings(lr=lr, batch_size=bs, weight_decay=0.0, n_train=GENB_N, augmentation="none"),
            **hist_fields(hist),
            "labels_file": C.rel(out / "labels.npz"),
        }
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "labels.npz", train_labels_used=yc, train_labels_clean=ytr)
        if man is not None:  # labels used in training for the PNGs in models/data/shapes/train
            extra["png_train_labels_used"] = {p: int(yc[i]) for p, i in man["train"]["png_to_index"].items()}
        export_and_card(
            net,
            out,
            name=name,
            role=name,
            group="genB",
            dataset=DS_SHAPES,
            pre=PRE_SHAPES,
            x_tr=xtr,
            y_tr=yc,
            x_te=xte,
            y_te=yte,
            extra=extra,
            train_labels_note="train_acc is on the (corrupted) labels used in training; test_acc on clean labels",
        )


def part_keras(tf_python: str):
    src = M / "digits_vgg" / "converged"
    if not Path(tf_python).exists():
        print(
            f"[keras] SKIPPED: {tf_python} not found (create /work/venv-tf with "
            f"`pip install tensorflow tf2onnx onnx numpy`)"
        )
        return
    if not (src / "weights.npz").exists():
        raise SystemExit("[keras] run --only digits first")
    xtr_u, ytr, xte_u, yte = digits()
    xtr, xte = C.to_nchw_float(xtr_u), C.to_nchw_float(xte_u)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    t = time.time()
    subprocess.run(
        [
            tf_python,
            str(M / "keras_twin.py"),
            str(src / "weights.npz"),
            str(src / "model_keras.onnx"),
            json.dumps(VGG_DIGITS),
        ],
        check=True,
        env=env,
        cwd="/tmp",
    )
    kpath, tpath = src / "model_keras.onnx", src / "model.onnx"
    lk, lt = C.onnx_logits(kpath, xte), C.onnx_logits(tpath, xte)
    diff = float(np.max(np.abs(lk - lt)))
    agree = float((lk.argmax(1) == lt.argmax(1)).mean())
    tcard = json.loads((src / "card.json").read_text())
    ver = subprocess.run(
        [
            tf_python,
            "-c",
            "import tensorflow as tf, tf2onnx, keras;print(tf.__version__, tf2onnx.__version__, keras.__version__)",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd="/tmp",
    ).stdout.split()
    card = {
        k: tcard[k]
        for k in ("dataset", "preprocessing", "data_folders", "seed", "epochs", "training", "train_loss_per_epoch")
    }
    card = {
        "name": "digits_vgg_keras",
        "role": "keras",
        "group": "digits_vgg",
        "onnx_path": C.rel(kpath),
        **card,
        "train_acc": float((C.onnx_logits(kpath, xtr).argmax(1) == ytr).mean()),
        "test_acc": float((lk.argmax(1) == yte).mean()),
        "architecture": tcard["architecture"] + " rebuilt in Keras (NCHW input, Permute "
        "to NHWC, Conv2D 'same', MaxPooling2D, Flatten after permuting the "
        "first Dense kernel from CHW to HWC order)",
        "weights_from": C.rel(src / "weights.npz") + " (torch state_dict of digits_vgg)",
        "twin_of": tcard["onnx_path"],
        "max_abs_logit_diff_vs_torch_onnx_test": diff,
        "argmax_agreement_vs_torch_onnx_test": agree,
        "exporter": {
            "tool": "tf2onnx.convert.from_keras",
            "opset": C.OPSET,
            "tensorflow": ver[0] if ver else None,
            "tf2onnx": ver[1] if len(ver) > 1 else None,
            "keras": ver[2] if len(ver) > 2 else None,
        },
        "onnx": C.onnx_summary(kpath),
        "build_seconds": round(time.time() - t, 1),
    }
    C.write_json(src / "card_keras.json", card)
    print(
        f"[keras] {C.rel(kpath)}: test {card['test_acc']:.4f}; max |logit diff| vs torch "
        f"export {diff:.2e}; argmax agreement {agree:.4f}"
    )
    assert diff < 1e-3, diff


def part_index():
    entries = []
    for card_path in sorted(M.rglob("*.json")):
        if "data" in card_path.relative_to(M).parts[:1]:
            continue
        try:
            c = json.loads(card_path.read_text())
        except Exception:
            continue
        if not isinstance(c, dict) or ("onnx_path" not in c and card_path.parent.name != "demo"):
            continue
        if card_path.parent.name == "demo":
            c = dict(
                c,
                role="demo",
                group="demo",
                onnx_path="models/demo/model.onnx",
                data_folders={"test": c["data_folder"], "train": FOLDERS["digits32"]["train"]},
                dataset=c["dataset"],
            )
        pre = c["preprocessing"]
        entries.append(
            {
                "name": c["name"],
                "path": c["onnx_path"],
                "card": C.rel(card_path),
                "dataset": c["dataset"]["name"],
                "role": c["role"],
                "group": c.get("group"),
                "input_size": pre["input_size"],
                "input_shape": pre["input_shape"],
                "preprocessing": {k: pre[k] for k in ("scale", "mean", "std", "color", "layout")},
                "train_acc": c.get("train_acc"),
                "test_acc": c.get("test_acc"),
                "data_folders": c["data_folders"],
            }
        )
    order = ["demo", "digits_vgg", "shapes_vgg", "shapes_vgg_bn", "shapes_resnet", "genA", "genB"]
    sub = {n: i for i, (n, *_rest) in enumerate(GENA)}

    def key(e):
        return (order.index(e["group"]) if e["group"] in order else 99, sub.get(e["name"], -1), e["path"])

    entries.sort(key=key)
    C.write_json(
        M / "index.json",
        {
            "description": "onnx-fe model zoo; rebuild with `python -m models.build`",
            "preprocessing_convention": "x = png_uint8 * scale; x = (x - mean) / std; layout NCHW; "
            "RGB channel order for color=rgb",
            "models": entries,
        },
    )
    print(f"[index] {len(entries)} models -> models/index.json")


PARTS = ["demo", "data", "digits", "shapes_vgg", "shapes_bn", "shapes_res", "genA", "genB", "keras", "index"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated parts: " + ",".join(PARTS))
    ap.add_argument("--skip", default="", help="comma-separated parts to skip")
    ap.add_argument(
        "--tf-python", default="/work/venv-tf/bin/python", help="python of the TensorFlow venv for the keras part"
    )
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    if a.list:
        print("\n".join(PARTS))
        return
    parts = [p for p in (a.only.split(",") if a.only else PARTS) if p]
    skip = set(p for p in a.skip.split(",") if p)
    bad = [p for p in parts + list(skip) if p not in PARTS]
    if bad:
        raise SystemExit(f"unknown part(s) {bad}; choose from {PARTS}")
    if "index" not in parts:
        parts.append("index")
    timings = {}
    t_all = time.time()
    for p in PARTS:
        if p not in parts or p in skip:
            continue
        t = time.time()
        print(f"===== {p} =====", flush=True)
        if p == "keras":
            part_keras(a.tf_python)
        else:
            globals()[f"part_{p}"]()
        timings[p] = round(time.time() - t, 1)
        print(f"===== {p} done in {timings[p]}s =====", flush=True)
    timings["total"] = round(time.time() - t_all, 1)
    tpath = M / "build_timings.json"
    old = json.loads(tpath.read_text()) if tpath.exists() else {}
    old.update({k: v for k, v in timings.items() if k != "total"})
    old["last_run"] = {"parts": [p for p in parts if p not in skip], "seconds": timings["total"], "threads": 2}
    C.write_json(tpath, old)
    print("timings:", timings)


if __name__ == "__main__":
    main()
