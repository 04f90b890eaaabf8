"""The driver's statistics as classes complete (experiments.score.ClassStatistics): a class's statistics are
computed once all its images are written, in a background thread while the shards run in other processes, and the
merged tables are those of one call on all the images, bit for bit."""

from __future__ import annotations

import hashlib
import threading
from types import SimpleNamespace

import numpy as np
import pytest

import onnx_fe.experiments.score as score
from onnx_fe.config import StatisticsOptions
from onnx_fe.experiments.score import ClassStatistics
from onnx_fe.scores.statistics import CellStatistics, cell_statistics

SO = StatisticsOptions.build(resamples=200, rarefy_k=3)


class Writer:
    """Stands for the PartialWriter: the labels, and the rows of birth points, which may only be read once
    written (``n_done``)."""

    def __init__(self, labels, bps):
        self.f = {"labels": np.asarray(labels)}
        self.bps, self.n_done, self.reads = bps, 0, []

    def read(self, index, name, start=0, stop=None):
        stop = len(self.bps[index]) if stop is None else stop
        assert name == "birth_points" and stop <= self.n_done, "rows read before they were written"
        self.reads.append((index, start, stop))
        return self.bps[index][start:stop]


def _layers(labels, seed=0):
    rng = np.random.default_rng(seed)
    n = len(labels)
    return [rng.integers(0, 9, size=(n, c)) * (rng.random((n, c)) < 0.7) for c in (5, 3)]


def _units(bps):
    return [SimpleNamespace(index=i, channels=bp.shape[1]) for i, bp in enumerate(bps)]


def _whole(bps, labels, classes):
    ids = [int.from_bytes(hashlib.sha256(c.encode()).digest()[:7], "little") for c in classes]
    kw = dict(k=SO.rarefy_k, level=SO.ci_level, n_resamples=SO.resamples, seed=SO.bootstrap_seed, class_ids=ids)
    return [cell_statistics(bp, labels, len(classes), **kw) for bp in bps]


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for name in CellStatistics._fields:
            a, b = getattr(w, name), getattr(g, name)
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name


@pytest.fixture
def threads(monkeypatch):
    """The names of the threads that computed statistics."""
    seen = []

    def recording(*a, **k):
        seen.append(threading.current_thread().name)
        return cell_statistics(*a, **k)

    monkeypatch.setattr(score, "cell_statistics", recording)
    return seen


@pytest.mark.parametrize(
    "labels, shard, start",
    [
        ([0] * 6 + [1] * 5 + [2] * 7 + [3] * 4, 4, 0),  # a folder: class after class
        ([0] * 6 + [1] * 5 + [2] * 7 + [3] * 4, 3, 9),  # a resumed run: class 0 was complete before it started
        ([2, 0, 1, 0, 2, 2, 1, 0, 1, 3, 3, 2], 2, 0),  # interleaved, and class 4 has no images
        ([q for q in range(20) for _ in range(3)], 9, 40),  # 13 classes complete at the start: tasks of at most 8
    ],
)
def test_classes_are_computed_in_the_background_as_they_complete(threads, labels, shard, start):
    labels = np.array(labels)
    classes = [f"class {q}" for q in range(max(5, int(labels.max()) + 1))]
    bps = _layers(labels)
    w = Writer(labels, bps)
    cs = ClassStatistics(w, _units(bps), classes, SO)
    cs.background()
    w.n_done = start
    cs.advance(start)
    for e in range(start + shard, len(labels) + shard, shard):
        w.n_done = min(e, len(labels))
        cs.advance(w.n_done)
    got = cs.collect(workers=2)
    _same(got, _whole(bps, labels, classes))
    assert any(stop < len(labels) for _, _, stop in w.reads)  # some classes were read before the last shard
    assert any(t.startswith("onnx-fe-statistics") for t in threads)  # and computed in the background


def test_in_this_process_every_class_is_computed_at_the_end_as_one_group(threads):
    labels = np.array([0] * 5 + [1] * 6 + [2] * 3)
    classes = ["a", "b", "c"]
    bps = _layers(labels, seed=1)
    w = Writer(labels, bps)
    cs = ClassStatistics(w, _units(bps), classes, SO)
    for e in (4, 8, 12, 14):
        w.n_done = e
        cs.advance(e)
    assert w.reads == [] and threads == []  # nothing computed while the shards run in this process
    _same(cs.collect(workers=1), _whole(bps, labels, classes))
    assert [(s, e) for _, s, e in w.reads] == [(0, 14), (0, 14)]  # every layer read once, whole, at the end
    assert threads == [threading.current_thread().name] * 2


def test_collect_refuses_before_every_row_is_written():
    labels = np.array([0, 0, 1, 1])
    bps = _layers(labels)
    w = Writer(labels, bps)
    cs = ClassStatistics(w, _units(bps), ["a", "b"], SO)
    w.n_done = 2
    cs.advance(2)
    with pytest.raises(RuntimeError):
        cs.collect()
