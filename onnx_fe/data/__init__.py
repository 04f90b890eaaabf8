"""Stage 2 — data: labelled images (ImageFolder or .npz) and their preprocessing."""

from .dataset import IMAGE_EXTENSIONS, Dataset, check_npz_shape, load_image, open_dataset
from .preprocess import Preprocess, parse_floats, parse_size, resolve_preprocess

__all__ = [
    "IMAGE_EXTENSIONS",
    "Dataset",
    "Preprocess",
    "check_npz_shape",
    "load_image",
    "open_dataset",
    "parse_floats",
    "parse_size",
    "resolve_preprocess",
]
