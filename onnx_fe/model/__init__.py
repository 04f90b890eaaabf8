"""Stage 1 — model: find conv units in an ONNX graph, rewrite it (taps, masks) and run it with onnxruntime."""
