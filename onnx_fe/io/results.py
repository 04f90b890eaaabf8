"""Stage 6 — storage: the HDF5 results file and the tidy CSV.

Layout of ``results.h5`` (see docs/outputs.md):

/                      attrs: format, complete, n_done, params (JSON), model_sha256,
                              model_path, device, providers, versions (JSON)
/classes (K,)          class names (UTF-8 strings)
/labels (N,)           class index of each image
/image_ids (N,)        image path relative to the data root, or "index:i" for .npz
/layers/LLL/           one group per scored Conv layer, LLL = layer index (3 digits);
                       attrs: index, name, tap, chain, channels, height, width
    birth_points (N, C)     int32, 0 = no birth point
    mean_activation (N, C)  float32, spatial mean of the unit's map per image
    zero_fraction (N, C)    float32, fraction of exact zeros per image (APoZ's summand)
    hrank (N, C)            int32, matrix rank of the unit's map per image (HRank's summand; scores.baselines)
    activation_std (N, C)   float32, population standard deviation of the map's values per image
    weight_l1 (C,)          float64, L1 norm of each conv filter (NaN if not constant)
    n_images (K,)           images per class
    feature_entropy, birth_rate, ineffectiveness (K, C) float64
/activations/LLL (N, C, H, W)  float32, only with --keep-activations (chunked, gzip)

While a run is in progress the file is ``results.h5.partial``. The previous complete ``results.h5`` and
``scores.csv`` (of other inputs or parameters) stay in place until the new run is complete: then the new
``scores.csv`` is written beside it as ``scores.csv.partial``, its SHA-256 stored in the partial file
(``scores_csv_sha256``), and both are renamed over the old ones. A run that fails leaves the previous result
intact. Per-image datasets are created with a fill value that no real value takes (-1 birth points, NaN
means), so a row that a crash kept from reaching the disk is detected when an interrupted run resumes; a
``.partial`` that cannot be read is then discarded with a note, and the run starts afresh. A write that fails
(a full disk) removes the ``.partial`` (it cannot be trusted any more) and ends the run with one line.

Damage is detected. Every dataset the run writes (but the pre-compressed activations) carries HDF5's fletcher32
checksum, so a flipped bit in its chunks fails the read. And the file starts with a 512-byte user block (which
HDF5 skips) where the finished file's SHA-256 (of every byte after the user block) is written just before it
becomes ``results.h5`` (:func:`seal`). :func:`verify` checks it without parsing any HDF5 structure: a file that
was damaged or edited afterwards (even with h5py, which rewrites fletcher32) is never reused by ``score``, which
recomputes it, and ``report``, ``rank`` and ``ablate`` refuse it with one line. Files written before the digest
existed (no user block) are still read, but ``score`` recomputes them instead of reusing them.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import zlib
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from ..errors import OnnxFeError, ResultsError
from .lock import os_reason

FORMAT = "onnx-fe/1"
STR = h5py.string_dtype("utf-8")
# Fill values of the per-image datasets: never taken by a written value (birth points are >= 0, maps finite).
FILL = {"birth_points": -1, "mean_activation": np.nan, "zero_fraction": np.nan, "hrank": -1, "activation_std": np.nan}
PER_IMAGE = ("birth_points", "mean_activation", "zero_fraction", "hrank", "activation_std")
PER_IMAGE_DTYPES = {
    "birth_points": np.int32,
    "mean_activation": np.float32,
    "zero_fraction": np.float32,
    "hrank": np.int32,
    "activation_std": np.float32,
}
# per-image baselines whose class means are columns of scores.csv (results files of format_version 1 lack the last two)
CLASS_MEAN_COLUMNS = {
    "mean_activation": "mean_activation",
    "apoz": "zero_fraction",
    "hrank": "hrank",
    "activation_std": "activation_std",
}
# h5py reports a failed write as OSError or RuntimeError (e.g. "Unable to synchronously flush file").
H5_WRITE_ERRORS = (OSError, RuntimeError, ValueError, KeyError)


def _is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return "errno = 28" in text or "No space left on device" in text or "Disk quota exceeded" in text


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return " ".join(str(e).split()) or type(e).__name__


def write_error(path: Path, e: BaseException, removed: bool = False) -> OnnxFeError:
    """The one line for a failed write."""
    tail = "; the unfinished results were removed" if removed else ""
    if _is_disk_full(e):
        return OnnxFeError(f"no space left on device while writing {path}{tail} (free some space and run again)")
    return OnnxFeError(f"cannot write {path}: {_reason(e)}{tail}")


def discard(f, path: Path) -> None:
    """Close and remove a results file that cannot be trusted, whatever state HDF5 is in.

    HDF5 flushes its caches on close; on a full disk that flush fails again, the close fails, and the objects
    left open crash the interpreter at exit (a segfault). So the file's descriptor is first pointed at
    /dev/null: the flush then succeeds (writing nowhere), the close completes (HDF5 may need a second try after
    a failed flush), and the file is removed."""
    with _h5_dealloc_errors():
        if f is not None:
            try:
                fd = f.id.get_vfd_handle()
                null = os.open(os.devnull, os.O_RDWR)
                try:
                    os.dup2(null, fd)
                finally:
                    os.close(null)
            except Exception:
                try:
                    os.truncate(path, 0)  # at least give the flush room
                except OSError:
                    pass
            for _ in range(3):
                try:
                    f.close()
                    break
                except Exception:
                    pass
    try:
        os.unlink(path)
    except OSError:
        pass


def _forget(*errors) -> None:
    """Drop the frames an exception's traceback keeps alive: they hold h5py objects of a discarded file, which
    would otherwise be freed (and flushed) only at interpreter exit."""
    import traceback

    for e in errors:
        while e is not None:
            if e.__traceback__ is not None:
                traceback.clear_frames(e.__traceback__)
                e.__traceback__ = None
            e = e.__context__


@contextmanager
def _h5_dealloc_errors():
    """Collect the errors h5py can only report while freeing an object (a flush that failed on a full disk is
    printed as "Exception ignored in: h5py._objects.ObjectID.__dealloc__" with a traceback): they are kept in
    the list this yields instead of being printed; other unraisable errors go to the previous hook."""
    import sys

    seen: list[BaseException] = []
    previous = sys.unraisablehook

    def hook(u):
        if "h5py" in repr(getattr(u, "object", "")) or "h5py" in str(getattr(u, "err_msg", "")):
            seen.append(u.exc_value)
        else:
            previous(u)

    sys.unraisablehook = hook
    try:
        yield seen
    finally:
        sys.unraisablehook = previous


@contextmanager
def guarded(f, path: Path):
    """Writes to an open ``.partial``: a failure (full disk, I/O error) discards the file, then one line."""
    with _h5_dealloc_errors() as seen:
        try:
            yield f
            if seen:
                raise seen[0]
        except OnnxFeError:
            raise
        except H5_WRITE_ERRORS as e:
            err = write_error(path, e, removed=True)
            _forget(e, *seen)
            discard(f, path)
            raise err from None


# what h5py raises on a file whose bytes were damaged (a bad signature, an address past the end, bad UTF-8, ...)
H5_READ_ERRORS = (OSError, RuntimeError, KeyError, ValueError, IndexError, UnicodeDecodeError)


def damaged_message(path, why: str) -> str:
    return f"results file {path} is damaged ({why}); run `onnx-fe score` again to recompute it"


@contextmanager
def reading(path):
    """Read a results file: an error that h5py raises on damaged bytes becomes one line saying it is damaged."""
    try:
        yield
    except OnnxFeError:
        raise
    except H5_READ_ERRORS as e:
        raise ResultsError(damaged_message(path, _reason(e))) from None


USERBLOCK = 512  # bytes before the HDF5 data: the finished file's digest (see seal)
SEAL = b"onnx-fe results sha256 "
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(USERBLOCK)
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal(path: Path) -> None:
    """Write the SHA-256 of a closed results file's HDF5 bytes into its user block, and fsync."""
    with open(path, "r+b") as fh:
        if fh.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            raise ValueError(f"{path} has no user block for its digest")
    stamp = SEAL + _digest(path).encode() + b"\n"
    with open(path, "r+b") as fh:
        fh.write(stamp.ljust(USERBLOCK, b"\0"))
        fh.flush()
        os.fsync(fh.fileno())


def verify(path) -> str:
    """``"intact"`` (its digest matches), ``"unsealed"`` (written before digests existed), ``"damaged"``, or
    ``"foreign"`` (no HDF5 file where a results file has one: reading it says what it is)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(USERBLOCK + len(HDF5_SIGNATURE))
        if head.startswith(HDF5_SIGNATURE):
            return "unsealed"
        if not head.startswith(SEAL):
            return "damaged" if head[USERBLOCK:] == HDF5_SIGNATURE else "foreign"
        want = head[len(SEAL) :].split(b"\n", 1)[0].decode("ascii", "replace")
        return "intact" if _digest(path) == want else "damaged"
    except OSError:  # it cannot be read: reading it says why
        return "foreign"


DAMAGED = "its checksum does not match its contents: it was damaged or edited after it was written"


def check_intact(path) -> None:
    """Refuse (one line) a results file whose digest does not match; files without one pass."""
    if verify(path) == "damaged":
        raise ResultsError(damaged_message(path, DAMAGED))


def layer_key(index: int) -> str:
    return f"{index:03d}"


def create(path: Path, *, params: dict, meta: dict, classes, labels, ids, units, n_channels_hw, keep_activations):
    """A new ``.partial`` results file (replacing any file there); a failed write gives one line."""
    f = None
    keep: list = []  # every object stays referenced until the file is closed (see discard)
    with _h5_dealloc_errors() as seen:
        try:
            f = h5py.File(path, "w", userblock_size=USERBLOCK)
            _fill_new(f, params, meta, classes, labels, ids, units, n_channels_hw, keep_activations, keep)
            if seen:
                raise seen[0]
        except H5_WRITE_ERRORS as e:
            err = write_error(path, e)
            _forget(e, *seen)
            discard(f, path)
            raise err from None
    return f


def _fill_new(f, params, meta, classes, labels, ids, units, n_channels_hw, keep_activations, keep):
    f.attrs["format"] = FORMAT
    f.attrs["complete"] = False
    f.attrs["n_done"] = 0
    f.attrs["params"] = json.dumps(params, sort_keys=True)
    for k, v in meta.items():
        f.attrs[k] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v, sort_keys=True)
    n = len(ids)
    keep.append(f.create_dataset("classes", data=np.asarray(classes, dtype=object), dtype=STR))
    keep.append(f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64), fletcher32=True))
    keep.append(f.create_dataset("image_ids", data=np.asarray(ids, dtype=object), dtype=STR))
    g = f.create_group("layers")
    keep.append(g)
    for u in units:
        c, h, w = n_channels_hw[u.index]
        lg = g.create_group(layer_key(u.index))
        keep.append(lg)
        for k, v in (
            ("index", u.index),
            ("name", u.name),
            ("tap", u.tap),
            ("chain", u.chain_str),
            ("tap_op", u.tap_op),
            ("activated", bool(u.activated)),
            ("file_order", -1 if u.file_order is None else int(u.file_order)),
            ("channels", c),
            ("height", h),
            ("width", w),
        ):
            lg.attrs[k] = v
        for name in PER_IMAGE:
            if name == "hrank" and params.get("hrank", True) is False:  # score --no-hrank
                continue
            dtype = PER_IMAGE_DTYPES[name]
            keep.append(
                lg.create_dataset(
                    name, shape=(n, c), dtype=dtype, chunks=(min(n, 256), c), fillvalue=FILL[name], fletcher32=True
                )
            )
        if keep_activations:
            acts = f.require_group("activations")
            keep.append(acts)
            keep.append(
                acts.create_dataset(
                    layer_key(u.index),
                    shape=(n, c, h, w),
                    dtype=np.float32,
                    chunks=activation_chunks(c, h, w),
                    compression="gzip",
                    compression_opts=GZIP_LEVEL,
                    shuffle=True,
                    fillvalue=np.nan,
                )
            )
    f.flush()


GZIP_LEVEL = 4


def activation_chunks(c: int, h: int, w: int) -> tuple[int, int, int, int]:
    """HDF5 chunk shape of a layer's stored activations: one image, as many whole maps as fit in 1 MiB."""
    return (1, min(c, max(1, (1 << 18) // (h * w * 4))), h, w)


def encode_chunks(acts: np.ndarray, first: int) -> list[tuple[tuple[int, int, int, int], bytes]]:
    """Activations (n, C, H, W) of images first.. as HDF5 chunks already filtered (shuffle, then deflate level 4),
    ready for :func:`write_chunks`: the compression runs where the activations are computed, never in the writer.
    zlib releases the GIL, so threads compress in parallel."""
    n, c, h, w = acts.shape
    cc = activation_chunks(c, h, w)[1]
    out = []
    for i in range(n):
        for j in range(0, c, cc):
            block = np.zeros((cc, h, w), dtype=np.float32)  # the edge chunk is padded, as HDF5 stores it
            block[: min(cc, c - j)] = acts[i, j : j + cc]
            shuffled = block.view(np.uint8).reshape(-1, 4).T.tobytes()  # HDF5's shuffle filter for 4-byte items
            out.append(((first + i, j, 0, 0), zlib.compress(shuffled, GZIP_LEVEL)))
    return out


def write_chunks(dataset, chunks) -> None:
    """Write chunks made by :func:`encode_chunks` as they are (no compression here)."""
    for offset, data in chunks:
        dataset.id.write_direct_chunk(offset, data)


class PartialWriter:
    """Writes a run into its open ``.partial`` (``f``): batches of rows, the count of finished images, the
    per-class tables, then :meth:`commit`. Every dataset handle is kept open for the whole run: h5py would
    otherwise free (and flush) one after each write, and a flush that fails while an object is freed can only
    be printed, not raised, and leaves the file unclosable. Any failed write discards the ``.partial`` and
    raises one line (:func:`guarded`)."""

    def __init__(self, f, path: Path):
        self.f, self.path = f, Path(path)
        self._handles: dict[str, object] = {}

    def _get(self, name: str):
        h = self._handles.get(name)
        if h is None:
            h = self._handles[name] = self.f[name]
        return h

    @property
    def n_done(self) -> int:
        return int(self.f.attrs["n_done"])

    def write(self, index: int, start: int, stop: int, **arrays) -> None:
        """Rows [start, stop) of one layer: the ``PER_IMAGE`` arrays[, activations]."""
        key = layer_key(index)
        with guarded(self.f, self.path):
            for name, a in arrays.items():
                ds = self._get(f"activations/{key}" if name == "activations" else f"layers/{key}/{name}")
                ds[start:stop] = a

    def write_chunks(self, index: int, chunks) -> None:
        """One layer's activations as chunks the shard has already compressed (:func:`encode_chunks`)."""
        with guarded(self.f, self.path):
            write_chunks(self._get(f"activations/{layer_key(index)}"), chunks)

    def done(self, stop: int) -> None:
        """Images [0, stop) are written: record it, and flush."""
        with guarded(self.f, self.path):
            self.f.attrs["n_done"] = stop
            self.f.flush()

    def read(self, index: int, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) (default: all) of one layer's dataset ``name``."""
        ds = self._get(f"layers/{layer_key(index)}/{name}")
        return ds[()] if start == 0 and stop is None else ds[start:stop]

    def put_tables(self, index: int, tables: dict) -> None:
        """Per-layer tables computed at the end (n_images, feature_entropy, …, weight_l1), replacing old ones."""
        g = self._get(f"layers/{layer_key(index)}")
        with guarded(self.f, self.path):
            for name, arr in tables.items():
                full = f"layers/{layer_key(index)}/{name}"
                if name in g:
                    self._handles.pop(full, None)
                    del g[name]
                self._handles[full] = g.create_dataset(name, data=arr, fletcher32=np.ndim(arr) > 0)

    def set_attrs(self, **attrs) -> None:
        """Root attributes of the results file (e.g. timings), written and flushed."""
        with guarded(self.f, self.path):
            for k, v in attrs.items():
                self.f.attrs[k] = v
            self.f.flush()

    def complete(self) -> None:
        with guarded(self.f, self.path):
            self.f.attrs["complete"] = True
            self.f.flush()

    def commit(self, final: Path, csv_path: Path) -> None:
        """Replace the previous result by this one (see :func:`commit`)."""
        commit(self.f, self.path, final, csv_path)
        self._handles.clear()

    def close(self) -> None:
        """Close the file, keeping it for a later resume; a close that fails discards it (one line)."""
        if not self.f.id.valid:
            return
        with guarded(self.f, self.path):
            self.f.close()
        self._handles.clear()

    def abandon(self) -> None:
        """Close and remove the ``.partial`` without a word (its run is replaced by another)."""
        discard(self.f, self.path)
        self._handles.clear()


def _same_params(stored: str, params: dict) -> bool:
    return json.loads(stored) == json.loads(json.dumps(params, sort_keys=True))


def check_partial(f) -> str | None:
    """Why an open ``.partial`` cannot be resumed (damaged), or None when it is sound: its layout is whole,
    every image it counts as done was really written (no fill value left), and it can still be written to."""
    try:
        n = len(f["image_ids"])
        if len(f["labels"]) != n or "classes" not in f:
            return "its labels do not match its images"
        done = int(f.attrs["n_done"])
        if not 0 <= done <= n:
            return f"it counts {done} of {n} images as done"
        if "layers" not in f or len(f["layers"]) == 0:
            return "it holds no layer"
        for key in f["layers"]:
            g = f["layers"][key]
            for name in PER_IMAGE:
                a = g[name][:done]
                if len(g[name]) != n:
                    return f"layer {key} {name} has {len(g[name])} rows for {n} images"
                if (a == -1).any() if PER_IMAGE_DTYPES[name] == np.int32 else np.isnan(a).any():
                    return f"images it counts as done were never written (layer {key} {name})"
        for key in f.get("activations", {}):
            a = f["activations"][key]
            if done and np.isnan(a[max(0, done - 256) : done]).any():
                return f"images it counts as done were never written (activations {key})"
        f.attrs["n_done"] = done  # a write, so that a file that can no longer be written to fails here
        f.flush()
    except Exception as e:
        return _reason(e)
    return None


def resume_partial(path: Path, params: dict, log=None):
    """An interrupted run's ``.partial`` reopened for writing when it was made with the same parameters and is
    sound; else None. A damaged one is removed with a one-line note, one made with other parameters silently
    (with ``log``'s verbose line)."""
    log = log or (lambda msg: None)
    path = Path(path)
    if not path.exists():
        return None
    try:
        f = h5py.File(path, "r+")
    except Exception as e:
        log(f"note: {path} cannot be read ({_reason(e)}); starting afresh")
        discard(None, path)
        return None
    try:
        if f.attrs.get("format") != FORMAT:
            raise ValueError("it holds no onnx-fe results")
        if f.userblock_size < USERBLOCK:
            raise ValueError("it was written by an older onnx-fe, without room for a checksum")
        same = _same_params(f.attrs["params"], params)
    except Exception as e:
        log(f"note: {path} cannot be read ({_reason(e)}); starting afresh")
        discard(f, path)
        return None
    if not same:
        try:
            what = describe_change(json.loads(f.attrs["params"]), params) or "inputs or parameters"
        except Exception:
            what = "inputs or parameters"
        log(f"note: the unfinished run in {path} was made with other {what}; starting afresh")
        discard(f, path)
        return None
    why = check_partial(f)
    if why is not None:
        log(f"note: {path} is damaged ({why}); starting afresh")
        discard(f, path)
        return None
    return f


def open_partial(path: Path, params: dict):
    """Reopen an interrupted run's file if it was made with the same parameters and is sound."""
    return resume_partial(path, params)


def is_complete_match(path: Path, params: dict, log=None) -> bool:
    """Whether ``path`` holds finished results of ``params`` that can be reused: complete, made with the same
    parameters, and intact (its digest matches). A damaged file, or one without a digest, is not reused: ``log``
    gets one line saying so."""
    if not Path(path).exists():
        return False
    state = verify(path)
    if state != "intact":
        if log is not None and state in ("damaged", "unsealed"):
            log(
                f"note: {path} is damaged ({DAMAGED}); recomputing it"
                if state == "damaged"
                else f"note: {path} has no checksum (written by an older onnx-fe); recomputing it"
            )
        return False
    try:
        with h5py.File(path, "r") as f:
            return (
                bool(f.attrs.get("complete"))
                and f.attrs.get("format") == FORMAT
                and json.loads(f.attrs["params"]) == json.loads(json.dumps(params, sort_keys=True))
            )
    except Exception:
        return False


def _num(v) -> str:
    """A float as in the CSV: repr (round-trips exactly), never -0.0."""
    return repr(float(v) + 0.0)  # -0.0 + 0.0 == +0.0


def _nums(a) -> list[str]:
    """:func:`_num` of every value of a 1-D array."""
    return [repr(v + 0.0) for v in np.asarray(a, dtype=np.float64).tolist()]


def _cells(a) -> list[str]:
    """:func:`_cell` of every value of a 1-D array."""
    a = np.asarray(a)
    if a.dtype.kind in "iu":
        return [str(v) for v in a.tolist()]
    return _nums(a)


class _HashingWriter:
    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def write(self, text: str):
        self.h.update(text.encode())
        return self.f.write(text)


def write_csv(h5, csv_path: Path) -> str:
    """Write the tidy per layer × unit × class table atomically from a complete results file (a path or an
    open h5py File); returns the SHA-256 of what was written. A failed write leaves no half file, one line."""
    csv_path = Path(csv_path)
    tmp = csv_path.with_name(csv_path.name + ".partial")
    try:
        digest = _write_csv_to(h5, tmp)
        os.replace(tmp, csv_path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise write_error(csv_path, e) from None
    return digest


def _write_csv_to(h5, tmp: Path) -> str:
    own = not isinstance(h5, h5py.File)
    f = h5py.File(h5, "r") if own else h5
    try:
        with open(tmp, "w", newline="") as raw:
            out = _HashingWriter(raw)
            _csv_rows(f, csv.writer(out))
            raw.flush()
            os.fsync(raw.fileno())
        return out.h.hexdigest()
    finally:
        if own:
            f.close()


def _class_mean(per_image: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean over the images ``rows`` (a boolean mask) of per-image values (N, C), in float64; NaN with none."""
    if not rows.any():
        return np.full(per_image.shape[1], np.nan)
    return per_image[rows].astype(np.float64).mean(axis=0)


def _csv_rows(f, w) -> None:
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in f["classes"][()]]
    labels = f["labels"][()]
    w.writerow(
        [
            "layer",
            "layer_index",
            "unit",
            "class",
            "n_images",
            "feature_entropy",
            "birth_rate",
            "ineffectiveness",
            "mean_activation",
            "apoz",
            "weight_l1",
            "hrank",
            "activation_std",
            *STAT_COLUMNS,
        ]
    )
    for key in sorted(f["layers"]):
        g = f["layers"][key]
        name, idx = g.attrs["name"], int(g.attrs["index"])
        fe, br, ie = g["feature_entropy"][()], g["birth_rate"][()], g["ineffectiveness"][()]
        n_img = g["n_images"][()]
        per_image = {col: g[d][()] if d in g else None for col, d in CLASS_MEAN_COLUMNS.items()}
        l1 = g["weight_l1"][()]
        extra = [g[c][()] if c in g else None for c in STAT_COLUMNS]
        n_units = fe.shape[1]
        blank = [""] * n_units
        l1_text = _nums(l1)
        for k, cname in enumerate(classes):
            rows = labels == k
            means = {col: None if a is None else _class_mean(a, rows) for col, a in per_image.items()}
            ma_k, zf_k, hr_k, sd_k = (means[c] for c in ("mean_activation", "apoz", "hrank", "activation_std"))
            # a column at a time, each value as _num / _cell writes it (a float array's tolist() gives the same
            # Python floats as float() of its elements)
            w.writerows(
                zip(
                    [name] * n_units,
                    [idx] * n_units,
                    range(n_units),
                    [cname] * n_units,
                    [int(n_img[k])] * n_units,
                    _nums(fe[k]),
                    _nums(br[k]),
                    _nums(ie[k]),
                    _nums(ma_k),
                    _nums(zf_k),
                    l1_text,
                    blank if hr_k is None else _nums(hr_k),
                    blank if sd_k is None else _nums(sd_k),
                    *(blank if a is None else _cells(a[k]) for a in extra),
                )
            )


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(f, partial: Path, final: Path, csv_path: Path) -> None:
    """Make a complete ``.partial`` (open as ``f``; closed here) the result, replacing the previous one only now.

    The new scores.csv is written first (``scores.csv.partial``) and its SHA-256 stored in the results file;
    then results.h5 and scores.csv are renamed over the old ones. A crash between the two renames leaves a
    results.h5 whose stored digest does not match scores.csv, which :func:`ensure_csv` repairs on the next run.
    A failed write discards the ``.partial`` and leaves the previous result as it was, with one line."""
    partial, final, csv_path = Path(partial), Path(final), Path(csv_path)
    tmp_csv = csv_path.with_name(csv_path.name + ".partial")
    try:
        digest = _write_csv_to(f, tmp_csv)
    except OSError as e:  # the results are complete: keep them for the next run, which only has to commit
        try:
            os.unlink(tmp_csv)
        except OSError:
            pass
        with guarded(f, partial):
            f.close()
        what = "no space left on device" if _is_disk_full(e) else _reason(e)
        raise OnnxFeError(
            f"cannot write {csv_path}: {what}; the finished results are kept in {partial.name}, and running the "
            "same command again (with space freed) completes the run without recomputing"
        ) from None
    try:
        with _h5_dealloc_errors() as seen:
            f.attrs["scores_csv_sha256"] = digest
            f.flush()
            f.close()
            if seen:
                raise seen[0]
        seal(partial)
    except H5_WRITE_ERRORS as e:
        for p in (tmp_csv,):
            try:
                os.unlink(p)
            except OSError:
                pass
        discard(f, partial)
        raise write_error(partial, e, removed=True) from None
    try:
        os.replace(partial, final)
        os.replace(tmp_csv, csv_path)
        _fsync_dir(final.parent)
    except OSError as e:
        raise OnnxFeError(f"cannot move the finished results into place in {final.parent}: {os_reason(e)}") from None


def csv_matches(final: Path, csv_path: Path) -> bool:
    """Whether scores.csv is the one written with ``final`` (its SHA-256 is the one stored there)."""
    csv_path = Path(csv_path)
    try:
        with h5py.File(final, "r") as f:
            want = f.attrs.get("scores_csv_sha256")
        if want is None or not csv_path.exists():
            return False
        h = hashlib.sha256()
        with open(csv_path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest() == want
    except Exception:
        return False


def ensure_csv(final: Path, csv_path: Path) -> bool:
    """Make sure scores.csv is the one of ``final`` (rewriting it when it is missing or from another run);
    returns True when it was rewritten."""
    if csv_matches(final, csv_path):
        return False
    write_csv(final, csv_path)
    return True


def stored_params(path: Path) -> dict | None:
    """The parameters a complete results file was made with (None when there is none, it is unreadable or
    damaged)."""
    if not Path(path).exists() or verify(path) == "damaged":
        return None
    try:
        with h5py.File(path, "r") as f:
            if not bool(f.attrs.get("complete")) or f.attrs.get("format") != FORMAT:
                return None
            return json.loads(f.attrs["params"])
    except Exception:
        return None


# What each parameter is called in a note about why a previous result is not reused.
PARAM_NAMES = {
    "format_version": "results format (an older onnx-fe)",
    "data_sha256": "data contents",
    "data_ids_sha256": "data files",
    "model_sha256": "model file contents",
}


def describe_change(old: dict | None, params: dict) -> str | None:
    """What differs between a previous complete result's parameters and this run's, in words (None if same)."""
    if old is None:
        return None
    new = json.loads(json.dumps(params, sort_keys=True))
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not keys:
        return None
    return ", ".join(PARAM_NAMES.get(k, k.replace("_", " ")) for k in keys)


# per unit × class statistics (onnx_fe.scores.statistics), stored per layer as (K, C) datasets
STAT_COLUMNS = (
    "n_births",
    "fe_ci_low",
    "fe_ci_high",
    "fe_rarefied",
    "fe_rarefied_ci_low",
    "fe_rarefied_ci_high",
    "birth_rate_ci_low",
    "birth_rate_ci_high",
)


def _cell(v) -> str:
    if isinstance(v, (np.integer, int)):
        return str(int(v))
    return repr(float(v) + 0.0)  # + 0.0 turns -0.0 into 0.0


def read_layer_scores(h5_path: Path) -> list[dict]:
    """Each layer's attributes and (K, C) statistics from a complete results file."""
    out = []
    with h5py.File(h5_path, "r") as f:
        labels, n_classes = f["labels"][()], len(f["classes"])
        for key in sorted(f["layers"]):
            g = f["layers"][key]
            out.append(
                {
                    "layer": str(g.attrs["name"]),
                    "layer_index": int(g.attrs["index"]),
                    "height": int(g.attrs["height"]),
                    "width": int(g.attrs["width"]),
                    "tap": _tap_kind(g.attrs),
                    "activated": bool(g.attrs.get("activated", False)),
                    "n_units": int(g.attrs["channels"]),
                    "n_images": g["n_images"][()],
                    **{s: g[s][()] for s in ("feature_entropy", "birth_rate", "fe_rarefied", "n_births") if s in g},
                    # (K, C) class means of the per-image mean activation (NaN for a class without images)
                    "mean_activation": np.stack(
                        [_class_mean(g["mean_activation"][()], labels == k) for k in range(n_classes)]
                    ).reshape(n_classes, int(g.attrs["channels"])),
                }
            )
    return out


def write_table_csv(path: Path, rows: list[dict]) -> None:
    """Dict rows (same keys) as a CSV, atomically; floats as repr, -0.0 as 0.0."""
    from .tables import write_rows_csv

    cols = list(dict.fromkeys(k for r in rows for k in r))
    write_rows_csv(path, cols, [{k: (v + 0.0 if isinstance(v, float) else v) for k, v in r.items()} for r in rows])


def layer_summary(h5_path: Path) -> list[dict]:
    """Per-layer means over units and classes (the paper's Fig. 5A as a table)."""
    rows = []
    with h5py.File(h5_path, "r") as f:
        for key in sorted(f["layers"]):
            g = f["layers"][key]
            fe, br = g["feature_entropy"][()], g["birth_rate"][()]
            rows.append(
                {
                    "layer_index": int(g.attrs["index"]),
                    "layer": str(g.attrs["name"]),
                    "chain": str(g.attrs["chain"]),
                    "tap": _tap_kind(g.attrs),
                    "units": int(g.attrs["channels"]),
                    "size": f"{int(g.attrs['height'])}×{int(g.attrs['width'])}",
                    "feature_entropy": float(np.nanmean(fe)),
                    "birth_rate": float(np.nanmean(br)),
                }
            )
    return rows


def _tap_kind(attrs) -> str:
    """Where a stored layer's map was taken (files written before the tap was stored say "?")."""
    if "tap_op" not in attrs:
        return "?"
    return f"{'post' if bool(attrs['activated']) else 'pre'}-activation ({attrs['tap_op']})"
