"""Unit importance rankings, read from ``score``'s results (no inference).

Every indicator gives each unit of a layer one number (``score``) and a
direction; units are ordered from the most to the least important, ties broken
by unit index (lower index first). Per-class scores are aggregated by the
unweighted mean over the classes that have images (``nanmean`` over classes).

=================  ===========================================================  ==================
indicator          per-class score of unit j in class k                         important when
=================  ===========================================================  ==================
feature_entropy    ineffectiveness, replaced by 100·ln 100 when it is < 0.1      low
                   (the authors' ``unit_importance_rank``: units with no birth
                   point or with all birth points equal go last)
ineffectiveness    ineffectiveness as is (no special rule)                       low
mean_activation    mean over the class's images of the map's spatial mean         high
apoz               mean over the class's images of the fraction of exact zeros    low
hrank              mean over the class's images of the map's matrix rank          high
                   (HRank, Lin et al. 2020; float32 SVD, numpy's matrix_rank
                   tolerance: see ``onnx_fe.scores.baselines``)
activation_std     mean over the class's images of the map's standard deviation   high
                   (population std of its H·W values)
weight_l1          L1 norm of the unit's conv filter (one value, no classes)      high
random             a seeded uniform draw, ``default_rng([seed, layer_index])``    high
=================  ===========================================================  ==================

Rankings are saved as a CSV (``layer, layer_index, unit, score, rank, by``;
rank 0 = most important) and a JSON file holding, per layer, the unit order,
scores and ranks.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.dataset import select_names
from ..errors import OnnxFeError, OptionError

INDICATORS = (
    "feature_entropy",
    "ineffectiveness",
    "mean_activation",
    "apoz",
    "weight_l1",
    "hrank",
    "activation_std",
    "random",
)
# Indicators compared in cumulative ablation by default (ineffectiveness is the plain variant of feature_entropy).
DEFAULT_ABLATION = ("feature_entropy", "mean_activation", "apoz", "weight_l1", "random")
HIGHER_IS_IMPORTANT = {
    "feature_entropy": False,
    "ineffectiveness": False,
    "mean_activation": True,
    "apoz": False,
    "weight_l1": True,
    "hrank": True,
    "activation_std": True,
    "random": True,
}
# indicators read from a per-image dataset of results.h5 (class means of it), and the dataset
PER_IMAGE_INDICATORS = {
    "mean_activation": "mean_activation",
    "apoz": "zero_fraction",
    "hrank": "hrank",
    "activation_std": "activation_std",
}
# per-image datasets that results files written before a version lack: rank by them needs a new scoring run
LATER_DATASETS = frozenset({"hrank", "activation_std"})
DEGENERATE_BELOW = 0.1
DEGENERATE_SCORE = 100 * math.log(100)  # what the reference code gives such units (≈ 460.5)
RANKING_FORMAT = "onnx-fe-ranking/1"

RULES = {
    "feature_entropy": "ascending class-mean of per-class ineffectiveness, where a per-class ineffectiveness < 0.1 "
    "(no birth point, or all birth points equal) counts as 100*ln(100); ties by unit index",
    "ineffectiveness": "ascending class-mean ineffectiveness; ties by unit index",
    "mean_activation": "descending class-mean of the mean activation; ties by unit index",
    "apoz": "ascending class-mean average percentage of zeros; ties by unit index",
    "weight_l1": "descending L1 norm of the conv filter; ties by unit index",
    "hrank": "descending class-mean of the mean matrix rank of the unit's maps (HRank; float32 SVD, tolerance "
    "S.max * max(H, W) * eps as numpy.linalg.matrix_rank); ties by unit index",
    "activation_std": "descending class-mean of the mean standard deviation of the unit's maps; ties by unit index",
    "random": "descending seeded uniform draw (numpy default_rng([seed, layer_index])); ties by unit index",
}


def order_from_scores(score, higher_is_important: bool) -> np.ndarray:
    """Unit indices from the most to the least important; NaN scores last, ties by unit index."""
    s = np.asarray(score, dtype=np.float64)
    nan = np.isnan(s)
    key = np.where(nan, 0.0, -s if higher_is_important else s) + 0.0  # + 0.0 turns -0.0 into 0.0
    return np.lexsort((np.arange(len(s)), key, nan)).astype(np.int64)


def reference_scores(ineffectiveness) -> np.ndarray:
    """The reference rule per class: ineffectiveness, with values below 0.1 replaced by 100·ln(100)."""
    ie = np.asarray(ineffectiveness, dtype=np.float64)
    return np.where(np.abs(ie) < DEGENERATE_BELOW, DEGENERATE_SCORE, ie)


@dataclass
class LayerRanking:
    """One layer's units ordered by importance."""

    layer: str
    layer_index: int
    score: np.ndarray  # (C,) indexed by unit
    order: np.ndarray  # (C,) unit indices, most important first
    tap: str | None = None

    @property
    def channels(self) -> int:
        return len(self.order)

    @property
    def rank(self) -> np.ndarray:
        """Rank of each unit (0 = most important), indexed by unit."""
        r = np.empty(self.channels, dtype=np.int64)
        r[self.order] = np.arange(self.channels)
        return r

    @property
    def n_tied(self) -> int:
        """Units whose score equals another unit's (NaN included): their relative order is the unit index."""
        s = np.where(np.isnan(self.score), np.inf, self.score + 0.0)
        _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
        return int((counts[inv] > 1).sum())

    def keep_mask(self, keep) -> np.ndarray:
        """Boolean (C,) mask, True for the ``keep`` most important units (an int, or a fraction in (0, 1])."""
        c = self.channels
        if isinstance(keep, float):
            if not 0 < keep <= 1:
                raise OptionError("a fraction to keep must lie in (0, 1]")
            n = int(round(keep * c))
        else:
            n = int(keep)
        if not 0 <= n <= c:
            raise OptionError(f"cannot keep {n} of {c} units")
        m = np.zeros(c, dtype=bool)
        m[self.order[:n]] = True
        return m


@dataclass
class Ranking:
    """Rankings of one indicator for every layer of a results file."""

    by: str
    layers: list[LayerRanking]
    seed: int | None = None
    source: str | None = None
    classes: list[str] | None = None
    model_sha256: str | None = None
    preprocess: dict | None = None
    meta: dict = field(default_factory=dict)

    def layer(self, key) -> LayerRanking:
        for lr in self.layers:
            if (isinstance(key, (int, np.integer)) and lr.layer_index == key) or lr.layer == key:
                return lr
        raise KeyError(key)

    def rows(self) -> list[dict]:
        out = []
        for lr in self.layers:
            rank = lr.rank
            for u in lr.order:
                out.append(
                    {
                        "layer": lr.layer,
                        "layer_index": lr.layer_index,
                        "unit": int(u),
                        "score": float(lr.score[u]),
                        "rank": int(rank[u]),
                        "by": self.by,
                    }
                )
        return out

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=["layer", "layer_index", "unit", "score", "rank", "by"])

    def to_json(self) -> dict:
        return {
            "format": RANKING_FORMAT,
            "by": self.by,
            "rule": RULES.get(self.by, "given"),
            "seed": self.seed,
            "source": self.source,
            "model_sha256": self.model_sha256,
            "classes": self.classes,
            "preprocess": self.preprocess,
            "layers": [
                {
                    "layer": lr.layer,
                    "layer_index": lr.layer_index,
                    "tap": lr.tap,
                    "channels": lr.channels,
                    "order": [int(u) for u in lr.order],
                    "score": [_json_float(v) for v in lr.score],
                    "rank": [int(r) for r in lr.rank],
                }
                for lr in self.layers
            ],
        }

    def save(self, path) -> tuple[Path, Path]:
        """Write ``<path>.csv`` and ``<path>.json`` (``path`` may end in .csv or .json); returns both paths.

        An existing file there is replaced only when it is a ranking itself (so that ``-o`` can never overwrite,
        say, a scores.csv); anything that cannot be written is one line."""
        from ..io.paths import check_output

        p = Path(check_output(path))
        base = p.with_suffix("") if p.suffix.lower() in (".csv", ".json") else p
        csv_path, json_path = base.with_name(base.name + ".csv"), base.with_name(base.name + ".json")
        for q in (csv_path, json_path):
            if q.is_dir() or (q.exists() and not _is_ranking_file(q)):
                raise OnnxFeError(
                    f"{q} exists and is not a ranking written by onnx-fe; choose another --output (it is not replaced)"
                )
        tmp = json_path.with_name(json_path.name + ".partial")
        try:
            if csv_path.parent.exists() and not csv_path.parent.is_dir():
                raise OnnxFeError(f"cannot write a ranking into {csv_path.parent}: it is a file, not a directory")
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            write_rankings_csv([self], csv_path)
            tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
            os.replace(tmp, json_path)
        except OSError as e:
            for q in (tmp, csv_path.with_name(csv_path.name + ".partial")):
                try:
                    q.unlink()
                except OSError:
                    pass
            raise OnnxFeError(f"cannot write ranking {base}.csv/.json: {e.strerror or e}") from None
        return csv_path, json_path


RANKING_COLUMNS = "layer,layer_index,unit,score,rank,by"


def _is_ranking_file(p: Path) -> bool:
    """Whether an existing file is a ranking onnx-fe wrote (and so may be replaced by a new one)."""
    try:
        with open(p, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    if p.suffix.lower() == ".csv":
        return head.splitlines()[0].strip() == RANKING_COLUMNS if head else True
    return f'"format": "{RANKING_FORMAT}"' in head or not head


def _json_float(v):
    v = float(v)
    return v if math.isfinite(v) else None


def write_rankings_csv(rankings: list[Ranking], path: Path) -> None:
    tmp = Path(path).with_name(Path(path).name + ".partial")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "layer_index", "unit", "score", "rank", "by"])
        for r in rankings:
            for row in r.rows():
                w.writerow(
                    [row["layer"], row["layer_index"], row["unit"], repr(row["score"] + 0.0), row["rank"], row["by"]]
                )
    os.replace(tmp, path)


# --------------------------------------------------------------------------- from results.h5


def results_file(path) -> Path:
    """The results.h5 of a results directory (or the file itself), refusing unfinished runs."""
    p = Path(path)
    if not p.exists():
        raise OnnxFeError(f"results not found: {p}")
    if p.is_dir():
        f = p / "results.h5"
        if not f.exists():
            if (p / "results.h5.partial").exists():
                raise OnnxFeError(
                    f"the scoring run in {p} did not finish (only results.h5.partial); run `onnx-fe score` "
                    "again to complete it"
                )
            raise OnnxFeError(f"no results.h5 in {p} (run `onnx-fe score` first)")
        return f
    return p


def _open_results(path):
    import h5py

    from ..io.results import check_intact, reading

    f = results_file(path)
    check_intact(f)
    try:
        h = h5py.File(f, "r")
    except Exception as e:
        raise OnnxFeError(
            f"cannot read results file {f}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    try:
        with reading(f):
            _check_open(f, h)
    except BaseException:
        h.close()
        raise
    return f, h


def _check_open(f, h) -> None:
    if h.attrs.get("format") != "onnx-fe/1" or "layers" not in h:
        raise OnnxFeError(f"{f} is not an onnx-fe results file")
    if not bool(h.attrs.get("complete")):
        raise OnnxFeError(f"{f} holds an unfinished scoring run; run `onnx-fe score` again to complete it")
    why = _damage(h)
    if why is not None:
        raise OnnxFeError(f"results file {f} is damaged or incomplete: {why} (run `onnx-fe score` again)")


LAYER_DATASETS = (
    "birth_points",
    "mean_activation",
    "zero_fraction",
    "weight_l1",
    "n_images",
    "feature_entropy",
    "birth_rate",
    "ineffectiveness",
)
LAYER_ATTRS = ("index", "name", "tap", "channels")


def _damage(h) -> str | None:
    """What a complete-looking results file lacks for ranking, in words (None when it is whole)."""
    import h5py

    try:
        for k in ("classes", "labels"):
            if not isinstance(h.get(k), h5py.Dataset):
                return f"it has no {k!r} dataset"
        n, k = len(h["labels"]), len(h["classes"])
        layers = h["layers"]
        if not isinstance(layers, h5py.Group) or len(layers) == 0:
            return "it holds no scored layer (the 'layers' group is empty)"
        for key in layers:
            g = layers[key]
            if not isinstance(g, h5py.Group):
                return f"layers/{key} is not a group"
            for a in LAYER_ATTRS:
                if a not in g.attrs:
                    return f"layer {key} has no {a!r} attribute"
            for a in ("index", "channels"):
                v = g.attrs[a]
                if not (isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))):
                    return f"layer {key} has a non-integer {a!r} attribute ({v!r})"
            c = int(g.attrs["channels"])
            for d in LAYER_DATASETS:
                if not isinstance(g.get(d), h5py.Dataset):
                    return f"layer {key} has no {d!r} dataset"
            want = {"birth_points": (n, c), "mean_activation": (n, c), "zero_fraction": (n, c), "weight_l1": (c,)}
            want.update({d: (k, c) for d in ("feature_entropy", "birth_rate", "ineffectiveness")})
            for d, shape in want.items():
                if g[d].shape != shape:
                    return f"layer {key} {d} has shape {g[d].shape}, expected {shape}"
    except Exception as e:
        return " ".join(str(e).split()) or type(e).__name__
    return None


def _scored_without_hrank(g) -> bool:
    """Whether the results file holding layer group ``g`` was scored with ``--no-hrank``."""
    try:
        return json.loads(g.file.attrs.get("params", "{}")).get("hrank", True) is False
    except (TypeError, ValueError):
        return False


def _per_image(g, name: str, path, n: int, c: int, layer: str) -> np.ndarray:
    """A layer's per-image dataset (N, C); one line when the results predate it or it has the wrong shape."""
    import h5py

    d = g.get(name)
    if not isinstance(d, h5py.Dataset):
        if name == "hrank" and _scored_without_hrank(g):
            raise OnnxFeError(
                f"the results in {path} were scored with --no-hrank; run `onnx-fe score` again without it to rank by "
                "hrank"
            )
        if name in LATER_DATASETS:
            raise OnnxFeError(
                f"the results in {path} predate the {name} column (they were scored by an older onnx-fe); "
                "run `onnx-fe score` again to rescore them"
            )
        raise OnnxFeError(f"results file {path} is damaged or incomplete: layer {layer} has no {name!r} dataset")
    if d.shape != (n, c):
        raise OnnxFeError(
            f"results file {path} is damaged or incomplete: layer {layer} {name} has shape {d.shape}, "
            f"expected {(n, c)} (run `onnx-fe score` again)"
        )
    return d[()]


def _class_means(per_image: np.ndarray, labels: np.ndarray, keep: list[int]) -> np.ndarray:
    rows = []
    for k in keep:
        sel = labels == k
        rows.append(
            per_image[sel].astype(np.float64).mean(axis=0) if sel.any() else np.full(per_image.shape[1], np.nan)
        )
    return np.nanmean(np.stack(rows), axis=0)


def rank(results, by: str = "feature_entropy", *, seed: int = 0, classes=None, layers=None) -> Ranking:
    """Rank the units of every scored layer by one indicator, from ``score``'s results (a directory or results.h5).

    ``classes``: aggregate over these class names only (default: all scored classes).
    ``layers``: layer indices or names to keep (default: all scored layers).
    """
    import warnings

    if by not in INDICATORS:
        raise OnnxFeError(f"--by {by!r}: choose one of {', '.join(INDICATORS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise OnnxFeError(f"--seed {seed!r}: give a non-negative integer")
    from ..io.results import reading

    path, f = _open_results(results)
    with f, reading(path):
        names = [c.decode() if isinstance(c, bytes) else str(c) for c in f["classes"][()]]
        labels = f["labels"][()]
        keep = select_names(names, classes, where=f"scored in {path}")
        try:
            params = json.loads(f.attrs["params"])
        except Exception:
            params = {}
        out: list[LayerRanking] = []
        for key in sorted(f["layers"]):
            g = f["layers"][key]
            idx, name = int(g.attrs["index"]), str(g.attrs["name"])
            if layers is not None and idx not in layers and name not in layers:
                continue
            c = int(g.attrs["channels"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # nanmean over an all-NaN column
                if by in ("feature_entropy", "ineffectiveness"):
                    ie = g["ineffectiveness"][()][keep]
                    score = np.nanmean(reference_scores(ie) if by == "feature_entropy" else ie, axis=0)
                elif by in PER_IMAGE_INDICATORS:
                    score = _class_means(
                        _per_image(g, PER_IMAGE_INDICATORS[by], path, len(labels), c, f"{idx} {name}"), labels, keep
                    )
                elif by == "weight_l1":
                    score = g["weight_l1"][()].astype(np.float64)
                    if np.isnan(score).any():
                        raise OnnxFeError(
                            f"layer {idx} {name}: the conv weights are not constants of the graph, "
                            "so there is no weight L1 norm to rank by"
                        )
                else:
                    score = np.random.default_rng([seed, idx]).random(c)
            out.append(
                LayerRanking(
                    layer=name,
                    layer_index=idx,
                    score=np.asarray(score, dtype=np.float64),
                    order=order_from_scores(score, HIGHER_IS_IMPORTANT[by]),
                    tap=str(g.attrs["tap"]),
                )
            )
        if layers is not None and not out:
            raise OnnxFeError(f"no scored layer matches {layers!r} in {path}")
        pre = params.get("preprocess")
        return Ranking(
            by=by,
            layers=out,
            seed=seed if by == "random" else None,
            source=str(path),
            classes=[names[k] for k in keep],
            model_sha256=str(f.attrs.get("model_sha256", "")) or None,
            preprocess=pre if isinstance(pre, dict) and "npz" not in pre else None,
        )


# --------------------------------------------------------------------------- from a saved ranking


def load_rankings(path, by=None, seed: int = 0, random_seeds=None) -> list[Ranking]:
    """Rankings from a ranking CSV/JSON (as written by ``rank``) or computed from a results directory / .h5.

    For results, ``by`` lists the indicators to compute (default: DEFAULT_ABLATION) and ``random_seeds`` the
    seeds of the random ranking (default: ``[seed]``). For a file, ``by`` filters the indicators it holds.
    """
    p = Path(path)
    if not p.exists():
        raise OnnxFeError(f"ranking not found: {p}")
    wanted = list(dict.fromkeys(by)) if by else None
    if p.is_dir() or p.suffix.lower() in (".h5", ".hdf5"):
        out = []
        for b in wanted or DEFAULT_ABLATION:
            if b == "random":
                out.extend(rank(p, "random", seed=s) for s in (random_seeds or [seed]))
            else:
                out.append(rank(p, b))
        return out
    if p.suffix.lower() == ".json":
        rankings = [_from_json(p)]
    elif p.suffix.lower() == ".csv":
        rankings = _from_csv(p)
    else:
        raise OnnxFeError(f"ranking {p}: expected a .csv or .json ranking (from `onnx-fe rank`) or a results directory")
    if wanted:
        missing = [b for b in wanted if b not in {r.by for r in rankings}]
        if missing:
            raise OnnxFeError(
                f"ranking {p.name} holds no {', '.join(missing)} ranking (it holds: "
                f"{', '.join(sorted({r.by for r in rankings}))})"
            )
        rankings = [r for r in rankings if r.by in wanted]
    return rankings


def _check_layer(p: Path, by: str, name: str, idx: int, units, ranks) -> tuple[np.ndarray, np.ndarray]:
    units, ranks = np.asarray(units, dtype=np.int64), np.asarray(ranks, dtype=np.int64)
    c = len(units)
    if sorted(units.tolist()) != list(range(c)):
        raise OnnxFeError(f"ranking {p.name}: layer {idx} {name} ({by}) must list each unit 0..{c - 1} once")
    if sorted(ranks.tolist()) != list(range(c)):
        raise OnnxFeError(f"ranking {p.name}: layer {idx} {name} ({by}) must give ranks 0..{c - 1}, each once")
    order = np.empty(c, dtype=np.int64)
    order[ranks] = units
    return units, order


def _from_csv(p: Path) -> list[Ranking]:
    try:
        with open(p, newline="") as f:
            rows = list(csv.DictReader(f))
    except Exception as e:
        raise OnnxFeError(f"cannot read ranking {p}: {e}") from None
    if not rows:
        raise OnnxFeError(f"ranking {p} is empty")
    need = {"layer", "layer_index", "unit", "rank"}
    missing = need - set(rows[0])
    if missing:
        raise OnnxFeError(
            f"ranking {p.name} lacks the column(s) {', '.join(sorted(missing))} "
            "(expected layer, layer_index, unit, rank[, score, by])"
        )
    groups: dict[tuple, list] = {}
    try:
        for r in rows:
            b = (r.get("by") or p.stem).strip()
            groups.setdefault((b, int(r["layer_index"]), r["layer"]), []).append(
                (int(r["unit"]), int(r["rank"]), float(r["score"]) if r.get("score") not in (None, "") else np.nan)
            )
    except ValueError as e:
        raise OnnxFeError(f"ranking {p.name}: {e}") from None
    by_ind: dict[str, list[LayerRanking]] = {}
    for (b, idx, name), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        units, order = _check_layer(p, b, name, idx, [u for u, _, _ in items], [r for _, r, _ in items])
        score = np.full(len(units), np.nan)
        score[units] = [s for _, _, s in items]
        if any(lr.layer_index == idx for lr in by_ind.get(b, [])):
            raise OnnxFeError(f"ranking {p.name}: layer index {idx} appears under two names ({b})")
        by_ind.setdefault(b, []).append(LayerRanking(layer=name, layer_index=idx, score=score, order=order))
    return [Ranking(by=b, layers=lrs, source=str(p)) for b, lrs in by_ind.items()]


def _from_json(p: Path) -> Ranking:
    try:
        d = json.loads(p.read_text())
        layers = []
        for L in d["layers"]:
            c = len(L["order"])
            rank_ = L.get("rank") or np.argsort(L["order"]).tolist()
            units, order = _check_layer(p, d.get("by", "?"), L["layer"], int(L["layer_index"]), list(range(c)), rank_)
            if list(order) != list(L["order"]):
                raise OnnxFeError(f"ranking {p.name}: layer {L['layer_index']}: order and rank disagree")
            score = np.array([np.nan if v is None else float(v) for v in L.get("score") or [None] * c])
            layers.append(
                LayerRanking(
                    layer=str(L["layer"]), layer_index=int(L["layer_index"]), score=score, order=order, tap=L.get("tap")
                )
            )
        return Ranking(
            by=str(d.get("by") or p.stem),
            layers=layers,
            seed=d.get("seed"),
            source=str(p),
            classes=d.get("classes"),
            model_sha256=d.get("model_sha256"),
            preprocess=d.get("preprocess"),
        )
    except OnnxFeError:
        raise
    except Exception as e:
        raise OnnxFeError(f"cannot read ranking {p}: {type(e).__name__}: {e}") from None
