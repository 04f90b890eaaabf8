"""Read what a report shows: one finished ``score`` run (``results.h5`` and, when present, ``layers.csv``), a
``compare`` directory (one run per sub-folder) and an ``ablate`` directory (``ablation.csv``).

Only the per-class tables (classes × units) are read eagerly; per-image arrays (images × units) are read one layer
at a time when asked for, so a report of a large run does not hold every birth point in memory.

Statistics that a results file may or may not hold (they were added after format ``onnx-fe/1`` first shipped) are
read when present and simply absent otherwise: the report shows what exists.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ResultsError
from ..io.results import check_intact, reading

# Optional per-class × unit tables of a layer group (same names as the scores.csv columns).
OPTIONAL_CELL_STATS = (
    "n_births",
    "fe_ci_low",
    "fe_ci_high",
    "birth_rate_ci_low",
    "birth_rate_ci_high",
    "fe_rarefied",
    "fe_rarefied_ci_low",
    "fe_rarefied_ci_high",
)


@dataclass
class LayerData:
    """One scored layer: its attributes and its per-class × unit tables (K, C)."""

    index: int
    name: str
    tap: str
    chain: str
    channels: int
    height: int
    width: int
    feature_entropy: np.ndarray
    birth_rate: np.ndarray
    ineffectiveness: np.ndarray
    n_images: np.ndarray
    weight_l1: np.ndarray
    stats: dict = field(default_factory=dict)  # present OPTIONAL_CELL_STATS, each (K, C)
    attrs: dict = field(default_factory=dict)  # every attribute of the group, decoded

    @property
    def key(self) -> str:
        return f"{self.index:03d}"

    @property
    def unit_fe(self) -> np.ndarray:
        """Feature entropy of each unit: the unweighted mean over the classes that have images."""
        return _nanmean0(self.feature_entropy)

    @property
    def unit_birth_rate(self) -> np.ndarray:
        return _nanmean0(self.birth_rate)


@dataclass
class Run:
    """A finished ``score`` run as the report sees it."""

    name: str
    directory: Path
    results_h5: Path
    attrs: dict
    params: dict
    classes: list[str]
    labels: np.ndarray
    image_ids: list[str]
    layers: list[LayerData]
    layer_table: list[dict] | None = None  # rows of layers.csv when the run wrote one
    extra: dict = field(default_factory=dict)  # e.g. accuracy from a compare directory
    control: Run | None = None  # the control scored with ``--control`` (in the run's control/ folder)

    @property
    def config(self) -> dict:
        c = self.attrs.get("config")
        return c if isinstance(c, dict) else {}

    @property
    def ci_level(self) -> float:
        """The level of the stored confidence intervals (0.95 unless the run chose another)."""
        v = (self.config.get("statistics") or {}).get("ci_level")
        return float(v) if isinstance(v, (int, float)) else 0.95

    def layer_by_name(self, name: str) -> LayerData | None:
        return next((lay for lay in self.layers if lay.name == name), None)

    def layer(self, index: int) -> LayerData:
        for lay in self.layers:
            if lay.index == index:
                return lay
        raise KeyError(index)

    def per_image(self, index: int, name: str, rows=None) -> np.ndarray:
        """A per-image array (images × units) of one layer, e.g. ``birth_points``; ``rows``: image indices."""
        import h5py

        with reading(self.results_h5), h5py.File(self.results_h5, "r") as f:
            d = f["layers"][f"{index:03d}"][name]
            if rows is None:
                return d[()]
            rows = np.asarray(rows, dtype=np.int64)
            order = np.argsort(rows)
            out = np.empty((len(rows),) + d.shape[1:], dtype=d.dtype)
            out[order] = d[rows[order]]  # h5py wants increasing indices
            return out

    @property
    def n_images(self) -> int:
        return len(self.labels)


def _nanmean0(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    ok = ~np.isnan(a)
    n = ok.sum(axis=0)
    s = np.where(ok, a, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def _decode(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _strings(ds) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in ds[()]]


def find_results(path) -> list[Path]:
    """The results.h5 files a path stands for: a results directory, a results.h5 itself, or a ``compare`` directory
    (whose sub-folders each hold one run)."""
    p = Path(path)
    if not p.exists():
        raise ResultsError(f"results not found: {p}")
    if p.is_file():
        return [p]
    if (p / "results.h5").exists():
        return [p / "results.h5"]
    if (p / "results.h5.partial").exists():
        raise ResultsError(
            f"the scoring run in {p} did not finish (only results.h5.partial); run `onnx-fe score` again"
        )
    subs = sorted(q / "results.h5" for q in p.iterdir() if q.is_dir() and (q / "results.h5").exists())
    if subs and (p / "compare_layers.csv").exists():
        return subs
    raise ResultsError(f"no results.h5 in {p} (give a directory written by `onnx-fe score` or `onnx-fe compare`)")


def read_csv_rows(path: Path) -> list[dict]:
    """A small CSV as dict rows with numbers parsed (empty cells become None)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e}") from None
    return [{k: _num(v) for k, v in r.items() if k is not None} for r in rows]


def _num(v):
    if v is None or v == "":
        return None
    try:
        x = float(v)
    except ValueError:
        return v
    if x.is_integer() and v.lstrip("+-").isdigit():
        return int(x)
    return x


def load_run(results_h5: Path, name: str | None = None, with_control: bool = True) -> Run:
    """Read one finished run (refusing unfinished or foreign files with one line), and its control when it has one."""
    import h5py

    p = Path(results_h5)
    if p.exists():
        check_intact(p)
    try:
        f = h5py.File(p, "r")
    except Exception as e:
        raise ResultsError(
            f"cannot read results file {p}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    with f, reading(p):
        if not str(f.attrs.get("format", "")).startswith("onnx-fe/") or "layers" not in f:
            raise ResultsError(f"{p} is not an onnx-fe results file")
        if not bool(f.attrs.get("complete")):
            raise ResultsError(f"{p} holds an unfinished scoring run; run `onnx-fe score` again to complete it")
        attrs = {k: _decode(v) for k, v in f.attrs.items()}
        params = attrs.get("params") if isinstance(attrs.get("params"), dict) else {}
        classes = _strings(f["classes"])
        labels = f["labels"][()].astype(np.int64)
        ids = _strings(f["image_ids"])
        layers = []
        for key in sorted(f["layers"]):
            g = f["layers"][key]
            if "feature_entropy" not in g:
                continue
            la = {k: _decode(v) for k, v in g.attrs.items()}
            k_c = g["feature_entropy"].shape
            stats = {s: g[s][()].astype(np.float64) for s in OPTIONAL_CELL_STATS if s in g and g[s].shape == k_c}
            layers.append(
                LayerData(
                    index=int(la["index"]),
                    name=str(la["name"]),
                    tap=str(la.get("tap", "")),
                    chain=str(la.get("chain", "")),
                    channels=int(la["channels"]),
                    height=int(la["height"]),
                    width=int(la["width"]),
                    feature_entropy=g["feature_entropy"][()].astype(np.float64),
                    birth_rate=g["birth_rate"][()].astype(np.float64),
                    ineffectiveness=g["ineffectiveness"][()].astype(np.float64),
                    n_images=g["n_images"][()],
                    weight_l1=g["weight_l1"][()].astype(np.float64) if "weight_l1" in g else np.full(k_c[1], np.nan),
                    stats=stats,
                    attrs=la,
                )
            )
    if not layers:
        raise ResultsError(f"{p} holds no scored layer")
    directory = p.parent
    table = read_csv_rows(directory / "layers.csv") if (directory / "layers.csv").exists() else None
    control = None
    if with_control and (directory / "control" / "results.h5").exists():
        try:
            control = load_run(directory / "control" / "results.h5", "control", with_control=False)
        except ResultsError:
            control = None  # an unfinished control: the page shows the run without it
    return Run(
        name=name or directory.name,
        directory=directory,
        results_h5=p,
        attrs=attrs,
        params=params,
        classes=classes,
        labels=labels,
        image_ids=ids,
        layers=layers,
        layer_table=table,
        control=control,
    )


def unique_names(paths: list[Path]) -> list[str]:
    """Short distinct names for runs: their directory names, else parent/dir, else numbered."""
    dirs = [Path(p).resolve().parent for p in paths]
    for cand in ([d.name for d in dirs], [f"{d.parent.name}/{d.name}" for d in dirs]):
        if len(set(cand)) == len(cand) and all(cand):
            return cand
    return [f"{d.name} ({i + 1})" for i, d in enumerate(dirs)]


def load_runs(paths) -> list[Run]:
    """Every run the given paths stand for, in order; a ``compare`` directory adds its accuracy table."""
    files: list[Path] = []
    extras: dict[Path, dict] = {}
    for p in paths:
        found = find_results(p)
        pp = Path(p)
        if pp.is_dir() and (pp / "compare_models.csv").exists():
            for r in read_csv_rows(pp / "compare_models.csv"):
                res = r.get("results")
                if res:
                    extras[(pp / Path(str(res)).name / "results.h5").resolve()] = r
        files.extend(found)
    seen = set()
    for f in files:
        rf = f.resolve()
        if rf in seen:
            raise ResultsError(f"results {f} are given twice")
        seen.add(rf)
    names = unique_names(files)
    runs = []
    for f, n in zip(files, names):
        run = load_run(f, n)
        ex = extras.get(f.resolve())
        if ex:
            run.extra["compare"] = {k: v for k, v in ex.items() if k in ("top1", "top5", "loss", "n_images")}
        runs.append(run)
    return runs


def load_ablation(path) -> list[dict]:
    """Rows of ``ablation.csv`` (a directory written by ``onnx-fe ablate``, or the file itself)."""
    p = Path(path)
    f = p / "ablation.csv" if p.is_dir() else p
    if not f.exists():
        raise ResultsError(f"no ablation.csv in {p} (give a directory written by `onnx-fe ablate`)")
    rows = read_csv_rows(f)
    need = {"layer", "layer_index", "units", "by", "order", "removed", "fraction_removed", "top1"}
    if not rows or need - set(rows[0]):
        raise ResultsError(f"{f} is not an ablation table (needs the columns {', '.join(sorted(need))})")
    for r in rows:
        if r.get("seed") is None:
            r["seed"] = ""
    return rows


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
