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
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OnnxFeError
from .preprocess import Preprocess, check_per_channel, model_layout, to_input_dtype

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
    # SHA-256 of each image file's bytes as read when the dataset was opened (folder only); every later read
    # is checked against it, so a file changed during a run cannot slip into its results
    digests: list[str] | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)  # one-line notices for the user (e.g. short classes)
    _fingerprint: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        """Shape of one sample as stored (``.npz`` only; None for image folders, whose size comes from preprocessing)."""
        return tuple(int(d) for d in self._x.shape[1:]) if self._x is not None else None

    def fingerprint(self) -> str:
        """Hex SHA-256 of the data's contents: the bytes of every selected image file (or the selected rows of
        the .npz's x, with their dtype and shape), each sample's id and label, and the class names."""
        if self._fingerprint is None:
            h = hashlib.sha256(f"onnx-fe-data/1\n{self.kind}\n".encode())
            h.update(("\t".join(self.classes) + "\n").encode())
            if self.kind == "npz":
                h.update(f"{self._x.dtype.str} {tuple(self._x.shape[1:])}\n".encode())
                for s in range(0, len(self._npz_index), 256):
                    h.update(np.ascontiguousarray(self._x[self._npz_index[s : s + 256]]).data)
                digests = [""] * len(self.ids)
            else:
                digests = self.digests or [file_digest(self.source / rel) for rel in self.ids]
            for i, lab, d in zip(self.ids, self.labels, digests):
                h.update(f"{i}\t{int(lab)}\t{d}\n".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def load(self, start: int, stop: int, pre: Preprocess, dtype=np.float32) -> np.ndarray:
        """Model input for samples [start, stop), cast to the model's input type (integers checked for range)."""
        if self.kind == "npz":
            return to_input_dtype(np.ascontiguousarray(self._x[self._npz_index[start:stop]]), dtype)
        out = []
        for j in range(start, stop):
            path = self.source / self.ids[j]
            data = _read_bytes(path)
            if self.digests is not None and hashlib.sha256(data).hexdigest() != self.digests[j]:
                raise OnnxFeError(
                    f"image {path} changed while it was in use (its contents differ from when the run started); "
                    "run the same command again"
                )
            out.append(_decode(data, path, pre))
        return to_input_dtype(np.stack(out), dtype)


def file_digest(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise OnnxFeError(f"cannot read {path}: {e.strerror or e}") from None
    return h.hexdigest()


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise OnnxFeError(f"cannot read image {path}: {e.strerror or e}") from None


def load_image(path: Path, pre: Preprocess) -> np.ndarray:
    """One image file → float array in the model's layout (C,H,W) or (H,W,C)."""
    return _decode(_read_bytes(path), Path(path), pre)


# Modes whose pixels are not 8-bit: how their values are put on the 0..255 scale that --scale/--mean/--std
# refer to. 16-bit grey (I;16*, and mode I as PIL gives 16-bit PNG/PNM files) is divided by 257; 32-bit
# floats (F) in 0..1 are multiplied by 255; anything else in these modes has no defined range and is refused.
SIXTEEN_BIT_I_FORMATS = {"PNG", "PPM"}


def _check_mode(im, path: Path) -> None:
    """Refuse images whose pixel range cannot be known from the file (cheap: header only, except mode F)."""
    if im.mode == "I" and im.format not in SIXTEEN_BIT_I_FORMATS:
        raise OnnxFeError(
            f"image {path} has 32-bit integer pixels (PIL mode I, {im.format or 'unknown'} file) with no defined "
            "range; convert it to 8- or 16-bit, or give the data as an .npz"
        )


def _deep_grey(im, path: Path) -> np.ndarray:
    """Pixels of a 16-bit or float grey image as float64 on the 0..255 scale, or a one-line refusal."""
    a = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        if not np.isfinite(a).all():
            raise OnnxFeError(f"image {path} has NaN or infinite pixels (PIL mode F)")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < 0 or hi > 1:
            raise OnnxFeError(
                f"image {path} has floating-point pixels in {lo:g}..{hi:g} (PIL mode F); only 0..1 is understood "
                "(mapped onto 0..255): rescale the file, or give the data as an .npz"
            )
        return a * 255
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise OnnxFeError(
            f"image {path} has integer pixels outside 0..65535 (PIL mode {im.mode}); convert it to 8- or 16-bit"
        )
    return a / 257


def _decode(data: bytes, path: Path, pre: Preprocess) -> np.ndarray:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            _check_mode(im, path)
            im.load()
            if im.mode == "P" or im.mode == "PA":
                im = im.convert("RGBA")
            elif im.mode.startswith("I;16") or im.mode == "I":  # 16-bit grey: 0..65535 onto 0..255
                # (PIL's convert would clip at 255); rounded to 8 bits as before, so results are unchanged
                im = Image.fromarray(np.rint(_deep_grey(im, path)).astype(np.uint8), "L")
            if im.mode == "F":  # float grey: kept in float, resized in float
                g = Image.fromarray(_deep_grey(im, path).astype(np.float32), "F")
                if g.size != (pre.width, pre.height):
                    g = g.resize((pre.width, pre.height), Image.BILINEAR)
                a = np.asarray(g, dtype=np.float32)[:, :, None]
                if pre.color != "gray":
                    a = np.repeat(a, 3, axis=2)
            else:
                im = im.convert("L") if pre.color == "gray" else im.convert("RGB")
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
    check_per_channel("--mean", mean.size, a.shape[2])
    check_per_channel("--std", std.size, a.shape[2])
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


def split_names(text: str) -> list[str]:
    """Split a comma-separated list; ``\\,`` stands for a comma inside a name. Empty items are dropped."""
    items = re.split(r"(?<!\\),", str(text))
    return [t.replace("\\,", ",").strip() for t in items if t.replace("\\,", ",").strip()]


def select_names(names: list[str], wanted, option: str = "--classes", where: str = "of the data") -> list[int]:
    """Indices (sorted, unique) of the names chosen by ``wanted``: values that are a name exactly (so a class
    named ``a,b`` can be chosen), else comma-separated names (``\\,`` escapes a comma). None or [] = all."""
    if wanted is None or (not isinstance(wanted, str) and len(wanted) == 0):
        return list(range(len(names)))
    if isinstance(wanted, str):
        wanted = [wanted]
    items = []
    for w in wanted:
        w = str(w)
        items.extend([w] if w in names else split_names(w))
    if not items:
        raise OnnxFeError(f"{option} {','.join(map(str, wanted))!r} names no class")
    out = []
    for item in items:
        if item not in names:
            raise OnnxFeError(
                f"{option} {item!r} is not a class {where} (have: {', '.join(names[:20])}"
                f"{'…' if len(names) > 20 else ''})"
            )
        out.append(names.index(item))
    return sorted(set(out))


def _filter_classes(classes: list[str], wanted: list[str] | None) -> list[int]:
    return select_names(classes, wanted)


def _short_note(per_class, short: list[tuple[str, int]]) -> list[str]:
    if not short:
        return []
    shown = ", ".join(f"{name} ({n})" for name, n in short[:8]) + (", …" if len(short) > 8 else "")
    return [
        f"note: -n {per_class}: {len(short)} class{'es' if len(short) > 1 else ''} "
        f"{'have' if len(short) > 1 else 'has'} fewer images and all of theirs are used: {shown}"
    ]


def open_dataset(
    source, images_per_class: int | None = 100, classes: list[str] | None = None, seed: int = 0
) -> Dataset:
    """Index a dataset (no pixels are read yet, only headers are checked)."""
    source = Path(source)
    if not source.exists():
        raise OnnxFeError(f"data not found: {source}")
    if images_per_class is not None and images_per_class < 1:
        raise OnnxFeError("--images-per-class must be at least 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise OnnxFeError(f"--seed {seed!r}: give a non-negative integer")
    if source.is_file():
        if source.suffix.lower() != ".npz":
            raise OnnxFeError(f"data must be an ImageFolder directory or an .npz file, got {source}")
        return _open_npz(source, images_per_class, classes, seed)
    return _open_folder(source, images_per_class, classes, seed)


def _open_folder(root: Path, per_class, wanted, seed) -> Dataset:
    import io

    from PIL import Image

    try:
        class_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise OnnxFeError(f"cannot list {root}: {e.strerror or e}") from None
    if not class_dirs:
        raise OnnxFeError(f"no class sub-folders in {root} (expected ImageFolder layout: {root}/<class>/<image>)")
    keep = _filter_classes(class_dirs, wanted)
    ids, labels, classes, short = [], [], [class_dirs[k] for k in keep], []
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
        if per_class is not None and len(files) < per_class:
            short.append((class_dirs[k], len(files)))
        for j in _pick(len(files), per_class, seed, class_dirs[k]):
            ids.append(files[j].relative_to(root).as_posix())
            labels.append(ci)
    # Every file is read once here: its bytes are hashed (the data's fingerprint, checked again at every later
    # read) and its header is checked, so that a bad file fails before any work.
    digests = []
    for rel in ids:
        path = root / rel
        data = _read_bytes(path)
        digests.append(hashlib.sha256(data).hexdigest())
        try:
            with Image.open(io.BytesIO(data)) as im:
                _check_mode(im, path)
                mode = im.mode
                im.verify()
            if mode == "F":  # the range of float pixels is only known from the pixels
                with Image.open(io.BytesIO(data)) as im:
                    im.load()
                    _deep_grey(im, path)
        except OnnxFeError:
            raise
        except Exception as e:
            raise OnnxFeError(f"cannot read image {path}: {e}") from None
    return Dataset(
        source=root,
        kind="folder",
        classes=classes,
        labels=np.asarray(labels, dtype=np.int64),
        ids=ids,
        digests=digests,
        notes=_short_note(per_class, short),
    )


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
    try:  # members are read lazily: object arrays or a damaged member fail here; x only as far as needed
        x = _NpyMember(path, "x.npy")
        y = z["y"]
        raw_names = z["classes"] if "classes" in keys else None
    except OnnxFeError:
        raise
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
    if np.iscomplexobj(x):
        raise OnnxFeError(f"{path.name}: x holds complex numbers ({x.dtype}); give real-valued model inputs")
    if not np.issubdtype(x.dtype, np.number):
        raise OnnxFeError(f"{path.name}: x must be numeric, not {x.dtype}")
    if len(x) == 0:
        raise OnnxFeError(f"{path.name} holds no samples")
    if raw_names is not None and raw_names.ndim != 1:
        raise OnnxFeError(f"{path.name}: classes must be a 1-D array of names, got shape {raw_names.shape}")
    if "classes" in keys:
        names = [c.decode() if isinstance(c, bytes) else str(c) for c in raw_names]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise OnnxFeError(
                f"{path.name}: classes has duplicate names ({', '.join(map(repr, dups[:10]))}); "
                "each class needs its own name"
            )
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
    idx, labels, short = [], [], []
    for ci, k in enumerate(keep):
        rows = np.flatnonzero(y == present[k])
        if per_class is not None and len(rows) < per_class:
            short.append((label_names[k], len(rows)))
        sel = rows[_pick(len(rows), per_class, seed, label_names[k])]
        idx.extend(sel.tolist())
        labels.extend([ci] * len(sel))
    order = np.argsort(idx, kind="stable")
    x = x.rows(np.asarray(idx, dtype=np.int64)[order])  # the chosen rows only, in file order
    pos = np.empty(len(idx), dtype=np.int64)
    pos[order] = np.arange(len(idx))
    if np.issubdtype(x.dtype, np.inexact):  # only the rows used matter
        for s in range(0, len(idx), 256):
            block = x[pos[s : s + 256]]
            bad = ~np.isfinite(block.reshape(len(block), -1)).all(axis=1)
            if bad.any():
                raise OnnxFeError(f"{path.name}: x[{idx[s + int(bad.argmax())]}] holds NaN or infinite values")
    return Dataset(
        notes=_short_note(per_class, short),
        source=path,
        kind="npz",
        classes=[label_names[k] for k in keep],
        labels=np.asarray(labels, dtype=np.int64),
        ids=[f"index:{i}" for i in idx],
        _x=x,
        _npz_index=pos,  # where each chosen sample lies in x (which holds the chosen rows only)
    )


def npz_rows(path, rows) -> np.ndarray:
    """Rows ``rows`` (in that order) of an .npz's x, reading only as far as the last of them."""
    rows = np.asarray(rows, dtype=np.int64)
    try:
        x = _NpyMember(Path(path), "x.npy")
    except OnnxFeError:
        raise
    except Exception as e:
        raise OnnxFeError(f"cannot read {path}: {e}") from None
    if len(rows) and (rows.min() < 0 or rows.max() >= len(x)):
        raise OnnxFeError(f"{Path(path).name}: x has {len(x)} rows, no row {int(rows.max())}")
    order = np.argsort(rows, kind="stable")
    got = x.rows(rows[order])
    out = np.empty_like(got)
    out[order] = got
    return out


# an .npz's x is read whole only when its rows cannot be read one by one (Fortran order): up to this many bytes
NPZ_WHOLE_LIMIT = 4 << 30
NPZ_BLOCK = 16 << 20  # bytes of x inflated at a time while its chosen rows are picked out


class _NpyMember:
    """The header of an .npz's array member (shape, dtype), and :meth:`rows` to read some of its rows: the
    member is inflated a block at a time and only the chosen rows are kept, so memory is set by them, not by
    the array's declared size (a small compressed file can declare a huge array)."""

    def __init__(self, path: Path, member: str):
        import zipfile

        self.path, self.member = Path(path), member
        with zipfile.ZipFile(self.path) as zf, zf.open(member) as fh:
            shape, fortran, dtype = _header(fh)
        if dtype.hasobject:
            raise OnnxFeError(f"{self.path.name}: x must be numeric, not {dtype}")
        self.shape, self.fortran, self.dtype = tuple(int(d) for d in shape), bool(fortran), dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def rows(self, chosen: np.ndarray) -> np.ndarray:
        """Rows ``chosen`` (increasing) of the array, as one array."""
        import zipfile

        row_shape = self.shape[1:]
        row = int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize
        out = np.empty((len(chosen), *row_shape), dtype=self.dtype)
        if len(chosen) == 0:
            return out
        if self.fortran:  # rows are not contiguous: the whole array, within a stated limit
            total = row * len(self)
            if total > NPZ_WHOLE_LIMIT:
                raise OnnxFeError(
                    f"{self.path.name}: x is stored in Fortran order and takes {total / 2**30:.1f} GiB, more than the "
                    f"{NPZ_WHOLE_LIMIT / 2**30:.0f} GiB that are read whole; save it in C order "
                    "(np.ascontiguousarray) so that only the chosen images are read"
                )
            with np.load(self.path, allow_pickle=False) as z:
                return np.ascontiguousarray(z[self.member[: -len(".npy")]][chosen])
        per_block = max(1, NPZ_BLOCK // max(row, 1))
        with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as fh:
            _header(fh)  # the data follows it
            k, first = 0, 0  # next chosen row to fill; index of the first row of the next block
            last = int(chosen[-1])
            while first <= last:
                n = min(per_block, last + 1 - first)
                data = fh.read(n * row)
                if len(data) < n * row:
                    raise OnnxFeError(f"cannot read {self.path}: x ends before its row {first + len(data) // row}")
                block = np.frombuffer(data, dtype=self.dtype).reshape(n, *row_shape)
                while k < len(chosen) and chosen[k] < first + n:
                    out[k] = block[int(chosen[k]) - first]
                    k += 1
                first += n
        return out


def _header(fh):
    """(shape, fortran_order, dtype) of the .npy stream ``fh``, which is left at the first byte of the data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh)
    raise ValueError(f".npy format version {version[0]}.{version[1]} is not read here; save x with numpy's np.savez")


def npz_layout(ds: Dataset, input_shape: list, layout: str = "auto") -> str:
    """The layout of an .npz's x: the model's own (read from its input shape), else guessed from x's shape."""
    if layout != "auto":
        return layout
    found = model_layout(input_shape)
    if found is not None:
        return found
    c1, c3 = ds._x.shape[1], ds._x.shape[3]
    return "nhwc" if c3 in (1, 3) and c1 not in (1, 3) else "nchw"


def npz_preprocess(ds: Dataset, input_shape: list, layout: str = "auto") -> Preprocess:
    """How .npz samples are fed: as they are, in the model's layout (checked against the model's input)."""
    layout = npz_layout(ds, input_shape, layout)
    check_npz_shape(ds, input_shape, layout)
    _, a, b, c = ds._x.shape
    ch, h, w = (a, b, c) if layout == "nchw" else (c, a, b)
    return Preprocess(
        height=int(h),
        width=int(w),
        layout=layout,
        color="gray" if ch == 1 else "rgb",
        scale=1.0,
        mean=(0.0,),
        std=(1.0,),
    )


def check_npz_shape(ds: Dataset, input_shape: list, layout: str) -> None:
    if ds.kind != "npz":
        return
    got = tuple(ds._x.shape[1:])
    if len(got) != 3:
        raise OnnxFeError(f"{ds.source.name}: x must be 4-D (N, ...) in the model's input layout, got {ds._x.shape}")
    for g, m in zip(got, input_shape[1:]):
        if m is not None and g != m:
            dims = "(N, C, H, W)" if layout == "nchw" else "(N, H, W, C)"
            raise OnnxFeError(
                f"{ds.source.name}: x has sample shape {got} but the model input is "
                f"{tuple('?' if d is None else d for d in input_shape[1:])} ({layout}: x must be {dims}, "
                "the model's own layout)"
            )
