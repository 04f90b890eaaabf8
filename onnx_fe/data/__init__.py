"""Stage 2 — data: labelled images (ImageFolder or .npz) and their preprocessing."""

from .dataset import (
    IMAGE_EXTENSIONS,
    Dataset,
    check_npz_shape,
    file_digest,
    load_image,
    npz_layout,
    npz_preprocess,
    open_dataset,
    select_names,
    split_names,
)
from .preprocess import (
    INTEGER_INPUTS,
    Preprocess,
    check_per_channel,
    model_layout,
    parse_floats,
    parse_size,
    resolve_preprocess,
    resolve_scale,
    to_input_dtype,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "INTEGER_INPUTS",
    "Dataset",
    "Preprocess",
    "check_npz_shape",
    "check_per_channel",
    "file_digest",
    "load_image",
    "model_layout",
    "npz_layout",
    "npz_preprocess",
    "open_dataset",
    "parse_floats",
    "parse_size",
    "resolve_preprocess",
    "resolve_scale",
    "select_names",
    "split_names",
    "to_input_dtype",
]
