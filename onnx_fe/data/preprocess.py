"""How image files become model input: size, layout, colour, scale, mean and std (pure; no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OnnxFeError


@dataclass
class Preprocess:
    """How image files become model input (ignored for ``.npz`` data)."""

    height: int
    width: int
    layout: str = "nchw"  # nchw | nhwc
    color: str = "rgb"  # rgb | bgr | gray
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def as_dict(self) -> dict:
        return {
            "height": self.height,
            "width": self.width,
            "layout": self.layout,
            "color": self.color,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    t = text.lower().replace("×", "x")
    parts = t.split("x") if "x" in t else [t, t]
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise OnnxFeError(f"--input-size {text!r}: expected HxW, e.g. 224x224") from None
    if h < 1 or w < 1:
        raise OnnxFeError(f"--input-size {text!r}: sizes must be positive")
    return h, w


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        raise OnnxFeError(f"{option} {text!r}: expected a number or comma-separated numbers") from None
    if not vals:
        raise OnnxFeError(f"{option} is empty")
    return vals


def resolve_preprocess(
    input_shape: list, input_size=None, layout="auto", color=None, scale=1 / 255, mean=None, std=None
) -> Preprocess:
    """Fill preprocessing defaults from the model's 4-D input shape (None = dynamic dim)."""
    if layout not in ("auto", "nchw", "nhwc"):
        raise OnnxFeError(f"--layout {layout!r}: choose auto, nchw or nhwc")
    _, d1, d2, d3 = input_shape
    if layout == "auto":
        if d1 in (1, 3) or (d1 is not None and d3 not in (1, 3)):
            layout = "nchw"
        elif d3 in (1, 3):
            layout = "nhwc"
        else:
            raise OnnxFeError(
                "cannot tell the model's input layout (channel dim is dynamic); pass --layout nchw or nhwc"
            )
    c, h, w = (d1, d2, d3) if layout == "nchw" else (d3, d1, d2)
    if input_size is not None:
        ih, iw = input_size
        if (h is not None and h != ih) or (w is not None and w != iw):
            raise OnnxFeError(f"--input-size {ih}x{iw} disagrees with the model's fixed input {h}x{w}")
        h, w = ih, iw
    if h is None or w is None:
        raise OnnxFeError("the model's input height/width are dynamic: pass --input-size HxW")
    if color is None:
        color = "gray" if c == 1 else "rgb"
    if color not in ("rgb", "bgr", "gray"):
        raise OnnxFeError(f"--color {color!r}: choose rgb, bgr or gray")
    want_c = 1 if color == "gray" else 3
    if c is not None and c != want_c:
        raise OnnxFeError(f"--color {color} gives {want_c} channel(s) but the model expects {c}")
    if scale is None or not np.isfinite(scale):
        raise OnnxFeError("--scale must be a finite number")
    mean = tuple(mean) if mean is not None else (0.0,)
    std = tuple(std) if std is not None else (1.0,)
    for name, v in (("mean", mean), ("std", std)):
        if len(v) not in (1, want_c):
            raise OnnxFeError(f"--{name} has {len(v)} values; give 1 or {want_c} (one per channel)")
    if any(s == 0 for s in std):
        raise OnnxFeError("--std must not contain 0")
    return Preprocess(height=h, width=w, layout=layout, color=color, scale=float(scale), mean=mean, std=std)
