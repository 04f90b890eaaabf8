"""Build the small demo model: a 3-conv CNN trained on scikit-learn's digits.

    python -m models.build_demo          (or: python models/build_demo.py)

Writes models/demo/{model.onnx, card.json, data/<class>/<i>.png}.  Runs in
well under a minute on 2 CPU cores.  Deterministic from SEED.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "models"

from models import common as C

SEED = 0
EPOCHS = 40
PER_CLASS = 20
OUT = C.MODELS_DIR / "demo"


def make_demo_net():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),  # conv1 32x32
        nn.MaxPool2d(2),  # 16x16
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),  # conv2 16x16
        nn.MaxPool2d(2),  # 8x8
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),  # conv3 8x8
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def build(out: Path = OUT) -> dict:
    t0 = time.time()
    C.seed_everything(SEED)
    xtr_u8, ytr, xte_u8, yte = C.load_digits_uint8(32)
    xtr, xte = C.to_nchw_float(xtr_u8), C.to_nchw_float(xte_u8)

    net = make_demo_net()
    hist = C.train(
        net, xtr, ytr, epochs=EPOCHS, seed=SEED, lr=3e-3, batch_size=32, x_te=xte, y_te=yte, log_prefix="[demo] "
    )
    train_acc, test_acc = C.evaluate(net, xtr, ytr), C.evaluate(net, xte, yte)

    onnx_path = out / "model.onnx"
    C.export_onnx(net, onnx_path, (1, 32, 32))
    diff = C.verify_onnx(net, onnx_path, xte)
    assert diff < 1e-4, diff

    counts = C.save_image_folder(out / "data", xte_u8, yte, PER_CLASS, seed=SEED)
    # round-trip: PNG -> /255 must equal the training input exactly
    xr, yr, _ = C.load_image_folder(out / "data", color="gray")
    xr_f = C.to_nchw_float(xr)
    png_acc = float((C.onnx_logits(onnx_path, xr_f).argmax(1) == yr).mean())
    # every saved PNG is a pixel-exact copy of a test image
    te_set = {x.tobytes() for x in xte_u8}
    assert all(x.tobytes() in te_set for x in xr), "PNG round trip is not exact"

    card = {
        "name": "demo",
        "description": "3-conv CNN (conv-relu, maxpool, conv-BN-relu, maxpool, conv-relu, "
        "global avg pool, linear) trained on scikit-learn digits.",
        "dataset": {
            "name": "digits32",
            "source": "sklearn.datasets.load_digits (bundled, no download)",
            "construction": "values 0..16 scaled by 255/16, bilinear upsample 8x8->32x32 "
            "(torch F.interpolate, align_corners=False), rounded to uint8",
            "split": f"stratified train_test_split test_size={C.DIGITS_TEST_SIZE} random_state={C.DIGITS_SPLIT_SEED}",
            "n_train": int(len(ytr)),
            "n_test": int(len(yte)),
            "classes": [str(i) for i in range(10)],
        },
        "preprocessing": {
            "input_size": [32, 32],
            "scale": 1 / 255,
            "mean": [0.0],
            "std": [1.0],
            "color": "gray",
            "layout": "nchw",
            "input_name": "input",
            "input_shape": ["N", 1, 32, 32],
            "dtype": "float32",
        },
        "data_folder": C.rel(out / "data"),
        "data_folder_counts": counts,
        "train_acc": train_acc,
        "test_acc": test_acc,
        "png_folder_acc": png_acc,
        "epochs": EPOCHS,
        "seed": SEED,
        "training": {
            "optimizer": "adam",
            "lr": 3e-3,
            "schedule": "cosine",
            "batch_size": 32,
            "weight_decay": 0.0,
            "augmentation": "none",
        },
        "train_loss_per_epoch": [h["train_loss"] for h in hist],
        "test_acc_per_epoch": [h["test_acc"] for h in hist],
        "onnx": C.onnx_summary(onnx_path),
        "onnx_vs_torch_max_abs_diff": diff,
        "build_seconds": round(time.time() - t0, 1),
    }
    C.write_json(out / "card.json", card)
    print(
        f"[demo] train {train_acc:.4f} test {test_acc:.4f} png-folder {png_acc:.4f} "
        f"diff {diff:.2e} in {card['build_seconds']}s"
    )
    return card


if __name__ == "__main__":
    build()
