"""The unit gallery: a few units' feature maps, recomputed from the model, with the superlevel set at the birth step.

Maps are not stored by a normal ``score`` run, so the few that the gallery shows are computed again: the model
named in the results file (checked against its SHA-256) runs on the chosen images with the stored preprocessing,
through the same graph taps and onnxruntime runner as ``score``. The recomputed birth points are compared with the
stored ones and the report says how many agree.

What is drawn over a map is the set of pixels present in the filtration when its first hole is born:

* cubical: the superlevel set of the map's dense rank at the rank where the first H1 class of positive persistence
  is born (its size, as a fraction of the map, quantised into ``resolution`` steps, is the birth point);
* clique: the entries (i, j) of max(U, Uᵀ) whose edge has entered the flag filtration at the birth index.

The pure helpers (:func:`birth_set`, :func:`tile_html`, :func:`boundary_path`) take arrays and return arrays or
text; :func:`recompute` is the only part that reads the model and the images.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, ModelError

# --------------------------------------------------------------------------- pure helpers


def birth_set(m: np.ndarray, method: str, params: dict) -> tuple[int, np.ndarray | None]:
    """Birth point of one map and the pixel set present when its first hole is born.

    Returns ``(birth_point, mask)``; ``mask`` is None when the map has no birth point (0). The birth point is the
    one :func:`onnx_fe.birth_points` gives (tested), the mask the superlevel set that holds the hole.
    """
    m = np.asarray(m, dtype=np.float64)
    if method == "clique":
        return _clique_set(m, params)
    return _cubical_set(m, params)


def _cubical_set(m, params):
    import cripser

    from ..topology import dense_rank

    h, w = m.shape
    if h < 2 or w < 2:
        return 0, None
    ranks, srt = dense_rank(m[None])
    if srt[0, -1] == 0:
        return 0, None
    ph = cripser.computePH(ranks[0], maxdim=1, top_dim=True)
    births = ph[(ph[:, 0] == 1) & (ph[:, 2] > ph[:, 1]), 1]
    if len(births) == 0:
        return 0, None
    b = births.min()
    mask = ranks[0] <= b
    npix = h * w
    step = (int(params["resolution"]) * int(mask.sum()) + npix - 1) // npix
    if step > int(params["threshold"]):
        return 0, None
    return int(step), mask


def _clique_set(m, params):
    from ..topology.clique import clique_birth_points

    h, w = m.shape
    if h != w:
        return 0, None
    bp = int(
        clique_birth_points(m[None], threshold=params["threshold"], max_edge_density=params["max_edge_density"])[0]
    )
    if bp == 0:
        return 0, None
    s = np.maximum(m, m.T)
    off = ~np.eye(h, dtype=bool)
    vals = np.unique(s[off])[::-1]  # distinct off-diagonal values, largest first
    rank = np.searchsorted(-vals, -s) + 1  # 1-based dense rank, descending
    return bp, (rank <= bp + 1) & off  # birth row r is filtration index r + 1


def boundary_path(mask: np.ndarray) -> str:
    """SVG path data of a pixel set (unit squares) as closed loops along its boundary.

    Filled with ``fill-rule: evenodd`` the path covers exactly the set (holes stay open); stroked, it outlines it.
    Straight runs are merged, so a path costs a few characters per corner."""
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    adj: dict = {}

    def add(a, b):
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)

    hy, hx = np.nonzero(m[1:, 1:-1] != m[:-1, 1:-1])  # horizontal edge (x, y)-(x+1, y)
    for y, x in zip(hy.tolist(), hx.tolist()):
        add((x, y), (x + 1, y))
    vy, vx = np.nonzero(m[1:-1, 1:] != m[1:-1, :-1])  # vertical edge (x, y)-(x, y+1)
    for y, x in zip(vy.tolist(), vx.tolist()):
        add((x, y), (x, y + 1))
    parts = []
    for start in sorted(adj):
        while adj[start]:
            pts = [start]
            cur = start
            while True:
                nxt = adj[cur].pop()
                adj[nxt].remove(cur)
                pts.append(nxt)
                cur = nxt
                if cur == start or not adj[cur]:
                    break
            parts.append(_loop(pts))
    return "".join(parts)


def _loop(pts) -> str:
    out = [f"M{pts[0][0]} {pts[0][1]}"]
    i = 1
    while i < len(pts):
        dx, dy = pts[i][0] - pts[i - 1][0], pts[i][1] - pts[i - 1][1]
        n = 1
        while i + n < len(pts) and (pts[i + n][0] - pts[i + n - 1][0], pts[i + n][1] - pts[i + n - 1][1]) == (dx, dy):
            n += 1
        out.append(f"h{dx * n}" if dx else f"v{dy * n}")
        i += n
    if pts[-1] == pts[0]:
        out[-1] = "z"  # the last run ends where the loop began
    return "".join(out)


def _runs(row: np.ndarray):
    r = np.asarray(row, dtype=np.int8)
    d = np.diff(np.r_[0, r, 0])
    return zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist())


def gray_png_uri(a: np.ndarray) -> str:
    """A 2-D array as an 8-bit greyscale PNG data URI, scaled min..max (a constant map is mid-grey)."""
    from PIL import Image

    a = np.asarray(a, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    g = np.full(a.shape, 128, np.uint8) if hi <= lo else np.rint((a - lo) / (hi - lo) * 255).astype(np.uint8)
    return png_uri(Image.fromarray(g, "L"))


def png_uri(im) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def photo_uri(im) -> str:
    """An input image as the smaller of a PNG and a JPEG (quality 90): noisy photos are far smaller as JPEG."""
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    jpg = buf.getvalue()
    png = png_uri(im)
    if len(jpg) * 4 // 3 < len(png) * 0.8:
        return "data:image/jpeg;base64," + base64.b64encode(jpg).decode("ascii")
    return png


def tile_html(m: np.ndarray, bp: int, mask: np.ndarray | None, title: str) -> str:
    """One map as an inline SVG: the map in grey (min..max), the birth set filled and outlined over it."""
    h, w = m.shape
    over = ""
    if mask is not None:
        over = f'<path class="set" d="{boundary_path(mask)}"/>'
    cap = f"b={bp}" if bp else "none"
    return (
        f'<figure class="tile"><svg viewBox="0 0 {w} {h}" preserveAspectRatio="none">'
        f"<title>{html.escape(title)}</title>"
        f'<image width="{w}" height="{h}" href="{gray_png_uri(m)}"/>{over}</svg>'
        f"<figcaption>{cap}</figcaption></figure>"
    )


# --------------------------------------------------------------------------- recomputation (reads model + images)


@dataclass
class GalleryMaps:
    """Recomputed maps of chosen units on chosen images, per layer."""

    rows: list[int]  # image rows of the results file
    thumbs: list[str]  # PNG data URIs of the inputs as the model sees them (after resizing / colour conversion)
    maps: dict = field(default_factory=dict)  # layer index → (images, units, H, W) float32 of the chosen units
    units: dict = field(default_factory=dict)  # layer index → chosen unit indices
    model_path: Path | None = None
    data_path: Path | None = None
    device: str = "cpu"


def _candidates(stored: str, run_dir: Path, override) -> list[Path]:
    if override is not None:
        return [Path(override)]
    p = Path(stored)
    if p.is_absolute():
        return [p]
    out = [Path.cwd() / p]
    for d in [run_dir, *run_dir.parents]:
        out.append(d / p)
    return out


def locate(stored: str, run_dir: Path, override, what: str) -> Path:
    """Find the model or data a results file names: as given (``--model``/``--data``), else as stored (relative to
    the working directory, then to the results directory and its parents)."""
    for c in _candidates(stored, run_dir, override):
        if c.exists():
            return c
    flag = "--model" if what == "model" else "--data"
    err = ModelError if what == "model" else DataError
    if override is not None:
        raise err(f"{what} not found: {override}")
    raise err(f"the scored {what} {stored} is not found from here (pass {flag})")


def _thumb(run, data_path: Path, row: int, pre) -> str:
    from PIL import Image

    rid = run.image_ids[row]
    if rid.startswith("index:"):
        from ..data.dataset import npz_rows

        x = np.asarray(npz_rows(data_path, [int(rid.split(":", 1)[1])])[0], dtype=np.float64)
        layout = (run.params.get("preprocess") or {}).get("layout", "nchw")
        x = x.transpose(1, 2, 0) if layout == "nchw" else x
        lo, hi = float(x.min()), float(x.max())
        g = np.full(x.shape, 128, np.uint8) if hi <= lo else np.rint((x - lo) / (hi - lo) * 255).astype(np.uint8)
        im = Image.fromarray(g[:, :, 0], "L") if g.shape[2] == 1 else Image.fromarray(g[:, :, :3], "RGB")
        return photo_uri(im)
    with Image.open(data_path / rid) as im:
        im.load()
        im = im.convert("L" if pre.color == "gray" else "RGB")
        if im.size != (pre.width, pre.height):
            im = im.resize((pre.width, pre.height), Image.BILINEAR)
        return photo_uri(im)


def preprocess_from(stored: dict):
    """The :class:`~onnx_fe.data.Preprocess` a run stored (``params["preprocess"]``), as the run used it."""
    import dataclasses

    from ..data import Preprocess

    names = {f.name for f in dataclasses.fields(Preprocess)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in stored.items() if k in names}
    try:
        return Preprocess(**kw)
    except TypeError as e:
        raise DataError(f"the results' preprocessing cannot be read back: {e}") from None


def recompute(
    run, layer_units: dict, rows: list[int], *, model=None, data=None, device="cpu", advance=None
) -> GalleryMaps:
    """Run the scored model on the chosen images and keep the maps of the chosen units of each layer.

    ``layer_units``: layer index → unit indices. ``model``/``data``: where the model and data are when the paths
    stored in the results do not resolve from here. Raises :class:`OnnxFeError` with the reason when the maps
    cannot be recomputed (model or data not found, model changed since it was scored)."""
    from ..data import load_image
    from ..model.graph import load_model
    from ..model.runner import make_runner

    model_path = locate(str(run.attrs.get("model_path", "")), run.directory, model, "model")
    lm = load_model(model_path)
    want = str(run.attrs.get("model_sha256", ""))
    if want and lm.sha256 != want:
        raise ModelError(f"{model_path} is not the model that was scored (its SHA-256 differs from the results')")
    data_path = locate(str(run.attrs.get("data_source", "")), run.directory, data, "data")
    by_index = {u.index: u for u in lm.units}
    units = []
    for lay in run.layers:
        if lay.index not in layer_units:
            continue
        u = by_index.get(lay.index)
        if u is None or u.tap != lay.tap:
            u = next((v for v in lm.units if v.name == lay.name and v.tap == lay.tap), None)
        if u is None:
            raise ModelError(f"layer {lay.index} {lay.name} is not found in {model_path.name}")
        units.append((lay.index, u))
    runner = make_runner(lm, [u for _, u in units], device=device, threads=2)
    pre_d = dict(run.params.get("preprocess") or {})
    is_npz = "npz" in pre_d or any(run.image_ids[r].startswith("index:") for r in rows)
    if is_npz:
        from ..data.dataset import npz_rows

        x = npz_rows(data_path, [int(run.image_ids[r].split(":", 1)[1]) for r in rows])
        pre = None
    else:
        pre = preprocess_from(pre_d)
        for r in rows:
            if not (data_path / run.image_ids[r]).exists():
                raise DataError(f"image {run.image_ids[r]} is not in {data_path} (pass --data)")
        x = np.stack([load_image(data_path / run.image_ids[r], pre) for r in rows])
    try:
        outs = dict(zip(runner.outputs, runner.run(x.astype(runner.input_dtype, copy=False))))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"inference failed while recomputing the gallery's maps: {msg}") from None
    thumbs = [_thumb(run, data_path, r, pre) for r in rows]
    g = GalleryMaps(rows=list(rows), thumbs=thumbs, model_path=model_path, data_path=data_path, device=runner.device)
    for idx, u in units:
        sel = np.asarray(layer_units[idx], dtype=np.int64)
        g.maps[idx] = np.asarray(outs[u.tap])[:, sel].astype(np.float32)
        g.units[idx] = sel
        if advance is not None:
            advance(1)
    return g
