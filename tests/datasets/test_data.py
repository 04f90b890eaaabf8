"""Data loading: ImageFolder and .npz sources, image decoding/preprocessing, preprocess defaults."""

import numpy as np
import pytest
from graphs import write_image_folder
from PIL import Image

from onnx_fe.data import Preprocess, check_npz_shape, load_image, open_dataset, resolve_preprocess
from onnx_fe.errors import OnnxFeError

H, W = 6, 7  # deliberately not square, so a transposed H/W cannot pass


# --------------------------------------------------------------------------- image fixtures


def _source_images(seed=0):
    """One image per PIL mode and the RGB array PIL should decode it to (alpha dropped, palette applied)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    alpha = rng.integers(128, 256, (H, W), dtype=np.uint8)
    grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
    palette = rng.integers(0, 256, (8, 3), dtype=np.uint8)
    index = rng.integers(0, 8, (H, W), dtype=np.uint8)
    p = Image.fromarray(index, "P")
    p.putpalette(palette.flatten().tolist())
    return {
        "L": (Image.fromarray(grey, "L"), np.dstack([grey] * 3)),
        "RGB": (Image.fromarray(rgb, "RGB"), rgb),
        "RGBA": (Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), rgb),
        "P": (p, palette[index]),
    }


def _luma(rgb):
    """ITU-R 601-2 luma, the grey level PIL computes for RGB → L."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    return (r * 299 + g * 587 + b * 114) / 1000


# JPEG cannot hold RGBA or palette images; every other format is checked in all four modes.
FORMAT_MODES = [(ext, mode) for ext in ("png", "bmp", "tif", "gif", "webp") for mode in ("L", "RGB", "RGBA", "P")]
FORMAT_MODES += [(ext, mode) for ext in ("jpg", "jpeg") for mode in ("L", "RGB")]


def _save(im, path):
    ext = path.suffix.lower()
    if ext == ".webp":
        im.save(path, lossless=True, exact=True)
    elif ext in (".jpg", ".jpeg"):
        im.save(path, quality=100, subsampling=0)
    else:
        im.save(path)


@pytest.mark.parametrize("ext,mode", FORMAT_MODES)
def test_every_format_and_mode_loads_with_right_layout_and_values(tmp_path, ext, mode):
    im, want_rgb = _source_images()[mode]
    path = tmp_path / f"img.{ext}"
    _save(im, path)
    tol = 3 if ext in ("jpg", "jpeg") else 0  # JPEG is lossy even at quality 100
    want_rgb = want_rgb.astype(np.float32)

    a = load_image(path, Preprocess(H, W, "nchw", "rgb", scale=1.0))
    assert a.shape == (3, H, W) and a.dtype == np.float32
    np.testing.assert_allclose(a, want_rgb.transpose(2, 0, 1), atol=tol)

    b = load_image(path, Preprocess(H, W, "nhwc", "rgb", scale=1.0))
    assert b.shape == (H, W, 3)
    np.testing.assert_array_equal(b, a.transpose(1, 2, 0))

    g = load_image(path, Preprocess(H, W, "nchw", "gray", scale=1.0))
    assert g.shape == (1, H, W)
    np.testing.assert_allclose(g[0], _luma(want_rgb), atol=tol + 1)  # PIL rounds in fixed point
    gh = load_image(path, Preprocess(H, W, "nhwc", "gray", scale=1.0))
    assert gh.shape == (H, W, 1)
    np.testing.assert_array_equal(gh[..., 0], g[0])


def _channel_image(tmp_path):
    """R = column gradient, G = row gradient, B = constant: every channel and axis is distinct."""
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.dstack([10 + 30 * xx, 5 + 40 * yy, np.full((H, W), 77)]).astype(np.uint8)
    path = tmp_path / "channels.png"
    Image.fromarray(rgb, "RGB").save(path)
    return path, rgb.astype(np.float64)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_scale_mean_std_per_channel_and_bgr_swap(tmp_path, layout):
    path, rgb = _channel_image(tmp_path)
    mean, std, scale = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125), 1 / 255

    def to_chw(a):
        return a if layout == "nchw" else a.transpose(2, 0, 1)

    a = to_chw(load_image(path, Preprocess(H, W, layout, "rgb", scale=scale, mean=mean, std=std)))
    for c in range(3):
        np.testing.assert_allclose(a[c], (rgb[..., c] * scale - mean[c]) / std[c], rtol=1e-5, atol=1e-6)

    # bgr: the channels are reversed before mean/std, which are given in the model's (BGR) order
    b = to_chw(load_image(path, Preprocess(H, W, layout, "bgr", scale=scale, mean=mean, std=std)))
    for c in range(3):
        np.testing.assert_allclose(b[c], (rgb[..., 2 - c] * scale - mean[c]) / std[c], rtol=1e-5, atol=1e-6)
    assert b[2, 0, 1] != b[2, 0, 0]  # the column gradient (red) ended up last

    # one mean/std value applies to every channel
    s = to_chw(load_image(path, Preprocess(H, W, layout, "rgb", scale=2.0, mean=(3.0,), std=(4.0,))))
    np.testing.assert_allclose(s, (rgb.transpose(2, 0, 1) * 2.0 - 3.0) / 4.0, rtol=1e-6)


def test_mean_with_wrong_channel_count_is_refused_at_load(tmp_path):
    path, _ = _channel_image(tmp_path)
    with pytest.raises(OnnxFeError, match="--mean has 3 values"):
        load_image(path, Preprocess(H, W, "nchw", "gray", mean=(0.1, 0.2, 0.3)))


def test_images_are_resized_to_the_input_size_without_swapping_axes(tmp_path):
    left_red = np.zeros((10, 20, 3), dtype=np.uint8)  # 10 high, 20 wide: red left half, blue right half
    left_red[:, :10, 0] = 255
    left_red[:, 10:, 2] = 255
    path = tmp_path / "wide.png"
    Image.fromarray(left_red, "RGB").save(path)
    a = load_image(path, Preprocess(8, 12, "nchw", "rgb", scale=1.0))
    assert a.shape == (3, 8, 12)
    np.testing.assert_array_equal(a[0, :, :5], 255)  # away from the seam, colours are untouched
    np.testing.assert_array_equal(a[2, :, 7:], 255)
    np.testing.assert_array_equal(a[2, :, :5], 0)
    np.testing.assert_array_equal(a[1], 0)
    assert load_image(path, Preprocess(8, 12, "nhwc", "gray")).shape == (8, 12, 1)


def test_sixteen_bit_grey_maps_onto_the_8_bit_range(tmp_path):
    a16 = np.array([[0, 1000, 30000, 65535]] * 2, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(a16).save(path)
    g = load_image(path, Preprocess(2, 4, "nchw", "gray", scale=1.0))
    np.testing.assert_array_equal(g[0, 0], np.rint(a16[0] / 257))  # not clipped to 255


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(OnnxFeError, match="broken.png"):
        load_image(bad, Preprocess(H, W))


# --------------------------------------------------------------------------- ImageFolder


def test_folder_classes_are_sorted_folder_names_and_labels_follow(tmp_path):
    for name in ["zebra", "Apple", "mango", "10", "9"]:
        write_image_folder(tmp_path / "tmp", n_classes=1, per_class=2)
        (tmp_path / "tmp" / "class_0").rename(tmp_path / name)
    (tmp_path / ".hidden").mkdir()  # hidden folders and loose files are not classes
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "tmp").rmdir()
    (tmp_path / "mango" / "readme.txt").write_text("not an image")
    (tmp_path / "mango" / ".000.png").write_bytes(b"hidden file")
    ds = open_dataset(tmp_path, images_per_class=None)
    assert ds.classes == sorted(["zebra", "Apple", "mango", "10", "9"]) == ["10", "9", "Apple", "mango", "zebra"]
    assert len(ds) == 10 and ds.kind == "folder"
    for rel, lab in zip(ds.ids, ds.labels):
        assert rel.split("/")[0] == ds.classes[lab]
        assert rel.endswith(".png")
    assert list(ds.labels) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


@pytest.mark.parametrize("layout,shape", [("nchw", (4, 3, 12, 12)), ("nhwc", (4, 12, 12, 3))])
def test_folder_batches_have_the_model_layout(tmp_path, layout, shape):
    write_image_folder(tmp_path, n_classes=2, per_class=2, size=(16, 16))
    ds = open_dataset(tmp_path)
    x = ds.load(0, 4, Preprocess(12, 12, layout, "rgb"))
    assert x.shape == shape and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1  # default scale 1/255
    np.testing.assert_array_equal(x[3], load_image(tmp_path / ds.ids[3], Preprocess(12, 12, layout, "rgb")))


def test_images_per_class_selection_is_deterministic(tmp_path):
    write_image_folder(tmp_path, n_classes=3, per_class=10, size=(8, 8))
    a = open_dataset(tmp_path, images_per_class=4, seed=0)
    b = open_dataset(tmp_path, images_per_class=4, seed=0)
    c = open_dataset(tmp_path, images_per_class=4, seed=1)
    assert a.ids == b.ids and np.array_equal(a.labels, b.labels)
    assert a.ids != c.ids
    for ds in (a, c):
        assert list(ds.labels) == [0] * 4 + [1] * 4 + [2] * 4
        for k in range(3):
            ids = [i for i, lab in zip(ds.ids, ds.labels) if lab == k]
            assert len(set(ids)) == 4 and ids == sorted(ids)  # distinct, kept in sorted order
            assert all(i.startswith(f"class_{k}/") for i in ids)
    full = open_dataset(tmp_path, images_per_class=10)  # as many as there are: all, sorted
    assert full.ids == [f"class_{k}/{i:03d}.png" for k in range(3) for i in range(10)]
    assert open_dataset(tmp_path, images_per_class=1000, seed=5).ids == full.ids
    assert open_dataset(tmp_path, images_per_class=None).ids == full.ids
    with pytest.raises(OnnxFeError, match="at least 1"):
        open_dataset(tmp_path, images_per_class=0)


def test_classes_subset(tmp_path):
    write_image_folder(tmp_path, n_classes=4, per_class=3, size=(8, 8))
    (tmp_path / "zz_empty").mkdir()  # an empty class folder is fine when it is not selected
    for spec in (["class_3", "class_1"], ["class_3,class_1"], [" class_1 , class_3 "]):
        ds = open_dataset(tmp_path, images_per_class=None, classes=spec)
        assert ds.classes == ["class_1", "class_3"]  # folder order, not the order asked
        assert [i.split("/")[0] for i in ds.ids] == ["class_1"] * 3 + ["class_3"] * 3
        assert list(ds.labels) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(OnnxFeError, match="'class_9' is not a class"):
        open_dataset(tmp_path, classes=["class_1,class_9"])
    with pytest.raises(OnnxFeError, match="holds no images"):
        open_dataset(tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(OnnxFeError, match="data not found"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OnnxFeError, match="no class sub-folders"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OnnxFeError, match="ImageFolder directory or an .npz"):
        open_dataset(tmp_path / "notes.txt")
    d = write_image_folder(tmp_path / "d", n_classes=2, per_class=2)
    (d / "class_1" / "001.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(OnnxFeError, match=r"cannot read image .*class_1/001\.png"):
        open_dataset(d)  # found when indexing, before any pixel work
    t = write_image_folder(tmp_path / "t", n_classes=2, per_class=2, size=(32, 32))
    p = t / "class_0" / "001.png"
    p.write_bytes(p.read_bytes()[:-200])  # header intact, pixel data cut short
    with pytest.raises(OnnxFeError, match=r"cannot read image .*class_0/001\.png"):
        open_dataset(t)


# --------------------------------------------------------------------------- .npz


def _npz(tmp_path, name="d.npz", n=12, shape=(3, 5, 4), **extra):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (n,) + shape).astype(np.uint8)
    y = np.arange(n) % 3
    arrays = {"x": x, "y": y, **extra}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name, x, y


def test_npz_values_are_fed_as_is_with_labels_and_class_names(tmp_path):
    path, x, y = _npz(tmp_path, classes=np.array(["cat", "dog", "emu"]))
    ds = open_dataset(path, images_per_class=None)
    assert ds.kind == "npz" and ds.classes == ["cat", "dog", "emu"] and len(ds) == 12
    # preprocessing options do not touch .npz values
    got = ds.load(0, len(ds), Preprocess(5, 4, "nchw", "rgb", scale=1 / 255, mean=(9.0,), std=(7.0,)))
    assert got.shape == (12, 3, 5, 4) and got.dtype == np.float32
    for row, rid, lab in zip(got, ds.ids, ds.labels):
        i = int(rid.split(":")[1])
        np.testing.assert_array_equal(row, x[i].astype(np.float32))
        assert ds.classes[lab] == ["cat", "dog", "emu"][y[i]]
    assert list(ds.labels) == [0] * 4 + [1] * 4 + [2] * 4  # grouped by class


def test_npz_without_class_names_uses_the_label_values(tmp_path):
    x = np.arange(4 * 1 * 2 * 2, dtype=np.float64).reshape(4, 1, 2, 2) * 1000.5
    np.savez(tmp_path / "d.npz", x=x, y=np.array([7, 3, 7, 3]))
    ds = open_dataset(tmp_path / "d.npz")
    assert ds.classes == ["3", "7"]
    assert ds.ids == ["index:1", "index:3", "index:0", "index:2"]
    np.testing.assert_array_equal(ds.load(0, 4, Preprocess(2, 2, "nchw", "gray"), dtype=np.float64), x[[1, 3, 0, 2]])


def test_npz_class_names_stored_as_bytes_are_decoded(tmp_path):
    path, _, _ = _npz(tmp_path, classes=np.array([b"cat", b"dog", b"emu"]))
    assert open_dataset(path).classes == ["cat", "dog", "emu"]


def test_npz_images_per_class_and_classes(tmp_path):
    path, x, y = _npz(tmp_path, n=30, classes=np.array(["cat", "dog", "emu"]))
    a = open_dataset(path, images_per_class=3, seed=0)
    assert a.ids == open_dataset(path, images_per_class=3, seed=0).ids
    assert a.ids != open_dataset(path, images_per_class=3, seed=1).ids
    assert list(a.labels) == [0] * 3 + [1] * 3 + [2] * 3
    rows = [int(i.split(":")[1]) for i in a.ids]
    assert [y[r] for r in rows] == list(a.labels)
    sub = open_dataset(path, images_per_class=2, classes=["emu,cat"])
    assert sub.classes == ["cat", "emu"]
    assert [y[int(i.split(":")[1])] for i in sub.ids] == [0, 0, 2, 2]
    with pytest.raises(OnnxFeError, match="'yak' is not a class"):
        open_dataset(path, classes=["yak"])


@pytest.mark.parametrize(
    "arrays,match",
    [
        ({"x": np.zeros((4, 48), np.float32), "y": np.array([0, 0, 1, 1])}, "x must be 4-D"),
        ({"x": np.zeros((4, 3, 4, 4, 1), np.float32), "y": np.array([0, 0, 1, 1])}, "x must be 4-D"),
        ({"x": np.zeros((4, 3, 4, 4), np.float32)}, "lacks the array 'y'"),
        ({"y": np.array([0, 1])}, "lacks the array 'x'"),
        ({"x": np.zeros((4, 3, 4, 4), np.float32), "y": np.array([0, 1, 1])}, "one label per row"),
        ({"x": np.zeros((4, 3, 4, 4), np.float32), "y": np.zeros((4, 1), int)}, "y must be 1-D"),
        ({"x": np.zeros((4, 3, 4, 4), np.float32), "y": np.array([0.0, 0, 1, 1])}, "integer labels"),
        ({"x": np.zeros((0, 3, 4, 4), np.float32), "y": np.zeros(0, int)}, "no samples"),
        (
            {"x": np.zeros((4, 3, 4, 4), np.float32), "y": np.array([0, 0, 1, 2]), "classes": np.array(["a", "b"])},
            r"labels must lie in 0\.\.1",
        ),
        (
            {"x": np.zeros((2, 3, 4, 4), np.float32), "y": np.array([0, 1]), "classes": np.array([None, None])},
            "cannot read",
        ),  # object arrays are never unpickled
        (
            {"x": np.zeros((2, 3, 4, 4), np.float32), "y": np.array([0, 1]), "classes": np.array("ab")},
            "classes must be a 1-D",
        ),
    ],
)
def test_bad_npz_is_refused(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(OnnxFeError, match=match):
        open_dataset(tmp_path / "bad.npz")


def test_npz_that_is_not_an_archive_is_refused(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"hello, not a zip")
    with pytest.raises(OnnxFeError, match="cannot read"):
        open_dataset(tmp_path / "junk.npz")


def test_npz_sample_shape_must_match_the_model_input(tmp_path):
    path, _, _ = _npz(tmp_path, shape=(3, 16, 16))
    ds = open_dataset(path)
    check_npz_shape(ds, [None, 3, 16, 16], "nchw")
    check_npz_shape(ds, [None, 3, None, None], "nchw")  # dynamic dims accept any size
    with pytest.raises(OnnxFeError, match=r"sample shape \(3, 16, 16\) but the model input is \(3, 8, 8\)"):
        check_npz_shape(ds, [None, 3, 8, 8], "nchw")
    with pytest.raises(OnnxFeError, match="sample shape"):
        check_npz_shape(ds, [None, 16, 16, 3], "nhwc")  # NCHW data for an NHWC model
    nhwc, _, _ = _npz(tmp_path, "h.npz", shape=(16, 16, 3))
    check_npz_shape(open_dataset(nhwc), [None, 16, 16, 3], "nhwc")


# --------------------------------------------------------------------------- preprocess defaults


@pytest.mark.parametrize(
    "shape,layout,color,hw",
    [
        ([None, 1, 28, 28], "nchw", "gray", (28, 28)),
        ([None, 3, 32, 24], "nchw", "rgb", (32, 24)),
        ([1, 28, 28, 1], "nhwc", "gray", (28, 28)),
        ([None, 32, 24, 3], "nhwc", "rgb", (32, 24)),
    ],
)
def test_preprocess_defaults_from_the_model_input(shape, layout, color, hw):
    p = resolve_preprocess(shape)
    assert (p.layout, p.color, (p.height, p.width)) == (layout, color, hw)
    assert p.channels == (1 if color == "gray" else 3)
    assert p.scale == pytest.approx(1 / 255) and p.mean == (0.0,) and p.std == (1.0,)


def test_preprocess_dynamic_spatial_dims_need_input_size():
    with pytest.raises(OnnxFeError, match="dynamic: pass --input-size"):
        resolve_preprocess([None, 3, None, None])
    p = resolve_preprocess([None, 3, None, None], input_size=(20, 24))
    assert (p.layout, p.height, p.width, p.color) == ("nchw", 20, 24, "rgb")
    p = resolve_preprocess([None, None, None, 1], input_size=(9, 11))
    assert (p.layout, p.height, p.width, p.color) == ("nhwc", 9, 11, "gray")
    with pytest.raises(OnnxFeError, match="pass --layout"):
        resolve_preprocess([None, None, None, None], input_size=(8, 8))
    p = resolve_preprocess([None, None, None, None], input_size=(8, 8), layout="nhwc", color="bgr")
    assert (p.layout, p.color, p.height) == ("nhwc", "bgr", 8)


def test_preprocess_input_size_must_agree_with_a_fixed_model():
    assert resolve_preprocess([None, 3, 32, 32], input_size=(32, 32)).height == 32
    with pytest.raises(OnnxFeError, match="--input-size 64x48 disagrees with the model's fixed input 32x32"):
        resolve_preprocess([None, 3, 32, 32], input_size=(64, 48))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"layout": "hwc"}, "--layout 'hwc'"),
        ({"color": "cmyk"}, "--color 'cmyk'"),
        ({"color": "rgb", "shape": [None, 1, 8, 8]}, "gives 3 channel"),
        ({"color": "gray"}, "gives 1 channel"),
        ({"mean": (0.1, 0.2)}, "--mean has 2 values"),
        ({"std": (1.0, 1.0, 1.0, 1.0)}, "--std has 4 values"),
        ({"std": (0.5, 0.0, 0.5)}, "must not contain 0"),
        ({"scale": float("nan")}, "--scale must be a finite number"),
    ],
)
def test_preprocess_bad_options(kwargs, match):
    shape = kwargs.pop("shape", [None, 3, 8, 8])
    with pytest.raises(OnnxFeError, match=match):
        resolve_preprocess(shape, **kwargs)


def test_preprocess_explicit_options_are_kept():
    p = resolve_preprocess([None, 3, 8, 8], color="bgr", scale=1.0, mean=(1, 2, 3), std=(4,))
    assert (p.color, p.scale, p.mean, p.std) == ("bgr", 1.0, (1, 2, 3), (4,))


def test_a_class_gets_the_same_images_whichever_other_classes_are_selected(tmp_path):
    from graphs import write_image_folder

    from onnx_fe.data import open_dataset

    root = write_image_folder(tmp_path / "d", n_classes=3, per_class=9)
    full = open_dataset(root, images_per_class=4, seed=3)
    only = open_dataset(root, images_per_class=4, seed=3, classes=["class_2"])
    assert only.ids == [i for i, lab in zip(full.ids, full.labels) if full.classes[lab] == "class_2"]
    assert len(only.ids) == 4
