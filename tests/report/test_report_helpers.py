"""The report's pure helpers: statistics, birth sets, SVG paths and page pieces (no model, no browser)."""

import re

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats

from onnx_fe.report import figures, gallery, html, summary
from onnx_fe.topology import birth_points

# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, 40).astype(float)  # many ties
    b = a + rng.normal(0, 2, 40)
    b[::7] = np.round(b[::7])
    assert summary.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_ignores_nan_pairs_and_refuses_constant_sides():
    a = np.array([1.0, 2, 3, 4, np.nan])
    b = np.array([2.0, 4, 6, 8, 1])
    assert summary.spearman(a, b) == pytest.approx(1.0)
    assert np.isnan(summary.spearman([1, 1, 1, 1], [1, 2, 3, 4]))
    assert np.isnan(summary.spearman([1, 2], [1, 2]))


def test_average_ranks():
    assert summary.average_ranks([3, 1, 3, 2]).tolist() == [3.5, 1, 3.5, 2]


def test_tap_kind():
    assert summary.tap_kind("Conv→BatchNormalization→Relu") == "post-activation (Relu)"
    assert summary.tap_kind("Conv→Sigmoid·Mul") == "post-activation (Sigmoid·Mul)"
    assert summary.tap_kind("Conv→BatchNormalization") == "pre-activation (BatchNormalization)"
    assert summary.tap_kind("Conv") == "pre-activation (Conv)"
    stored = {"tap_op": "Clip", "activated": True}
    assert summary.tap_kind("Conv→BatchNormalization", stored) == "post-activation (Clip)"


def test_best_worst_are_disjoint_on_small_layers():
    assert summary.best_worst([4, 2, 0, 1, 3], 3) == ([4, 2], [3, 1])
    assert summary.best_worst([0], 3) == ([0], [0])


def test_gallery_images_default_and_named_classes():
    labels = np.repeat(np.arange(4), 5)
    names = ["a", "b", "c", "d"]
    assert summary.gallery_images(labels, names, 2) == [0, 1, 10, 11]
    assert summary.gallery_images(labels, names, 3, ["d"]) == [15, 16, 17]


def test_fmt():
    assert summary.fmt(None) == "–"
    assert summary.fmt(float("nan")) == "–"
    assert summary.fmt(3) == "3"
    assert summary.fmt(0.12345) == "0.123"


# --------------------------------------------------------------------------- birth sets


def _ring(n=12, r0=2.5, r1=4.5):
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    d = np.hypot(x, y)
    return ((d > r0) & (d < r1)).astype(float) + 0.01 * np.arange(n * n).reshape(n, n) / (n * n)


def _maps(seed, n=30):
    rng = np.random.default_rng(seed)
    out = [rng.random((9, 9)), np.maximum(rng.normal(size=(12, 12)), 0), _ring(), np.zeros((6, 6)), rng.random((5, 7))]
    out += [rng.random((8, 8)) for _ in range(n)]
    return out


@pytest.mark.parametrize("seed", range(3))
def test_cubical_birth_set_gives_the_package_birth_point(seed):
    params = {"resolution": 100, "threshold": 75}
    for m in _maps(seed):
        bp, mask = gallery.birth_set(m, "cubical", params)
        assert bp == int(birth_points(m, method="cubical", **params)[0])
        if bp == 0:
            assert mask is None
        else:
            h, w = m.shape
            # the birth point is the set's size in steps of the filtration, and the set is a superlevel set
            assert bp == -(-params["resolution"] * int(mask.sum()) // (h * w))
            assert m[mask].min() >= m[~mask].max()


def test_cubical_birth_set_of_a_ring_is_the_ring():
    m = _ring()
    bp, mask = gallery.birth_set(m, "cubical", {"resolution": 100, "threshold": 100})
    assert bp > 0
    assert (mask <= (m >= 1)).all()  # only ring pixels have entered
    # and they enclose the centre: its component of the complement (8-connected, the dual of the set's
    # 4-connectivity) does not reach the border
    lab, _ = scipy.ndimage.label(~mask, structure=np.ones((3, 3)))
    border = set(lab[0]) | set(lab[-1]) | set(lab[:, 0]) | set(lab[:, -1])
    assert lab[6, 6] and lab[6, 6] not in border


@pytest.mark.parametrize("seed", range(3))
def test_clique_birth_set_gives_the_package_birth_point(seed):
    params = {"threshold": 50, "max_edge_density": 0.8}
    rng = np.random.default_rng(seed)
    for m in [rng.random((8, 8)) for _ in range(20)] + [np.maximum(rng.normal(size=(10, 10)), 0)]:
        bp, mask = gallery.birth_set(m, "clique", params)
        assert bp == int(birth_points(m, method="clique", **params)[0])
        if bp:
            s = np.maximum(m, m.T)
            assert np.array_equal(mask, mask.T) and not mask.diagonal().any()
            off = ~np.eye(len(m), dtype=bool)
            assert s[mask].min() > s[off & ~mask].max()  # the top entries of max(U, Uᵀ)
            # index bp + 1 = that many distinct values have entered
            assert len(np.unique(s[mask])) == bp + 1


# --------------------------------------------------------------------------- SVG paths


def _parse_loops(d: str):
    """Polygons (lists of vertices) of a path made of M, h, v, z."""
    loops, cur = [], None
    for cmd, a, b in re.findall(r"([Mhvz])(-?\d*)(?: (-?\d+))?", d):
        if cmd == "M":
            cur = [(int(a), int(b))]
            loops.append(cur)
        elif cmd == "h":
            cur.append((cur[-1][0] + int(a), cur[-1][1]))
        elif cmd == "v":
            cur.append((cur[-1][0], cur[-1][1] + int(a)))
        elif cmd == "z":
            cur.append(cur[0])
    return loops


def _evenodd(loops, h, w):
    """Rasterise the even-odd fill at pixel centres (crossings of a ray towards +x with vertical edges)."""
    out = np.zeros((h, w), dtype=bool)
    ys, xs = np.mgrid[:h, :w] + 0.5
    for pts in loops:
        assert pts[0] == pts[-1], "every loop is closed"
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
            if x0 == x1:  # vertical edge
                lo, hi = min(y0, y1), max(y0, y1)
                out ^= (xs < x0) & (ys > lo) & (ys < hi)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_boundary_path_fills_exactly_the_set(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 14, 2)
    mask = rng.random((h, w)) < rng.uniform(0.1, 0.9)
    mask[h // 2, :] = True  # holes and diagonal contacts in plenty
    d = gallery.boundary_path(mask)
    assert np.array_equal(_evenodd(_parse_loops(d), h, w), mask)


def test_boundary_path_of_a_square_with_a_hole():
    mask = np.ones((3, 3), dtype=bool)
    mask[1, 1] = False
    loops = _parse_loops(gallery.boundary_path(mask))
    assert len(loops) == 2
    assert np.array_equal(_evenodd(loops, 3, 3), mask)
    assert gallery.boundary_path(np.zeros((4, 4), dtype=bool)) == ""


def test_tile_draws_the_set_only_when_there_is_one():
    m = _ring()
    bp, mask = gallery.birth_set(m, "cubical", {"resolution": 100, "threshold": 100})
    t = gallery.tile_html(m, bp, mask, "<x>")
    assert 'class="set"' in t and f"b={bp}" in t and "&lt;x&gt;" in t and "data:image/png;base64," in t
    assert 'class="set"' not in gallery.tile_html(m, 0, None, "t")


# --------------------------------------------------------------------------- figures and page pieces


def test_inline_svg_is_self_contained_with_unique_resolvable_ids():
    svgs = [
        figures.depth_figure([{"ylabel": "y", "series": [{"label": "a", "x": [0, 1, 2], "y": [1, 2, 1]}]}], p)
        for p in ("f1", "f2")
    ]
    for svg in svgs:
        assert svg.startswith("<svg") and "http" not in svg and "<!DOCTYPE" not in svg and "<?xml" not in svg
        ids = set(re.findall(r'\sid="([^"]+)"', svg))
        refs = set(re.findall(r'(?:href="#|url\(#)([^")]+)', svg))
        assert refs and refs <= ids
    ids1 = set(re.findall(r'\sid="([^"]+)"', svgs[0]))
    ids2 = set(re.findall(r'\sid="([^"]+)"', svgs[1]))
    assert not ids1 & ids2


def test_table_escapes_and_sorts_numbers_by_value():
    cols = [html.Column("name", "name", numeric=False), html.Column("v", "v")]
    t = html.table(cols, [{"name": "<script>alert(1)</script>", "v": 0.5}, {"name": "b", "v": float("nan")}])
    assert "<script>" not in t and "&lt;script&gt;" in t
    assert 'data-v="0.5"' in t and t.count("data-v=") == 1  # NaN sorts as text, not as a number


def test_page_has_a_strict_content_security_policy():
    page = html.Page("t", "s", [html.Section("a", "A", "<p>x</p>")]).render()
    assert "default-src 'none'" in page and "img-src data:" in page
    assert 'data-section="a"' in page and '<a href="#a">' in page
