"""PNG plots (matplotlib is an optional extra: ``pip install 'onnx-fe[plot]'``).

matplotlib is imported only here and only when a plot is asked for; its object-oriented API is used with the
Agg canvas, so no global backend is switched.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import OnnxFeError

COLORS = {
    "feature_entropy": "#d62728",
    "ineffectiveness": "#ff7f0e",
    "mean_activation": "#1f77b4",
    "apoz": "#2ca02c",
    "weight_l1": "#9467bd",
    "random": "#7f7f7f",
}
EXTRA = ["#8c564b", "#e377c2", "#bcbd22", "#17becf"]
STYLES = {"most_important_first": "-", "least_important_first": "--"}


def require_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise OnnxFeError(
            "plots need matplotlib, which is not installed: pip install 'onnx-fe[plot]' (or pass --no-plot)"
        ) from None
    return Figure, FigureCanvasAgg


def _figure(nplots: int, ncols: int, w: float, h: float):
    Figure, Canvas = require_matplotlib()
    ncols = max(1, min(ncols, nplots))
    nrows = math.ceil(nplots / ncols)
    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    Canvas(fig)
    axes = [fig.add_subplot(nrows, ncols, k + 1) for k in range(nplots)]
    return fig, axes


def _color(by: str, seen: dict) -> str:
    if by in COLORS:
        return COLORS[by]
    if by not in seen:
        seen[by] = EXTRA[len(seen) % len(EXTRA)]
    return seen[by]


def plot_ablation(rows: list[dict], path, title: str = "", metric: str = "top1") -> Path:
    """Accuracy vs units removed: one panel per layer, one curve per indicator and order
    (solid: most important first, dashed: least important first; random: mean over seeds, band = min..max)."""
    path = Path(path)
    layers = sorted({(r["layer_index"], r["layer"], r["units"]) for r in rows})
    fig, axes = _figure(len(layers), 3, 5.2, 4.0)
    extra: dict = {}
    for ax, (idx, name, c) in zip(axes, layers):
        lrows = [r for r in rows if r["layer_index"] == idx]
        for by in dict.fromkeys(r["by"] for r in lrows):
            for order, style in STYLES.items():
                curves: dict = {}
                for r in lrows:
                    if r["by"] == by and r["order"] == order:
                        curves.setdefault(r["seed"], {})[r["removed"]] = r[metric]
                if not curves:
                    continue
                xs = sorted(next(iter(curves.values())))
                ys = np.array([[cv[x] for x in xs] for cv in curves.values()])
                label = (
                    f"{by}{f' (mean of {len(curves)})' if len(curves) > 1 else ''}, "
                    f"{'most' if order.startswith('most') else 'least'} important first"
                )
                col = _color(by, extra)
                ax.plot(xs, ys.mean(axis=0), style, color=col, lw=1.6, label=label)
                if len(curves) > 1:
                    ax.fill_between(xs, ys.min(axis=0), ys.max(axis=0), color=col, alpha=0.12, lw=0)
        ax.set_title(f"layer {idx} {name} ({c} units)", fontsize=10)
        ax.set_xlabel("units removed")
        ax.set_ylabel({"top1": "top-1 accuracy", "top5": "top-5 accuracy", "loss": "cross-entropy"}[metric])
        ax.set_xlim(0, c)
        if metric != "loss":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    try:  # below the panels (matplotlib >= 3.7), else inside the first one
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, max(1, len(labels) // 2)), fontsize=8)
    except Exception:
        axes[0].legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # legend and long titles are never cut off
    return path


def plot_compare(layer_rows: list[dict], path, title: str = "") -> Path:
    """Per-layer mean feature entropy and birth rate of several models, side by side."""
    path = Path(path)
    fig, axes = _figure(2, 2, 5.5, 4.0)
    from matplotlib.ticker import MaxNLocator

    models = list(dict.fromkeys(r["model"] for r in layer_rows))
    markers, styles = "os^Dvp*h", ["-", "--", ":", "-."]
    for ax, key, label in zip(axes, ("feature_entropy", "birth_rate"), ("mean feature entropy", "mean birth rate")):
        for k, m in enumerate(models):  # markers and dashes differ so that identical curves stay visible
            rs = sorted((r for r in layer_rows if r["model"] == m), key=lambda r: r["layer_index"])
            ax.plot(
                [r["layer_index"] for r in rs],
                [r[key] for r in rs],
                styles[k % 4],
                marker=markers[k % 8],
                lw=1.5,
                ms=7 - 1.2 * (k % 4),
                mfc="none" if k % 2 else None,
                label=m,
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Conv layer index")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # legend and long titles are never cut off
    return path
