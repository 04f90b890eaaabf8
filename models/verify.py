"""Check the zoo without torch: every model in models/index.json loads in onnxruntime,
is a single self-contained file, and classifies its PNG folders (PNG/255, NCHW).

    python -m models.verify            # needs numpy, onnx, onnxruntime, pillow only
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def load_folder(root: Path, color: str):
    from PIL import Image

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    xs, ys = [], []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).glob("*.png"), key=lambda p: int(p.stem)):
            xs.append(np.asarray(Image.open(f).convert("L" if color == "gray" else "RGB")))
            ys.append(ci)
    x = np.stack(xs).astype(np.float32)
    return x, np.array(ys)


def main() -> int:
    import onnx
    import onnxruntime as ort

    index = json.loads((ROOT / "models" / "index.json").read_text())
    cache, ok = {}, True
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    print(f"{'path':58s} {'role':18s} {'card test':>9s} " + " ".join(f"{k:>6s}" for k in ("train", "test")))
    for e in index["models"]:
        p = ROOT / e["path"]
        m = onnx.load(str(p), load_external_data=False)
        ext = [t.name for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        size_mb = p.stat().st_size / 2**20
        if ext or size_mb > 5:
            print(f"FAIL {p}: external data {ext[:3]} / size {size_mb:.1f} MB")
            ok = False
        sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        pre, accs = e["preprocessing"], []
        for split in ("train", "test"):
            folder = e["data_folders"].get(split)
            if folder is None:
                accs.append("   n/a")
                continue
            key = (folder, pre["color"])
            if key not in cache:
                cache[key] = load_folder(ROOT / folder, pre["color"])
            x, y = cache[key]
            x = x * pre["scale"]
            mean, std = np.array(pre["mean"], np.float32), np.array(pre["std"], np.float32)
            x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
            x = (x - mean[None, :, None, None]) / std[None, :, None, None]
            logits = sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})[0]
            accs.append(f"{float((logits.argmax(1) == y).mean()):6.3f}")
        print(f"{e['path']:58s} {e['role']:18s} {e['test_acc']:9.3f} " + " ".join(accs))
    total = sum(f.stat().st_size for f in (ROOT / "models").rglob("*") if f.is_file())
    big = [f for f in (ROOT / "models").rglob("*") if f.is_file() and f.stat().st_size > 5 * 2**20]
    print(f"models/ total {total / 2**20:.1f} MB; files > 5 MB: {[str(b) for b in big]}")
    ok &= not big
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
