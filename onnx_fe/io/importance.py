"""Storage of ``onnx-fe importance``: importance.h5 (per image × unit), importance.csv and importance.json.

Layout of ``importance.h5`` (see docs/outputs.md):

/                      attrs: format, complete, n_done, params (JSON: what decides the per-image values),
                              model_sha256, model_path, config (JSON), fingerprint (JSON), output_kind
                              ("classifier" or "output"), output ("logits", "probabilities" or ""), device, versions
/classes (K,), /labels (N,), /image_ids (N,)   as in results.h5
/unmasked_loss (N,)     float64, cross-entropy of the plain model per image (NaN when not a classifier)
/unmasked_correct (N,)  int8, 1 when the plain model's top-1 is the label (-1 when not a classifier)
/layers/LLL/           one group per layer, LLL = layer index (3 digits); attrs: index, name, tap, channels
    units (U,)             int64, the measured units of the layer (all, or the --units-per-layer sample)
    delta_loss (N, U)      float64, masked − unmasked cross-entropy per image (NaN when not a classifier)
    delta_top1 (N, U)      int8, unmasked − masked top-1 hit per image: -1, 0 or 1 (0 when not a classifier)
    delta_output (N, U)    float64, ||out_masked − out|| / ||out|| per image (L2 over the flattened first output)

While a run is in progress the file is ``importance.h5.partial``; ``n_done`` counts the images written (in order),
and the fill values (NaN, -128) are never written values, so a resumed run can check that every image it counts as
done was really written. At the end the table and the JSON side file are written as ``.partial`` files and the three
are moved into place: the old importance.csv is removed first, then importance.h5, importance.json and
importance.csv are renamed in that order. So an importance.csv that exists always belongs to the importance.json
beside it, and a crash in between leaves a complete importance.h5 from which the next run rewrites both.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import OnnxFeError
from .lock import os_reason
from .results import STR, PartialWriter, _fsync_dir, _reason, discard, guarded, layer_key, write_error

FORMAT = "onnx-fe-importance/1"
TOP1_FILL = -128
COLUMNS = (
    "layer",
    "layer_index",
    "unit",
    "n_images",
    "delta_loss",
    "delta_loss_ci_low",
    "delta_loss_ci_high",
    "delta_top1",
    "delta_top1_ci_low",
    "delta_top1_ci_high",
    "delta_output",
)
PER_IMAGE = {"delta_loss": np.float64, "delta_top1": np.int8, "delta_output": np.float64}
FILL = {"delta_loss": np.nan, "delta_top1": TOP1_FILL, "delta_output": np.nan}


def create(path: Path, *, params: dict, meta: dict, classes, labels, ids, layers) -> h5py.File:
    """A new ``importance.h5.partial`` (replacing any file there). ``layers``: (unit, measured unit indices)."""
    f = None
    try:
        f = h5py.File(path, "w")
        f.attrs["format"] = FORMAT
        f.attrs["complete"] = False
        f.attrs["n_done"] = 0
        f.attrs["params"] = json.dumps(params, sort_keys=True)
        for k, v in meta.items():
            f.attrs[k] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v, sort_keys=True)
        n = len(ids)
        f.create_dataset("classes", data=np.asarray(classes, dtype=object), dtype=STR)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        f.create_dataset("image_ids", data=np.asarray(ids, dtype=object), dtype=STR)
        f.create_dataset("unmasked_loss", shape=(n,), dtype=np.float64, fillvalue=np.nan)
        f.create_dataset("unmasked_correct", shape=(n,), dtype=np.int8, fillvalue=TOP1_FILL)
        g = f.create_group("layers")
        for u, chosen in layers:
            lg = g.create_group(layer_key(u.index))
            for k, v in (("index", u.index), ("name", u.name), ("tap", u.tap), ("channels", int(u.channels))):
                lg.attrs[k] = v
            lg.create_dataset("units", data=np.asarray(chosen, dtype=np.int64))
            m = max(1, len(chosen))
            for name, dtype in PER_IMAGE.items():
                lg.create_dataset(
                    name, shape=(n, len(chosen)), dtype=dtype, chunks=(min(max(n, 1), 256), m), fillvalue=FILL[name]
                )
        f.flush()
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        err = write_error(path, e)
        discard(f, path)
        raise err from None
    return f


class ImportanceWriter(PartialWriter):
    """Writes shards into an open ``importance.h5.partial`` (one line and the file discarded on a failed write)."""

    def write_root(self, start: int, stop: int, **arrays) -> None:
        with guarded(self.f, self.path):
            for name, a in arrays.items():
                self._get(name)[start:stop] = a


def check_partial(f) -> str | None:
    """Why an open ``.partial`` cannot be resumed, or None when it is sound (see :func:`resume`)."""
    try:
        n = len(f["image_ids"])
        if len(f["labels"]) != n:
            return "its labels do not match its images"
        done = int(f.attrs["n_done"])
        if not 0 <= done <= n:
            return f"it counts {done} of {n} images as done"
        if (f["unmasked_correct"][:done] == TOP1_FILL).any():
            return "images it counts as done were never written (unmasked)"
        for key in f["layers"]:
            g = f["layers"][key]
            for name in PER_IMAGE:
                a = g[name][:done]
                if len(g[name]) != n:
                    return f"layer {key} {name} has {len(g[name])} rows for {n} images"
                bad = (a == TOP1_FILL) if name == "delta_top1" else np.isnan(a)
                if name == "delta_loss" and f.attrs.get("output_kind") != "classifier":
                    continue  # NaN by design
                if bad.any():
                    return f"images it counts as done were never written (layer {key} {name})"
        f.attrs["n_done"] = done  # a write: a file that can no longer be written to fails here
        f.flush()
    except Exception as e:
        return _reason(e)
    return None


def same_params(stored, params: dict) -> bool:
    """Whether stored parameters (JSON text or a dict) are ``params``."""
    old = json.loads(stored) if isinstance(stored, str) else stored
    return old == json.loads(json.dumps(params, sort_keys=True))


def resume(path: Path, params: dict, log) -> h5py.File | None:
    """An interrupted run's ``.partial`` reopened for writing when it was made with the same parameters and is
    sound; else None (removed, with a note when it was damaged or made with other parameters)."""
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
            raise ValueError("it holds no onnx-fe importance")
        same = same_params(f.attrs["params"], params)
    except Exception as e:
        log(f"note: {path} cannot be read ({_reason(e)}); starting afresh")
        discard(f, path)
        return None
    if not same:
        log(
            f"note: the unfinished run in {path} was made with other {describe(f.attrs['params'], params)}; "
            "starting afresh"
        )
        discard(f, path)
        return None
    why = check_partial(f)
    if why is not None:
        log(f"note: {path} is damaged ({why}); starting afresh")
        discard(f, path)
        return None
    return f


NAMES = {"model_sha256": "model file contents", "data_sha256": "data contents", "format_version": "format"}


def describe(stored, params: dict) -> str:
    """What differs between stored parameters (JSON text or dict) and these, in words."""
    try:
        old = json.loads(stored) if isinstance(stored, str) else dict(stored)
    except Exception:
        return "inputs or parameters"
    new = json.loads(json.dumps(params, sort_keys=True))
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(NAMES.get(k, k.replace("_", " ")) for k in keys) or "inputs or parameters"


def stored_params(path: Path) -> dict | None:
    """The parameters of a complete importance.h5 (None when there is none or it cannot be read)."""
    try:
        with h5py.File(path, "r") as f:
            if not bool(f.attrs.get("complete")) or f.attrs.get("format") != FORMAT:
                return None
            return json.loads(f.attrs["params"])
    except Exception:
        return None


def read_values(path_or_file) -> dict:
    """Everything the table is computed from: labels, unmasked values and, per layer, the per-image arrays."""
    own = not isinstance(path_or_file, h5py.File)
    f = h5py.File(path_or_file, "r") if own else path_or_file
    try:
        out = {
            "n_images": len(f["image_ids"]),
            "output_kind": str(f.attrs.get("output_kind", "")),
            "unmasked_loss": f["unmasked_loss"][()],
            "unmasked_correct": f["unmasked_correct"][()],
            "layers": [],
        }
        for key in sorted(f["layers"]):
            g = f["layers"][key]
            out["layers"].append(
                {
                    "index": int(g.attrs["index"]),
                    "name": str(g.attrs["name"]),
                    "units": g["units"][()],
                    **{name: g[name][()] for name in PER_IMAGE},
                }
            )
        return out
    finally:
        if own:
            f.close()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cell(v) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    return "" if np.isnan(v) else repr(v + 0.0)


def _write_table(tmp: Path, rows: list[dict]) -> str:
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([_cell(r.get(c)) if c not in ("layer",) else r[c] for c in COLUMNS])
        fh.flush()
        os.fsync(fh.fileno())
    return _sha256(tmp)


def _write_json(tmp: Path, meta: dict) -> None:
    with open(tmp, "w") as fh:
        fh.write(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _unlink(*paths) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except OSError:
            pass


def write_outputs(out: Path, rows: list[dict], meta: dict, f=None, partial: Path | None = None) -> None:
    """Write importance.csv and importance.json (``meta`` gets the table's SHA-256) and, when the finished
    ``.partial`` (open as ``f``) is given, move it into place as importance.h5 first (see the module docstring)."""
    out = Path(out)
    csv_path, json_path, final = out / "importance.csv", out / "importance.json", out / "importance.h5"
    tmp_csv, tmp_json = out / "importance.csv.partial", out / "importance.json.partial"
    try:
        meta = {**meta, "csv_sha256": _write_table(tmp_csv, rows)}
        _write_json(tmp_json, meta)
    except OSError as e:
        _unlink(tmp_csv, tmp_json)
        if f is not None:
            with guarded(f, partial):
                f.close()
            raise OnnxFeError(
                f"cannot write {csv_path}: {os_reason(e)}; the finished values are kept in {partial.name}, and "
                "running the same command again (with space freed) completes the run without recomputing"
            ) from None
        raise write_error(csv_path, e) from None
    if f is not None:
        try:
            with guarded(f, partial):
                f.flush()
                f.close()
            fd = os.open(partial, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            _unlink(tmp_csv, tmp_json)
            raise
    try:
        _unlink(csv_path)  # from here on no importance.csv exists that is not the new one
        if f is not None:
            os.replace(partial, final)
        os.replace(tmp_json, json_path)
        os.replace(tmp_csv, csv_path)
        _fsync_dir(out)
    except OSError as e:
        raise OnnxFeError(f"cannot move the finished importance into place in {out}: {os_reason(e)}") from None


def outputs_match(out: Path, meta: dict) -> bool:
    """Whether importance.csv and importance.json in ``out`` are the ones ``meta`` describes (same parameters and
    statistics; the table's stored SHA-256 matches the file)."""
    out = Path(out)
    try:
        stored = json.loads((out / "importance.json").read_text())
        same = all(stored.get(k) == json.loads(json.dumps(meta[k], sort_keys=True)) for k in ("params", "statistics"))
        return same and stored.get("csv_sha256") == _sha256(out / "importance.csv")
    except (OSError, ValueError, KeyError, AttributeError):
        return False


def read_meta(out: Path) -> dict:
    try:
        return json.loads((Path(out) / "importance.json").read_text())
    except (OSError, ValueError):
        return {}
