"""The report's figures, drawn with matplotlib (the ``plot`` extra) and returned as text for inlining.

Line and box plots become inline SVG (text kept as text, so they stay small and sharp); images (heatmaps) become
base64 PNG data URIs, which are far smaller than one SVG rectangle per cell. Every function takes plain numbers
and returns a string: no file is read or written here.
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np

from .plots import require_matplotlib

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
INDICATOR_COLORS = {
    "feature_entropy": "#d62728",
    "ineffectiveness": "#ff7f0e",
    "mean_activation": "#1f77b4",
    "apoz": "#2ca02c",
    "weight_l1": "#9467bd",
    "hrank": "#8c564b",
    "activation_std": "#17becf",
    "random": "#7f7f7f",
}
NULL_COLOR = "#7f7f7f"
CONTROL_COLOR = "#ff7f0e"
RC = {
    "svg.fonttype": "none",  # text stays text: small files, the page's own font
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "legend.fontsize": 8,
}
_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


def _figure(w: float, h: float, ncols: int = 1, nrows: int = 1, sharex=False):
    Figure, Canvas = require_matplotlib()
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(w, h), layout="constrained")
        Canvas(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex)
    return fig, [a for row in axes for a in row]


def inline_svg(svg: str, prefix: str) -> str:
    """Make matplotlib's SVG document fit inside an HTML page: drop the XML prolog, DOCTYPE, namespaces and
    metadata, drop ids nothing refers to, and prefix the others so that several figures never share an id."""
    svg = re.sub(r"<\?xml[^>]*\?>\s*", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg)
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    svg = re.sub(r'\s+version="1\.1"', "", svg)
    used = set(re.findall(r"#([A-Za-z_][\w.\-]*)", " ".join(re.findall(r'(?:href="[^"]*"|url\([^)]*\))', svg))))

    def _id(m):
        i = m.group(1)
        return f' id="{prefix}-{i}"' if i in used else ""

    svg = re.sub(r'\s+id="([^"]*)"', _id, svg)
    svg = re.sub(r'(href="#|url\(#)([A-Za-z_][\w.\-]*)', lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg)
    svg = re.sub(r"\n\s*", "\n", svg)  # indentation is most of the bytes of deep groups
    svg = re.sub(r"<svg\b", '<svg class="fig" role="img"', svg, count=1)
    return svg.strip()


def to_svg(fig, prefix: str) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({**RC, "svg.hashsalt": prefix}):
        fig.savefig(buf, format="svg", metadata=_METADATA, dpi=150)  # dpi: rasterized parts only
    return inline_svg(buf.getvalue(), prefix)


def to_png_uri(fig, dpi: int = 100) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- FE against depth


def _series(ax, s: dict, color: str):
    x, y = np.asarray(s["x"], dtype=float), np.asarray(s["y"], dtype=float)
    style = s.get("style", "-")
    ax.plot(
        x, y, style, color=color, marker=s.get("marker", "o"), ms=4, lw=1.5, label=s["label"], mfc=s.get("mfc", color)
    )
    band = s.get("band")
    if band is not None:
        lo, hi = np.asarray(band[0], dtype=float), np.asarray(band[1], dtype=float)
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=color, alpha=s.get("alpha", 0.15), lw=0, label=s.get("band_label"))


def depth_figure(
    panels: list[dict], prefix: str, xlabel: str = "Conv layer index", integer_x: bool = True, ncols: int | None = None
) -> str:
    """Panels of lines against depth, ``ncols`` a row. Each panel: ``{"ylabel", "series": [{"label", "x", "y",
    "band": (lo, hi) | None, "band_label", "color", "style", "marker"}], "ylim": (lo, hi) | None, "zero": bool}``."""
    from matplotlib.ticker import MaxNLocator

    ncols = max(1, min(ncols or len(panels), len(panels)))
    nrows = -(-len(panels) // ncols)
    fig, axes = _figure(4.2 * ncols, 3.6 * nrows, ncols=ncols, nrows=nrows)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    for ax, p in zip(axes, panels):
        for k, s in enumerate(p["series"]):
            _series(ax, s, s.get("color") or PALETTE[k % len(PALETTE)])
        if integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(p["ylabel"])
        if p.get("ylim"):
            ax.set_ylim(*p["ylim"])
        if p.get("zero"):
            ax.axhline(0, color="#999999", lw=0.8)
        ax.grid(alpha=0.3, lw=0.6)
        n = len(ax.get_legend_handles_labels()[1])
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2 if n > 2 else n, fontsize=7.5)
    return to_svg(fig, prefix)


# --------------------------------------------------------------------------- distributions


def distribution_figure(
    groups: list[dict], prefix: str, ylabel: str = "unit feature entropy", max_points: int = 4000
) -> str:
    """Box plots of unit values per layer. ``groups``: ``{"label", "values", "marker": float | None,
    "control": array | None}``; ``marker`` (e.g. the noise null) is drawn as a grey bar, ``control`` as a second
    box beside the layer's. Individual units are drawn as dots when there are at most ``max_points`` of them."""
    n = len(groups)
    fig, (ax,) = _figure(
        float(np.clip(1.6 + 0.55 * n * (1.5 if any(g.get("control") is not None for g in groups) else 1), 5.5, 11.0)),
        3.4,
    )
    has_control = any(g.get("control") is not None for g in groups)
    width = 0.36 if has_control else 0.6
    total = sum(len(g["values"]) for g in groups)
    rng = np.random.default_rng(0)
    xs = np.arange(n, dtype=float)
    for i, g in enumerate(groups):
        v = np.asarray(g["values"], dtype=float)
        v = v[np.isfinite(v)]
        pos = xs[i] - (0.2 if has_control else 0.0)
        if v.size:
            ax.boxplot(
                [v],
                positions=[pos],
                widths=width,
                whis=(5, 95),
                showfliers=False,
                patch_artist=True,
                boxprops={"facecolor": "#d6e4f0", "edgecolor": PALETTE[0]},
                medianprops={"color": PALETTE[0], "lw": 1.6},
                whiskerprops={"color": PALETTE[0]},
                capprops={"color": PALETTE[0]},
            )
            if total <= max_points:
                ax.plot(
                    pos + rng.uniform(-width / 3, width / 3, v.size),
                    v,
                    ".",
                    color="#333333",
                    ms=2.2,
                    alpha=0.55,
                    rasterized=True,
                )  # one small image instead of one SVG element per unit
        c = g.get("control")
        if c is not None:
            c = np.asarray(c, dtype=float)
            c = c[np.isfinite(c)]
            if c.size:
                ax.boxplot(
                    [c],
                    positions=[xs[i] + 0.2],
                    widths=width,
                    whis=(5, 95),
                    showfliers=False,
                    patch_artist=True,
                    boxprops={"facecolor": "#fde3c8", "edgecolor": CONTROL_COLOR},
                    medianprops={"color": CONTROL_COLOR, "lw": 1.6},
                    whiskerprops={"color": CONTROL_COLOR},
                    capprops={"color": CONTROL_COLOR},
                )
        m = g.get("marker")
        if m is not None and np.isfinite(m):
            ax.plot([xs[i] - 0.42, xs[i] + 0.42], [m, m], "-", color=NULL_COLOR, lw=2.2, alpha=0.8)
    ax.set_xticks(xs)
    ax.set_xticklabels([g["label"] for g in groups], rotation=0 if n <= 16 else 90)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("Conv layer index")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3, lw=0.6)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="#d6e4f0", edgecolor=PALETTE[0], label="units (box: quartiles, whiskers: 5–95 %)")]
    if has_control:
        handles.append(Patch(facecolor="#fde3c8", edgecolor=CONTROL_COLOR, label="control units"))
    if any(g.get("marker") is not None and np.isfinite(g["marker"]) for g in groups):
        handles.append(Line2D([], [], color=NULL_COLOR, lw=2.2, label="noise null (same map size)"))
    ax.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.01),
        ncol=min(2, len(handles)),
        borderaxespad=0.1,
        fontsize=7.5,
    )
    return to_svg(fig, prefix)


# --------------------------------------------------------------------------- heatmap


def heatmap_png(fe: np.ndarray, br: np.ndarray, classes: list[str], units: np.ndarray, title: str) -> str:
    """Class × unit feature entropy as a PNG data URI. Columns: ``units`` in the given order; cells whose class has
    no birth point for the unit (FE is 0 by definition there) are shown in a separate light grey."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    k, c = fe.shape
    a = np.asarray(fe, dtype=float)[:, units]
    nob = np.asarray(br, dtype=float)[:, units] == 0
    w = float(np.clip(2.8 + 0.045 * c, 5.0, 11.0))
    h = float(np.clip(1.6 + 0.2 * k, 2.4, 9.0))
    fig, (ax,) = _figure(w, h)
    vmax = np.nanmax(a) if np.isfinite(a).any() and np.nanmax(a) > 0 else 1.0
    im = ax.imshow(np.where(nob, np.nan, a), aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=vmax)
    ax.imshow(
        np.where(nob, 1.0, np.nan),
        aspect="auto",
        interpolation="nearest",
        cmap=ListedColormap(["#e6e6e6"]),
        vmin=0,
        vmax=1,
    )
    ax.set_xlabel(f"{c} units in feature-entropy rank order (most important left)")
    if k <= 40:
        ax.set_yticks(range(k))
        ax.set_yticklabels(classes)
    else:
        ax.set_ylabel(f"class ({k})")
    if c <= 64:
        ax.set_xticks(range(c))
        ax.set_xticklabels([str(int(u)) for u in units], fontsize=6, rotation=90)
    else:
        ax.set_xticks([])
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.01)
    cb.set_label("feature entropy")
    if nob.any():
        ax.legend(
            handles=[Patch(facecolor="#e6e6e6", label="no birth point in the class")],
            loc="lower left",
            bbox_to_anchor=(0.0, 1.0),
            fontsize=7.5,
            borderaxespad=0.2,
        )
    return to_png_uri(fig, dpi=96)


# --------------------------------------------------------------------------- rank agreement


def agreement_figure(rows: list[dict], baselines, prefix: str) -> str:
    """Spearman's ρ between the feature-entropy importance and each baseline's, per layer."""
    from matplotlib.ticker import MaxNLocator

    fig, (ax,) = _figure(5.6, 3.1)
    x = [r["layer_index"] for r in rows]
    for b in baselines:
        y = [r.get(f"rho_{b}", np.nan) for r in rows]
        if np.isfinite(np.asarray(y, dtype=float)).any():
            ax.plot(x, y, "o-", color=INDICATOR_COLORS.get(b, "#333333"), ms=4, lw=1.5, label=b)
    ax.axhline(0, color="#999999", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Conv layer index")
    ax.set_ylabel("Spearman ρ with feature entropy")
    ax.grid(alpha=0.3, lw=0.6)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_svg(fig, prefix)


# --------------------------------------------------------------------------- ablation


def ablation_figure(rows: list[dict], prefix: str, metric: str = "top1") -> str:
    """Accuracy against the fraction of units removed, one panel per layer, one colour per indicator
    (solid: most important first, dashed: least important first; several random seeds: mean and min–max band)."""
    layers = sorted({(r["layer_index"], r["layer"], r["units"]) for r in rows})
    ncols = min(3, len(layers))
    nrows = -(-len(layers) // ncols)
    fig, axes = _figure(3.9 * ncols + 1.8, 3.0 * nrows, ncols=ncols, nrows=nrows)
    for ax, (idx, name, c) in zip(axes, layers):
        lrows = [r for r in rows if r["layer_index"] == idx]
        for by in dict.fromkeys(r["by"] for r in lrows):
            for order, style in (("most_important_first", "-"), ("least_important_first", "--")):
                curves: dict = {}
                for r in lrows:
                    if r["by"] == by and r["order"] == order:
                        curves.setdefault(r["seed"], {})[r["fraction_removed"]] = r[metric]
                if not curves:
                    continue
                xs = sorted(set.intersection(*(set(cv) for cv in curves.values())))
                ys = np.array([[cv[x] for x in xs] for cv in curves.values()], dtype=float)
                col = INDICATOR_COLORS.get(by, "#333333")
                label = by if order == "most_important_first" else None
                ax.plot(xs, ys.mean(axis=0), style, color=col, lw=1.5, label=label)
                if len(curves) > 1:
                    ax.fill_between(xs, ys.min(axis=0), ys.max(axis=0), color=col, alpha=0.12, lw=0)
        ax.set_title(f"layer {idx} {name} ({c} units)")
        ax.set_xlabel("fraction of units removed")
        ax.set_ylabel({"top1": "top-1 accuracy", "top5": "top-5 accuracy", "loss": "cross-entropy"}[metric])
        if metric != "loss":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3, lw=0.6)
    for ax in axes[len(layers) :]:
        ax.set_axis_off()
    from matplotlib.lines import Line2D

    handles, labels = axes[0].get_legend_handles_labels()
    handles += [
        Line2D([], [], color="#333333", ls="-", label="most important first"),
        Line2D([], [], color="#333333", ls="--", label="least important first"),
    ]
    axes[ncols - 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_svg(fig, prefix)


# --------------------------------------------------------------------------- validity


def validity_figure(items: list[dict], prefix: str, xlabel: str = "Spearman ρ with delta_loss") -> str:
    """Forest plot: one row per indicator (top to bottom in the given order), its pooled value as a black dot with
    its CI as a line, and its per-layer values as small open dots. ``items``: ``{"label", "value", "low", "high",
    "layers": [values]}``; NaN values are not drawn."""
    n = len(items)
    fig, (ax,) = _figure(6.4, 0.9 + 0.32 * n)
    seen: set = set()

    def once(label):
        if label in seen:
            return None
        seen.add(label)
        return label

    for k, it in enumerate(items):
        yk = n - 1 - k
        lay = np.asarray(it.get("layers") or [], dtype=float)
        lay = lay[np.isfinite(lay)]
        if lay.size:
            ax.plot(
                lay,
                np.full(lay.size, yk),
                "o",
                ms=3.2,
                mfc="none",
                mec="#8a8a8a",
                mew=0.8,
                alpha=0.9,
                label=once("per layer"),
            )
        lo, hi, v = (float(it.get(key, np.nan)) for key in ("low", "high", "value"))
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [yk, yk], "-", color="#222222", lw=1.6, label=once("pooled CI"))
        if np.isfinite(v):
            ax.plot([v], [yk], "o", color="#222222", ms=5.5, label=once("pooled"))
    ax.axvline(0, color="#999999", lw=0.8)
    ax.set_yticks(range(n))
    ax.set_yticklabels([it["label"] for it in reversed(items)])
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3, lw=0.6)
    h, lab = ax.get_legend_handles_labels()
    if h:
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=7.5)
    return to_svg(fig, prefix)
