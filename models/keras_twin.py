"""Rebuild digits_vgg in TensorFlow/Keras from the torch weights and export with tf2onnx.

Runs in the SEPARATE TensorFlow venv (never import torch here):

    /work/venv-tf/bin/python models/keras_twin.py WEIGHTS.npz OUT.onnx '{"in_ch":1,...}'

(normally called by ``python -m models.build --only keras``, which then compares
the two ONNX files with onnxruntime in the build venv).

The Keras model takes NCHW input like the torch export: a Permute layer turns
it into NHWC for the Keras Conv2D / MaxPooling2D layers ('same' padding == torch
padding=1 for 3x3 stride 1).  Conv kernels are transposed OIHW -> HWIO; the first
Dense kernel is permuted from torch's CHW flatten order to Keras' HWC order.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(weights_path: str, out_path: str, cfg_json: str) -> None:
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    tf.random.set_seed(0)
    cfg = json.loads(cfg_json)
    w = np.load(weights_path)
    # torch Sequential state_dict keys look like "<layer idx>.weight"
    idx = sorted({int(k.split(".")[0]) for k in w.files})
    convs = [(w[f"{i}.weight"], w[f"{i}.bias"]) for i in idx if w[f"{i}.weight"].ndim == 4]
    denses = [(w[f"{i}.weight"], w[f"{i}.bias"]) for i in idx if w[f"{i}.weight"].ndim == 2]
    assert len(convs) == len(cfg["widths"]) and not cfg.get("bn")

    c_in, s = cfg["in_ch"], cfg["in_size"]
    inp = keras.Input((c_in, s, s), name="input")
    x = keras.layers.Permute((2, 3, 1), name="to_nhwc")(inp)
    conv_layers = []
    for k, width in enumerate(cfg["widths"]):
        layer = keras.layers.Conv2D(width, 3, padding="same", name=f"conv{k + 1}")
        conv_layers.append(layer)
        x = layer(x)
        x = keras.layers.ReLU(name=f"relu{k + 1}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{k + 1}")(x)
        s //= 2
    x = keras.layers.Flatten(name="flatten")(x)
    dense_layers = []
    if cfg.get("hidden"):
        d = keras.layers.Dense(cfg["hidden"], name="fc1")
        dense_layers.append(d)
        x = keras.layers.ReLU(name="relu_fc1")(d(x))
    d = keras.layers.Dense(10, name="fc_out")
    dense_layers.append(d)
    out = d(x)
    model = keras.Model(inp, out)

    for layer, (wt, b) in zip(conv_layers, convs):
        layer.set_weights([wt.transpose(2, 3, 1, 0), b])  # OIHW -> HWIO
    c_last = cfg["widths"][-1]
    for j, (layer, (wt, b)) in enumerate(zip(dense_layers, denses)):
        if j == 0:  # torch flattens C,H,W ; keras flattens H,W,C
            wk = wt.reshape(wt.shape[0], c_last, s, s).transpose(2, 3, 1, 0).reshape(-1, wt.shape[0])
        else:
            wk = wt.T
        layer.set_weights([wk, b])

    spec = (tf.TensorSpec((None, c_in, cfg["in_size"], cfg["in_size"]), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    # name the output like the torch export
    old = proto.graph.output[0].name
    for n in proto.graph.node:
        for i, o in enumerate(n.output):
            if o == old:
                n.output[i] = "logits"
    proto.graph.output[0].name = "logits"
    onnx.checker.check_model(proto)
    onnx.save(proto, out_path, save_as_external_data=False)

    # self-check inside TF: keras vs its own onnx graph is checked by the caller
    x = np.random.default_rng(0).random((4, c_in, cfg["in_size"], cfg["in_size"]), dtype=np.float32)
    print("[keras] keras logits sample:", np.round(model(x).numpy()[0, :4], 4).tolist(), flush=True)
    print(
        f"[keras] wrote {out_path} (tensorflow {tf.__version__}, keras {keras.__version__}, "
        f"tf2onnx {tf2onnx.__version__})",
        flush=True,
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
