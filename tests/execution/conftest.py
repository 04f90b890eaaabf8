"""The reference every executor must reproduce bit for bit: the zoo model scored in this process."""

from __future__ import annotations

import pytest
from shards import DATA, MODEL, contents


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """Serial runs (one process, one thread, one batch of 32) of the zoo model, both methods, 3 images a class."""
    import onnx_fe

    root = tmp_path_factory.mktemp("reference")
    refs = {}
    for method in ("cubical", "clique"):
        r = onnx_fe.score(
            MODEL,
            DATA,
            root / method,
            method=method,
            images_per_class=3,
            workers=1,
            device="cpu",
            keep_activations=True,
        )
        refs[method] = contents(r)
    return refs
