"""``onnx-fe validate``: how well each indicator of a scoring run predicts the units' measured importance.

Reads one finished ``score`` run (results.h5, one method) and one ``importance`` run (importance.csv, with the
model's SHA-256 in importance.json or importance.h5) of the same model, joins their units on (layer_index, unit), and
writes ``validity.csv`` (the statistics of docs/preregistration_validity.md, computed by
:mod:`onnx_fe.scores.validity`), ``validity_bootstrap.csv`` (the bootstrap replicates of the pooled rows, resample b
of every row drawn from the same units) and ``validity.json`` (what was read, with digests, and the notes) into the
output directory (default: ``RESULTS/validity``, where ``onnx-fe report RESULTS`` finds it).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OnnxFeError, OptionError, ResultsError
from ..io.tables import write_rows_csv
from ..scores import validity as V
from ..scores.ranking import _class_means, _open_results, reference_scores

INDICATORS = (
    "feature_entropy",
    "fe_rarefied",
    "fe_reference",
    "ineffectiveness",
    "birth_rate",
    "mean_activation",
    "apoz",
    "weight_l1",
    "hrank",
    "activation_std",
    "random",
)
PARTIAL = "fe|birth_rate+mean_activation"
INCREMENT = "fe_increment"
PARTIAL_COVARIATES = ("birth_rate", "mean_activation")
BASE_FEATURES = ("birth_rate", "mean_activation", "apoz", "hrank")
# sign of ρ(indicator, delta_loss) when the indicator finds the important units (0: no expectation)
EXPECTED_SIGN = {
    "feature_entropy": -1,
    "fe_rarefied": -1,
    "fe_reference": -1,
    "ineffectiveness": -1,
    "apoz": -1,
    "mean_activation": 1,
    "weight_l1": 1,
    "hrank": 1,
    "activation_std": 1,
    "birth_rate": 0,
    "random": 0,
    PARTIAL: -1,
    INCREMENT: 1,
}
COLUMNS = ["indicator", "layer_index", "spearman", "ci_low", "ci_high", "n_units", "expected_sign", "target", "method"]
FORMAT = "onnx-fe-validity/1"
RANDOM_SEED = 0  # the draw of `rank --by random` that the indicator `random` is


@dataclass
class ValidityResult:
    """What ``validate`` computed and wrote."""

    rows: list[dict]  # validity.csv's rows (NaN where there is no value)
    path: Path | None  # validity.csv (None when nothing was written)
    target: str  # delta_loss or delta_output
    method: str
    n_units: int  # units in both runs
    notes: list[str] = field(default_factory=list)
    replicates: dict = field(default_factory=dict)  # pooled row's indicator -> (resamples,) bootstrap replicates

    @property
    def directory(self) -> Path | None:
        return self.path.parent if self.path is not None else None

    def pooled(self) -> list[dict]:
        """The rows of layer_index ``all``."""
        return [r for r in self.rows if r["layer_index"] == "all"]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=COLUMNS)


# --------------------------------------------------------------------------- reading


@dataclass
class _Layer:
    index: int
    name: str
    values: dict  # indicator -> (C,) unit values


def read_indicators(results) -> tuple[Path, dict, list[_Layer]]:
    """Each scored layer's unit values of every indicator the results hold (class means as ``rank`` takes them),
    with the run's attributes: (results.h5, {model_sha256, method, scores_sha256}, layers)."""
    path, f = _open_results(results)
    with f:
        labels = f["labels"][()]
        keep = list(range(len(f["classes"])))
        try:
            params = json.loads(f.attrs["params"])
        except Exception:
            params = {}
        meta = {
            "model_sha256": str(f.attrs.get("model_sha256", "")),
            "method": str(params.get("method", "")) or "?",
            "scores_sha256": str(f.attrs.get("scores_csv_sha256", "")),
        }
        layers = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nanmean over an all-NaN column
            for key in sorted(f["layers"]):
                g = f["layers"][key]
                idx, c = int(g.attrs["index"]), int(g.attrs["channels"])
                ie = g["ineffectiveness"][()][keep].astype(np.float64)
                v = {
                    "feature_entropy": np.nanmean(g["feature_entropy"][()][keep].astype(np.float64), axis=0),
                    "fe_reference": np.nanmean(reference_scores(ie), axis=0),
                    "ineffectiveness": np.nanmean(ie, axis=0),
                    "birth_rate": np.nanmean(g["birth_rate"][()][keep].astype(np.float64), axis=0),
                    "mean_activation": _class_means(g["mean_activation"][()], labels, keep),
                    "apoz": _class_means(g["zero_fraction"][()], labels, keep),
                    "weight_l1": g["weight_l1"][()].astype(np.float64),
                    "random": np.random.default_rng([RANDOM_SEED, idx]).random(c),
                }
                for name in ("fe_rarefied", "hrank", "activation_std"):
                    d = g.get(name)
                    if d is None:
                        continue
                    a = d[()].astype(np.float64)
                    if a.shape == (len(labels), c):  # per image
                        v[name] = _class_means(a, labels, keep)
                    elif a.shape == (len(keep), c):  # per class
                        v[name] = np.nanmean(a[keep], axis=0)
                layers.append(_Layer(idx, str(g.attrs["name"]), v))
    return path, meta, layers


def importance_file(path) -> Path:
    """The importance.csv of an importance directory (or the file itself), refusing unfinished runs."""
    p = Path(path)
    if not p.exists():
        raise OnnxFeError(f"importance not found: {p}")
    if p.is_dir():
        f = p / "importance.csv"
        if not f.exists():
            if any(q.name.endswith(".partial") for q in p.iterdir()):
                raise OnnxFeError(
                    f"the importance run in {p} did not finish; run `onnx-fe importance` again to complete it"
                )
            raise OnnxFeError(f"no importance.csv in {p} (run `onnx-fe importance` first)")
        return f
    return p


def importance_sha256(csv_path: Path) -> str:
    """The model digest an importance run stored (importance.json, else importance.h5's attribute)."""
    d = csv_path.parent
    j = d / "importance.json"
    if j.exists():
        try:
            sha = json.loads(j.read_text()).get("model_sha256")
        except (OSError, ValueError, AttributeError) as e:
            raise OnnxFeError(f"cannot read {j}: {e}") from None
        if sha:
            return str(sha)
    h = d / "importance.h5"
    if h.exists():
        try:
            import h5py

            with h5py.File(h, "r") as f:
                sha = f.attrs.get("model_sha256")
        except Exception as e:
            raise OnnxFeError(f"cannot read {h}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        if sha:
            return sha.decode() if isinstance(sha, bytes) else str(sha)
    raise OnnxFeError(
        f"{d} holds no importance.json or importance.h5 with the model's SHA-256, so it cannot be checked to be of "
        "the scored model (run `onnx-fe importance` again)"
    )


IMPORTANCE_NEEDS = ("layer", "layer_index", "unit", "delta_loss", "delta_output")


def _float(v: str) -> float:
    v = (v or "").strip()
    return float(v) if v else math.nan


def read_importance(csv_path: Path) -> dict:
    """{(layer_index, unit): (layer name, delta_loss, delta_output)} from importance.csv (empty cells are NaN)."""
    try:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in IMPORTANCE_NEEDS if c not in (reader.fieldnames or [])]
            if missing:
                raise OnnxFeError(
                    f"{csv_path} is not an importance table written by `onnx-fe importance`: it has no "
                    f"{', '.join(missing)} column"
                )
            out = {}
            for r in reader:
                key = (int(r["layer_index"]), int(r["unit"]))
                if key in out:
                    raise OnnxFeError(f"{csv_path}: layer {key[0]} unit {key[1]} appears twice")
                out[key] = (r["layer"], _float(r["delta_loss"]), _float(r["delta_output"]))
    except OnnxFeError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise OnnxFeError(f"cannot read {csv_path}: {getattr(e, 'strerror', None) or e}") from None
    except (ValueError, TypeError) as e:
        raise OnnxFeError(f"{csv_path}: not a valid importance table ({e})") from None
    if not out:
        raise OnnxFeError(f"{csv_path} lists no unit")
    return out


def _sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


# --------------------------------------------------------------------------- options


def _check_options(resamples, seed, ci_level) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise OptionError(f"--resamples {resamples!r}: give a positive integer")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise OptionError(f"--seed {seed!r}: give a non-negative integer")
    if isinstance(ci_level, bool) or not isinstance(ci_level, (int, float)) or not 0 < ci_level < 1:
        raise OptionError(f"--ci-level {ci_level!r}: give a number between 0 and 1 (e.g. 0.95)")


# --------------------------------------------------------------------------- the run


def _row(indicator, layer_index, est: V.Estimate, target, method) -> dict:
    return {
        "indicator": indicator,
        "layer_index": layer_index,
        "spearman": est.value,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "n_units": est.n_units,
        "expected_sign": EXPECTED_SIGN[indicator],
        "target": target,
        "method": method,
    }


def compute(layers: list[_Layer], targets: list[np.ndarray], *, target, method, resamples, seed, ci_level):
    """(rows, replicates of the pooled rows, notes) from the joined layers (each layer's values restricted to the
    units with a target entry) and their targets."""
    notes = []
    present = [k for k in INDICATORS if all(k in lay.values for lay in layers)]
    absent = [k for k in INDICATORS if k not in present]
    if absent:
        notes.append(
            f"not in these results, so not validated: {', '.join(absent)} (scored by an older onnx-fe, or hrank left "
            "out with score --no-hrank: score again to include them)"
        )
    idx = V.resample_indices([len(t) for t in targets], resamples, seed)
    rows, reps = [], {}
    for k in present:
        e = V.correlation([lay.values[k] for lay in layers], targets, idx, ci_level)
        rows += [_row(k, lay.index, le, target, method) for lay, le in zip(layers, e.layers)]
        rows.append(_row(k, "all", e.pooled, target, method))
        reps[k] = e.pooled.replicates
        if not any(np.isfinite(lay.values[k]).any() for lay in layers):
            notes.append(f"{k}: no unit has a value in these results (its rows are empty)")
    e = V.partial_correlation(
        [lay.values["feature_entropy"] for lay in layers],
        targets,
        [[lay.values[c] for c in PARTIAL_COVARIATES] for lay in layers],
        idx,
        ci_level,
    )
    rows += [_row(PARTIAL, lay.index, le, target, method) for lay, le in zip(layers, e.layers)]
    rows.append(_row(PARTIAL, "all", e.pooled, target, method))
    reps[PARTIAL] = e.pooled.replicates
    base = [b for b in BASE_FEATURES if b in present]
    if base != list(BASE_FEATURES):
        notes.append(
            f"fe_increment: base features {', '.join(base)} "
            f"({', '.join(b for b in BASE_FEATURES if b not in base)} not in these results)"
        )
    g = V.incremental_gain(
        targets,
        [[lay.values[b] for b in base] for lay in layers],
        [lay.values["feature_entropy"] for lay in layers],
        idx,
        seed=seed,
        level=ci_level,
    )
    rows.append(_row(INCREMENT, "all", g, target, method))
    reps[INCREMENT] = g.replicates
    return rows, reps, notes


def default_output(results_h5: Path) -> Path:
    return Path(results_h5).parent / "validity"


def validate(results, importance, output=None, *, resamples=1000, seed=0, ci_level=0.95, log=None):
    """Validate every indicator of a scoring run against the measured importance of the same model's units.

    ``results``: a results directory of ``onnx-fe score`` (or its results.h5); ``importance``: a directory of
    ``onnx-fe importance`` (or its importance.csv). ``output``: the directory for validity.csv, validity_bootstrap.csv
    and validity.json (default: ``RESULTS/validity``). ``resamples``, ``seed``, ``ci_level``: the bootstrap over units
    (stratified by layer). ``output=False`` computes without writing. Returns a :class:`ValidityResult`.
    """
    from ..io.paths import check_output

    log = log or (lambda msg: None)
    check_output(output if output is not False else None)
    _check_options(resamples, seed, ci_level)
    results_h5, meta, layers = read_indicators(results)
    imp_csv = importance_file(importance)
    sha = importance_sha256(imp_csv)
    if meta["model_sha256"] and sha != meta["model_sha256"]:
        raise OnnxFeError(
            f"the importance in {imp_csv.parent} is of another model than the results in {results_h5.parent} "
            f"(SHA-256 {sha[:12]}… vs {meta['model_sha256'][:12]}…)"
        )
    imp = read_importance(imp_csv)
    joined, targets_loss, targets_out = [], [], []
    n_scored = n_common = 0
    for lay in layers:
        c = len(lay.values["feature_entropy"])
        n_scored += c
        units = [u for u in range(c) if (lay.index, u) in imp]
        if not units:
            continue
        names = {imp[(lay.index, u)][0] for u in units}
        if names != {lay.name}:
            raise OnnxFeError(
                f"layer {lay.index} is {lay.name} in the results but {', '.join(sorted(names))} in {imp_csv}: "
                "not the same model's layers"
            )
        sel = np.array(units, dtype=np.int64)
        joined.append(_Layer(lay.index, lay.name, {k: v[sel] for k, v in lay.values.items()}))
        targets_loss.append(np.array([imp[(lay.index, u)][1] for u in units]))
        targets_out.append(np.array([imp[(lay.index, u)][2] for u in units]))
        n_common += len(units)
    if not joined:
        raise OnnxFeError(
            f"the results in {results_h5.parent} and the importance in {imp_csv.parent} share no unit "
            "(no common layer_index and unit)"
        )
    notes = []
    if n_common < n_scored:
        notes.append(f"{n_scored - n_common} of {n_scored} scored units have no importance and are left out")
    if n_common < len(imp):
        notes.append(f"{len(imp) - n_common} units of the importance table were not scored and are left out")
    if any(np.isfinite(t).any() for t in targets_loss):
        target, targets = "delta_loss", targets_loss
    elif any(np.isfinite(t).any() for t in targets_out):
        target, targets = "delta_output", targets_out
        notes.append("the model is not a classifier (no delta_loss): the target is delta_output")
    else:
        raise OnnxFeError(
            f"{imp_csv} has no finite delta_loss or delta_output for the common units: nothing to validate"
        )
    rows, reps, more = compute(
        joined,
        targets,
        target=target,
        method=meta["method"],
        resamples=int(resamples),
        seed=int(seed),
        ci_level=float(ci_level),
    )
    notes += more
    res = ValidityResult(rows, None, target, meta["method"], n_common, notes, reps)
    if output is not False:
        out = Path(output) if output is not None else default_output(results_h5)
        res.path = write(
            out,
            res,
            {
                "format": FORMAT,
                "results": str(results_h5.resolve()),
                "results_scores_sha256": meta["scores_sha256"],
                "importance": str(imp_csv.resolve()),
                "importance_sha256": _sha256_file(imp_csv),
                "model_sha256": meta["model_sha256"] or sha,
                "target": target,
                "method": meta["method"],
                "resamples": int(resamples),
                "seed": int(seed),
                "ci_level": float(ci_level),
                "n_units": n_common,
                "notes": notes,
            },
        )
    for n in notes:
        log(f"note: {n}")
    return res


# --------------------------------------------------------------------------- writing and reading back


def _is_ours(p: Path, header: str) -> bool:
    try:
        with open(p, encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
    except OSError:
        return False
    return first == header or first == ""


def _is_bootstrap(p: Path) -> bool:
    try:
        with open(p, encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
    except OSError:
        return False
    return first.startswith("resample,") or first == ""


def _cell(v):
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    return v


def write(out: Path, res: ValidityResult, info: dict) -> Path:
    """validity.csv, validity_bootstrap.csv and validity.json into ``out``, each atomically; refuses to replace a
    file that onnx-fe did not write there."""
    from ..io.lock import make_output_dir

    out = make_output_dir(out)
    csv_path, boot, js = out / "validity.csv", out / "validity_bootstrap.csv", out / "validity.json"
    names = list(res.replicates)
    for p, ok in (
        (csv_path, lambda p: _is_ours(p, ",".join(COLUMNS))),
        (boot, _is_bootstrap),
        (js, lambda p: p.read_text(errors="replace").find(f'"format": "{FORMAT}"') >= 0),
    ):
        if p.is_dir() or (p.exists() and not ok(p)):
            raise OnnxFeError(f"{p} exists and was not written by `onnx-fe validate`; choose another --output")
    # the JSON goes first and is replaced last: a reader that finds validity.csv without a matching JSON stops
    try:
        js.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise OnnxFeError(f"cannot replace {js}: {e.strerror or e}") from None
    write_rows_csv(csv_path, COLUMNS, [{k: _cell(v) for k, v in r.items()} for r in res.rows])
    B = len(next(iter(res.replicates.values()))) if res.replicates else 0
    write_rows_csv(
        boot,
        ["resample", *names],
        [{"resample": b, **{k: _cell(float(res.replicates[k][b])) for k in names}} for b in range(B)],
    )
    info = {**info, "validity_csv_sha256": _sha256_file(csv_path)}
    tmp = js.with_name(js.name + ".partial")
    try:
        tmp.write_text(json.dumps(info, indent=1) + "\n")
        os.replace(tmp, js)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise OnnxFeError(f"cannot write {js}: {e.strerror or e}") from None
    return csv_path


@dataclass
class Validity:
    """A validity directory as read back (for the report)."""

    directory: Path
    rows: list[dict]
    info: dict


def find_validity(path) -> Path | None:
    """The validity directory a path stands for: itself when it holds validity.csv, else its ``validity``
    sub-folder when that does (None when neither)."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    for d in (p, p / "validity"):
        if (d / "validity.csv").is_file():
            return d
    return None


def load_validity(path) -> Validity:
    """Read a directory written by ``validate`` (or its validity.csv), refusing half-written or altered ones."""
    d = find_validity(path)
    if d is None:
        raise ResultsError(f"no validity.csv in {path} (run `onnx-fe validate` first)")
    js = d / "validity.json"
    try:
        info = json.loads(js.read_text())
    except (OSError, ValueError):
        raise ResultsError(
            f"{d} has validity.csv but no readable validity.json: run `onnx-fe validate` again"
        ) from None
    if info.get("format") != FORMAT:
        raise ResultsError(f"{js} was not written by `onnx-fe validate`")
    csv_path = d / "validity.csv"
    if info.get("validity_csv_sha256") != _sha256_file(csv_path):
        raise ResultsError(
            f"{csv_path} does not match its validity.json (changed or half-written): run `onnx-fe validate` again"
        )
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("spearman", "ci_low", "ci_high"):
            r[k] = _float(r.get(k, ""))
        for k in ("n_units", "expected_sign"):
            r[k] = int(r[k]) if (r.get(k) or "").strip() else 0
        if r["layer_index"] != "all":
            r["layer_index"] = int(r["layer_index"])
    return Validity(d, rows, info)


def stale_reason(v: Validity) -> str | None:
    """Why a validity directory no longer describes the results it names (they were scored again), or None."""
    p = Path(str(v.info.get("results", "")))
    if not p.is_file():
        return None  # moved: nothing to compare with
    try:
        import h5py

        with h5py.File(p, "r") as f:
            now = str(f.attrs.get("scores_csv_sha256", ""))
    except Exception:
        return None
    want = str(v.info.get("results_scores_sha256", ""))
    if want and now and want != now:
        return f"the results in {p.parent} were scored again after `onnx-fe validate` wrote {v.directory}"
    return None
