"""Issue 11, data side: content fingerprints, pixel modes with no 8-bit range, npz contents, class names, options."""

import shutil

import numpy as np
import pytest
from graphs import write_image_folder
from PIL import Image

from onnx_fe.data import (
    Preprocess,
    load_image,
    npz_preprocess,
    open_dataset,
    parse_floats,
    resolve_preprocess,
    resolve_scale,
    select_names,
    to_input_dtype,
)
from onnx_fe.errors import OnnxFeError


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.strip() == msg and not msg.endswith(" .")
    return msg


# --------------------------------------------------------------------------- content fingerprint


def test_fingerprint_changes_when_image_contents_change_but_not_names(tmp_path):
    data = write_image_folder(tmp_path / "d", n_classes=2, per_class=3)
    before = open_dataset(data).fingerprint()
    assert len(before) == 64 and int(before, 16) >= 0
    assert open_dataset(data).fingerprint() == before  # deterministic
    for p in sorted(data.rglob("*.png")):  # invert every image in place: same names, same labels
        a = np.asarray(Image.open(p))
        Image.fromarray(255 - a).save(p)
    after = open_dataset(data)
    assert after.ids == open_dataset(data).ids
    assert after.fingerprint() != before


def test_fingerprint_is_that_of_the_contents_not_of_the_location(tmp_path):
    data = write_image_folder(tmp_path / "d", n_classes=2, per_class=3)
    copy = tmp_path / "elsewhere"
    shutil.copytree(data, copy)
    assert open_dataset(copy).fingerprint() == open_dataset(data).fingerprint()
    one = sorted(copy.rglob("*.png"))[-1]  # one pixel of one file
    a = np.array(Image.open(one))
    a[0, 0, 0] ^= 1
    Image.fromarray(a).save(one)
    assert open_dataset(copy).fingerprint() != open_dataset(data).fingerprint()
    # the selection counts too: fewer images per class is other data
    assert open_dataset(data, images_per_class=2).fingerprint() != open_dataset(data).fingerprint()


def test_npz_fingerprint_follows_x_contents(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, 4, 4)).astype(np.float32)
    y = np.array([0, 0, 0, 1, 1, 1])
    np.savez(tmp_path / "a.npz", x=x, y=y)
    np.savez(tmp_path / "b.npz", x=1 - x, y=y)  # same shape, same labels, same size on disk
    np.savez(tmp_path / "c.npz", x=x, y=y)
    fa, fb, fc = (open_dataset(tmp_path / f"{n}.npz").fingerprint() for n in "abc")
    assert fa == fc and fa != fb
    np.savez(tmp_path / "d.npz", x=x.astype(np.float64), y=y)  # same values, other dtype: other input
    assert open_dataset(tmp_path / "d.npz").fingerprint() != fa


def test_an_image_changed_after_the_dataset_was_opened_is_refused_at_load(tmp_path):
    data = write_image_folder(tmp_path / "d", n_classes=2, per_class=2)
    ds = open_dataset(data)
    pre = Preprocess(16, 16, "nchw", "rgb")
    ds.load(0, 2, pre)  # unchanged: fine
    victim = data / ds.ids[3]
    Image.fromarray(255 - np.asarray(Image.open(victim))).save(victim)
    ds.load(0, 2, pre)  # other images still load
    with pytest.raises(OnnxFeError, match="changed while it was in use") as e:
        ds.load(2, 4, pre)
    assert str(victim) in _one_line(e)


# --------------------------------------------------------------------------- pixel modes


def test_mode_I_with_no_defined_range_is_refused_with_one_line(tmp_path):
    d = tmp_path / "d" / "a"
    d.mkdir(parents=True)
    Image.fromarray(np.arange(64, dtype=np.int32).reshape(8, 8) * 100000, "I").save(d / "big.tif")
    with pytest.raises(OnnxFeError, match=r"32-bit integer pixels \(PIL mode I") as e:
        open_dataset(tmp_path / "d")  # refused when the data is opened, before any work
    assert "big.tif" in _one_line(e)
    with pytest.raises(OnnxFeError, match="mode I"):
        load_image(d / "big.tif", Preprocess(8, 8, "nchw", "gray", scale=1.0))


def test_sixteen_bit_pnm_read_as_mode_I_maps_onto_0_255(tmp_path):
    a16 = np.array([[0, 257, 30000, 65535]] * 2, dtype=np.uint16)
    path = tmp_path / "deep.ppm"
    Image.fromarray(a16).save(path)
    assert Image.open(path).mode == "I"
    g = load_image(path, Preprocess(2, 4, "nchw", "gray", scale=1.0))
    np.testing.assert_array_equal(g[0, 0], np.rint(a16[0] / 257))  # not saturated to 0/255


def test_mode_F_in_0_1_maps_onto_the_pixel_scale(tmp_path):
    f = np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6)
    path = tmp_path / "f.tif"
    Image.fromarray(f, "F").save(path)
    assert Image.open(path).mode == "F"
    g = load_image(path, Preprocess(4, 6, "nchw", "gray"))  # default scale 1/255 gives the values back
    np.testing.assert_allclose(g[0], f, rtol=1e-6, atol=1e-6)
    rgb = load_image(path, Preprocess(4, 6, "nhwc", "rgb", scale=1.0))
    np.testing.assert_allclose(rgb[..., 2], f * 255, rtol=1e-5)
    small = load_image(path, Preprocess(2, 3, "nchw", "gray", scale=1.0))  # resized in float, not clipped
    assert small.shape == (1, 2, 3) and 0 < small.max() <= 255 and small.max() > 100


@pytest.mark.parametrize(
    "values,match",
    [
        (np.linspace(0, 300, 16, dtype=np.float32), r"floating-point pixels in 0\.\.300"),
        (np.linspace(-1, 1, 16, dtype=np.float32), r"in -1\.\.1"),
        (np.array([0.5] * 15 + [np.nan], dtype=np.float32), "NaN or infinite"),
    ],
)
def test_mode_F_outside_0_1_is_refused_when_the_data_is_opened(tmp_path, values, match):
    d = tmp_path / "d" / "a"
    d.mkdir(parents=True)
    Image.fromarray(values.reshape(4, 4), "F").save(d / "f.tif")
    with pytest.raises(OnnxFeError, match=match) as e:
        open_dataset(tmp_path / "d")
    assert "f.tif" in _one_line(e)


# --------------------------------------------------------------------------- npz contents


def _npz(tmp_path, **arrays):
    arrays.setdefault("y", np.array([0, 0, 1, 1]))
    np.savez(tmp_path / "d.npz", **arrays)
    return tmp_path / "d.npz"


def test_complex_x_is_refused(tmp_path):
    x = np.ones((4, 1, 4, 4), np.complex64) * (1 + 2j)
    with pytest.raises(OnnxFeError, match="complex") as e:
        open_dataset(_npz(tmp_path, x=x))
    _one_line(e)


def test_duplicate_class_names_are_refused(tmp_path):
    x = np.zeros((4, 1, 4, 4), np.float32)
    with pytest.raises(OnnxFeError, match="duplicate names.*'cat'") as e:
        open_dataset(_npz(tmp_path, x=x, classes=np.array(["cat", "cat"])))
    _one_line(e)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_x_is_refused_naming_the_row(tmp_path, bad):
    x = np.zeros((4, 1, 4, 4), np.float32)
    x[2, 0, 1, 1] = bad
    with pytest.raises(OnnxFeError, match=r"x\[2\] holds NaN or infinite") as e:
        open_dataset(_npz(tmp_path, x=x))
    _one_line(e)
    # a row that is not selected does not matter
    assert len(open_dataset(tmp_path / "d.npz", classes=["0"])) == 2


def test_npz_for_a_channels_first_model_is_described_as_channels_first(tmp_path):
    ds = open_dataset(_npz(tmp_path, x=np.zeros((4, 1, 16, 16), np.float32)))
    with pytest.raises(OnnxFeError) as e:
        npz_preprocess(ds, [None, 3, 16, 16])  # gray data, RGB NCHW model
    msg = _one_line(e)
    assert "(1, 16, 16)" in msg and "(3, 16, 16)" in msg and "nchw" in msg and "nhwc" not in msg
    ok = npz_preprocess(open_dataset(_npz(tmp_path, x=np.zeros((4, 16, 16, 3), np.float32))), [None, 16, 16, 3])
    assert (ok.layout, ok.height, ok.width, ok.color) == ("nhwc", 16, 16, "rgb")


# --------------------------------------------------------------------------- class names and options


def test_a_class_folder_named_with_a_comma_can_be_chosen(tmp_path):
    for name in ("a,b", "a", "c"):
        (tmp_path / "d" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "d" / name / "0.png")
    assert open_dataset(tmp_path / "d", classes=["a,b"]).classes == ["a,b"]  # the exact name first
    assert open_dataset(tmp_path / "d", classes=["a\\,b,c"]).classes == ["a,b", "c"]  # an escaped comma
    assert open_dataset(tmp_path / "d", classes=["a,c"]).classes == ["a", "c"]  # a plain list still works
    assert select_names(["x", "y"], None) == [0, 1]


@pytest.mark.parametrize("wanted", [[","], [" , "], [""]])
def test_classes_naming_nothing_is_refused(tmp_path, wanted):
    data = write_image_folder(tmp_path / "d", n_classes=2, per_class=1)
    with pytest.raises(OnnxFeError, match="names no class") as e:
        open_dataset(data, classes=wanted)
    _one_line(e)


@pytest.mark.parametrize("seed", [-1, -100, 1.5])
def test_a_negative_or_non_integer_seed_is_refused(tmp_path, seed):
    data = write_image_folder(tmp_path / "d", n_classes=2, per_class=3)
    with pytest.raises(OnnxFeError, match="--seed") as e:
        open_dataset(data, images_per_class=2, seed=seed)
    _one_line(e)


def test_fewer_images_than_asked_gives_one_notice(tmp_path):
    data = write_image_folder(tmp_path / "d", n_classes=3, per_class=4)
    ds = open_dataset(data, images_per_class=100)
    assert len(ds.notes) == 1
    assert "-n 100" in ds.notes[0] and "class_0 (4)" in ds.notes[0] and "3 classes" in ds.notes[0]
    assert open_dataset(data, images_per_class=4).notes == []
    np.savez(tmp_path / "s.npz", x=np.zeros((3, 1, 4, 4), np.float32), y=np.array([0, 0, 1]))
    assert "1 (1)" in open_dataset(tmp_path / "s.npz", images_per_class=2).notes[0]


def test_mean_count_on_a_gray_model_says_one_value():
    with pytest.raises(OnnxFeError) as e:
        resolve_preprocess([None, 1, 8, 8], mean=(0.1, 0.2, 0.3))
    msg = _one_line(e)
    assert "give 1 or 1" not in msg and "1 channel" in msg and "one value" in msg
    with pytest.raises(OnnxFeError, match="one value"):
        load_image_gray_with_three_means()


def load_image_gray_with_three_means():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as t:
        p = Path(t) / "g.png"
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(p)
        return load_image(p, Preprocess(4, 4, "nchw", "gray", mean=(0.1, 0.2, 0.3)))


@pytest.mark.parametrize("text", ["inf", "1,inf,1", "nan", "-inf"])
def test_non_finite_std_or_mean_is_refused(text):
    with pytest.raises(OnnxFeError, match="finite"):
        parse_floats(text, "--std")
    vals = tuple(float(v) for v in text.split(","))
    for opt in ("std", "mean"):
        with pytest.raises(OnnxFeError, match=f"--{opt} must hold finite numbers"):
            resolve_preprocess([None, 3, 8, 8], **{opt: vals})


# --------------------------------------------------------------------------- integer model inputs


def test_integer_inputs_default_to_pixel_values_with_a_note():
    uint8, int8, float32 = 2, 3, 1  # ONNX element types
    assert resolve_scale(None, float32) == (1 / 255, None)
    scale, note = resolve_scale(None, uint8)
    assert scale == 1.0 and "uint8" in note and "--scale" in note
    assert resolve_scale(None, int8)[0] == 1.0
    assert resolve_scale(1 / 255, uint8) == (1 / 255, None)  # the user's choice wins, silently
    p = resolve_preprocess([None, 3, 8, 8], scale=None, input_elem_type=uint8)
    assert p.scale == 1.0 and "uint8" in p.note
    assert resolve_preprocess([None, 3, 8, 8], scale=None).scale == pytest.approx(1 / 255)


def test_pixels_reach_a_uint8_model_unchanged_and_never_wrap(tmp_path):
    d = tmp_path / "d" / "a"
    d.mkdir(parents=True)
    px = np.array([[0, 1, 128, 255]], np.uint8)
    Image.fromarray(px).save(d / "0.png")
    ds = open_dataset(tmp_path / "d")
    scale, _ = resolve_scale(None, 2)
    x = ds.load(0, 1, Preprocess(1, 4, "nchw", "gray", scale=scale), np.uint8)
    assert x.dtype == np.uint8 and x.reshape(-1).tolist() == [0, 1, 128, 255]
    with pytest.raises(OnnxFeError, match=r"int8 input \(-128\.\.127\).*--mean 128") as e:
        ds.load(0, 1, Preprocess(1, 4, "nchw", "gray", scale=1.0), np.int8)  # 255 would wrap to -1
    _one_line(e)
    ok = ds.load(0, 1, Preprocess(1, 4, "nchw", "gray", scale=1.0, mean=(128.0,)), np.int8)
    assert ok.reshape(-1).tolist() == [-128, -127, 0, 127]
    assert to_input_dtype(np.array([0.4, 0.6, 254.5]), np.uint8).tolist() == [0, 1, 254]
