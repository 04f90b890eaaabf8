"""Stage 2 — data: labelled images from an ImageFolder directory or an ``.npz``.

An ImageFolder directory has one sub-folder per class (class order = sorted
folder names, as in torchvision). An ``.npz`` holds ``x`` already in the
model's input layout, ``y`` integer labels and optionally ``classes``.
Images are picked deterministically: per class, ``images_per_class`` of them
drawn with a seeded generator from the sorted file list, then kept in sorted
order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OnnxFeError
from .preprocess import Preprocess

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class Dataset:
    source: Path
    kind: str  # "folder" | "npz"
    classes: list[str]
    labels: np.ndarray  # (N,) int, index into classes
    ids: list[str]  # file path relative to the source, or "index:i" for npz
    _x: np.ndarray | None = field(default=None, repr=False)  # npz only (memory-mapped when possible)
    _npz_index: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        """Shape of one sample as stored (``.npz`` only; None for image folders, whose size comes from preprocessing)."""
        return tuple(int(d) for d in self._x.shape[1:]) if self._x is not None else None

    def load(self, start: int, stop: int, pre: Preprocess, dtype=np.float32) -> np.ndarray:
        """Model input for samples [start, stop)."""
        if self.kind == "npz":
            return np.ascontiguousarray(self._x[self._npz_index[start:stop]], dtype=dtype)
        return np.stack([load_image(self.source / rel, pre) for rel in self.ids[start:stop]]).astype(dtype, copy=False)


def load_image(path: Path, pre: Preprocess) -> np.ndarray:
    """One image file → float array in the model's layout (C,H,W) or (H,W,C)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P" or im.mode == "PA":
                im = im.convert("RGBA")
            elif im.mode.startswith("I;16"):  # 16-bit grey: map 0..65535 onto 0..255 (PIL's convert clips at 255)
                im = Image.fromarray(np.rint(np.asarray(im, dtype=np.float64) / 257).astype(np.uint8), "L")
            if pre.color == "gray":
                im = im.convert("L")
            else:
                im = im.convert("RGB")
            if im.size != (pre.width, pre.height):
                im = im.resize((pre.width, pre.height), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32)
    except OnnxFeError:
        raise
    except Exception as e:
        raise OnnxFeError(f"cannot read image {path}: {e}") from None
    if a.ndim == 2:
        a = a[:, :, None]
    if pre.color == "bgr":
        a = a[:, :, ::-1]
    a = a * np.float32(pre.scale)
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    for name, v in (("mean", mean), ("std", std)):
        if v.size not in (1, a.shape[2]):
            raise OnnxFeError(f"--{name} has {v.size} values; give 1 or {a.shape[2]} (one per channel)")
    a = (a - mean) / std
    if pre.layout == "nchw":
        a = a.transpose(2, 0, 1)
    return np.ascontiguousarray(a)


def _pick(n_total: int, n_keep: int | None, seed: int, class_name: str) -> np.ndarray:
    """Indices of the images kept for one class: a seeded draw that depends only on the seed and the
    class's name, so selecting other classes (``--classes``) never changes which images a class gets."""
    if n_keep is None or n_keep >= n_total:
        return np.arange(n_total)
    key = int.from_bytes(hashlib.sha256(class_name.encode()).digest()[:8], "little")
    rng = np.random.default_rng([seed, key])
    return np.sort(rng.choice(n_total, size=n_keep, replace=False))


def _filter_classes(classes: list[str], wanted: list[str] | None) -> list[int]:
    if not wanted:
        return list(range(len(classes)))
    out = []
    for w in wanted:
        for item in [s.strip() for s in w.split(",") if s.strip()]:
            if item not in classes:
                raise OnnxFeError(
                    f"--classes {item!r} is not a class of the data (have: {', '.join(classes[:20])}{'…' if len(classes) > 20 else ''})"
                )
            out.append(classes.index(item))
    return sorted(set(out))


def open_dataset(
    source, images_per_class: int | None = 100, classes: list[str] | None = None, seed: int = 0
) -> Dataset:
    """Index a dataset (no pixels are read yet, only headers are checked)."""
    source = Path(source)
    if not source.exists():
        raise OnnxFeError(f"data not found: {source}")
    if images_per_class is not None and images_per_class < 1:
        raise OnnxFeError("--images-per-class must be at least 1")
    if source.is_file():
        if source.suffix.lower() != ".npz":
            raise OnnxFeError(f"data must be an ImageFolder directory or an .npz file, got {source}")
        return _open_npz(source, images_per_class, classes, seed)
    return _open_folder(source, images_per_class, classes, seed)


def _open_folder(root: Path, per_class, wanted, seed) -> Dataset:
    from PIL import Image

    class_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise OnnxFeError(f"no class sub-folders in {root} (expected ImageFolder layout: {root}/<class>/<image>)")
    keep = _filter_classes(class_dirs, wanted)
    ids, labels, classes = [], [], [class_dirs[k] for k in keep]
    for ci, k in enumerate(keep):
        files = sorted(
            p
            for p in (root / class_dirs[k]).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if not files:
            raise OnnxFeError(
                f"class folder {root / class_dirs[k]} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        for j in _pick(len(files), per_class, seed, class_dirs[k]):
            ids.append(files[j].relative_to(root).as_posix())
            labels.append(ci)
    for rel in ids:  # cheap header check so that a bad file fails before any work
        try:
            with Image.open(root / rel) as im:
                im.verify()
        except Exception as e:
            raise OnnxFeError(f"cannot read image {root / rel}: {e}") from None
    return Dataset(source=root, kind="folder", classes=classes, labels=np.asarray(labels, dtype=np.int64), ids=ids)


def _open_npz(path: Path, per_class, wanted, seed) -> Dataset:
    try:
        z = np.load(path, allow_pickle=False)
        keys = set(z.files)
    except Exception as e:
        raise OnnxFeError(f"cannot read {path}: {e}") from None
    for k in ("x", "y"):
        if k not in keys:
            raise OnnxFeError(
                f"{path.name} lacks the array {k!r} (expected x: inputs, y: integer labels, optional classes)"
            )
    try:  # members are read lazily: object arrays or a damaged member fail here
        x, y = z["x"], z["y"]
        raw_names = z["classes"] if "classes" in keys else None
    except Exception as e:
        raise OnnxFeError(f"cannot read {path}: {e}") from None
    if x.ndim != 4:
        raise OnnxFeError(f"{path.name}: x must be 4-D (N, ...) in the model's input layout, got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise OnnxFeError(
            f"{path.name}: y must be 1-D with one label per row of x (x has {len(x)} rows, y has shape {y.shape})"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise OnnxFeError(f"{path.name}: y must hold integer labels, not {y.dtype}")
    if not np.issubdtype(x.dtype, np.number):
        raise OnnxFeError(f"{path.name}: x must be numeric, not {x.dtype}")
    if len(x) == 0:
        raise OnnxFeError(f"{path.name} holds no samples")
    if raw_names is not None and raw_names.ndim != 1:
        raise OnnxFeError(f"{path.name}: classes must be a 1-D array of names, got shape {raw_names.shape}")
    if "classes" in keys:
        names = [c.decode() if isinstance(c, bytes) else str(c) for c in raw_names]
        if y.min() < 0 or y.max() >= len(names):
            raise OnnxFeError(f"{path.name}: labels must lie in 0..{len(names) - 1} (one per name in classes)")
        present = sorted(set(int(v) for v in y))
        all_names = names
    else:
        present = sorted(set(int(v) for v in y))
        all_names = {v: str(v) for v in present}
        names = None
    label_names = [all_names[v] for v in present]
    keep = _filter_classes(label_names, wanted)
    idx, labels = [], []
    for ci, k in enumerate(keep):
        rows = np.flatnonzero(y == present[k])
        sel = rows[_pick(len(rows), per_class, seed, label_names[k])]
        idx.extend(sel.tolist())
        labels.extend([ci] * len(sel))
    return Dataset(
        source=path,
        kind="npz",
        classes=[label_names[k] for k in keep],
        labels=np.asarray(labels, dtype=np.int64),
        ids=[f"index:{i}" for i in idx],
        _x=x,
        _npz_index=np.asarray(idx, dtype=np.int64),
    )


def check_npz_shape(ds: Dataset, input_shape: list, layout: str) -> None:
    if ds.kind != "npz":
        return
    got = tuple(ds._x.shape[1:])
    if len(got) != 3:
        raise OnnxFeError(f"{ds.source.name}: x must be 4-D (N, ...) in the model's input layout, got {ds._x.shape}")
    for g, m in zip(got, input_shape[1:]):
        if m is not None and g != m:
            raise OnnxFeError(
                f"{ds.source.name}: x has sample shape {got} but the model input is "
                f"{tuple('?' if d is None else d for d in input_shape[1:])} ({layout})"
            )
