"""How image files become model input: size, layout, colour, scale, mean and std (pure; no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    note: str | None = field(default=None, compare=False)  # why a default was chosen (not a parameter)

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


# ONNX element types of integer model inputs (TensorProto values), whose models take pixel values as they are.
INTEGER_INPUTS = {2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64"}


def resolve_scale(scale: float | None, input_elem_type: int | None = None) -> tuple[float, str | None]:
    """The pixel scale to use and, when it was chosen for the user, a one-line note saying why.

    ``scale=None`` means "not given": 1/255 for float inputs, 1 (pixel values as they are) for integer inputs
    (uint8/int8 models are fed 0..255 pixels; 1/255 would turn every pixel into 0 or 1)."""
    if scale is not None:
        return float(scale), None
    kind = INTEGER_INPUTS.get(input_elem_type)
    if kind is not None:
        return 1.0, (
            f"note: the model takes {kind} input, so pixel values are fed as they are (--scale 1, not 1/255); "
            "pass --scale to change this"
        )
    return 1 / 255, None


def to_input_dtype(a: np.ndarray, dtype) -> np.ndarray:
    """Cast model input to the model's element type; for integer types values are rounded and must fit."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(dtype)
        r = np.rint(a)
        if r.size and (not np.isfinite(r).all() or r.min() < info.min or r.max() > info.max):
            lo, hi = float(np.nanmin(r)), float(np.nanmax(r))
            raise OnnxFeError(
                f"the model takes {dtype.name} input ({info.min}..{info.max}) but the preprocessed values lie in "
                f"{lo:g}..{hi:g}; choose --scale/--mean/--std that fit"
                + (" (e.g. --mean 128 for int8)" if dtype == np.int8 else "")
            )
        return np.ascontiguousarray(r.astype(dtype))
    return np.ascontiguousarray(a, dtype=dtype)


def check_per_channel(option: str, n: int, channels: int) -> None:
    """One value, or one per channel, for --mean/--std."""
    if n in (1, channels):
        return
    if channels == 1:
        raise OnnxFeError(f"{option} has {n} values but the model takes 1 channel (gray): give one value")
    raise OnnxFeError(f"{option} has {n} values; give 1 or {channels} (one per channel)")


def model_layout(input_shape: list) -> str | None:
    """nchw or nhwc as read from a 4-D input shape (None = dynamic dim), or None when it cannot be told."""
    _, d1, _, d3 = input_shape
    if d1 in (1, 3) or (d1 is not None and d3 not in (1, 3)):
        return "nchw"
    if d3 in (1, 3):
        return "nhwc"
    return None


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
    if not all(np.isfinite(vals)):
        raise OnnxFeError(f"{option} {text!r}: values must be finite numbers")
    return vals


def resolve_preprocess(
    input_shape: list,
    input_size=None,
    layout="auto",
    color=None,
    scale=1 / 255,
    mean=None,
    std=None,
    input_elem_type: int | None = None,
) -> Preprocess:
    """Fill preprocessing defaults from the model's 4-D input shape (None = dynamic dim).

    ``scale=None``: the default for the model's input type (see :func:`resolve_scale`); the note saying so
    is in the result's ``note``."""
    if layout not in ("auto", "nchw", "nhwc"):
        raise OnnxFeError(f"--layout {layout!r}: choose auto, nchw or nhwc")
    _, d1, d2, d3 = input_shape
    if layout == "auto":
        layout = model_layout(input_shape)
        if layout is None:
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
    scale, note = resolve_scale(scale, input_elem_type)
    if not np.isfinite(scale):
        raise OnnxFeError("--scale must be a finite number")
    mean = tuple(float(v) for v in mean) if mean is not None else (0.0,)
    std = tuple(float(v) for v in std) if std is not None else (1.0,)
    for name, v in (("--mean", mean), ("--std", std)):
        check_per_channel(name, len(v), want_c)
        if not all(np.isfinite(v)):
            raise OnnxFeError(f"{name} must hold finite numbers, got {', '.join(f'{x:g}' for x in v)}")
    if any(s == 0 for s in std):
        raise OnnxFeError("--std must not contain 0")
    return Preprocess(height=h, width=w, layout=layout, color=color, scale=float(scale), mean=mean, std=std, note=note)
