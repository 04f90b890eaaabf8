"""The HTML report of real runs, checked without a browser: sections, self-containment, numbers, options, errors."""

import base64
import csv
import io
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import h5py
import pytest
from conftest import DEMO, ROOT

import onnx_fe
from onnx_fe.cli import main
from onnx_fe.io.results import STAT_COLUMNS, layer_summary, seal
from onnx_fe.report.build import required_sections


class _Page(HTMLParser):
    """Every element's tag and attributes, the text, and the inline styles and scripts of a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self.scripts: list[str] = []
        self._in = None

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in = tag if tag in ("style", "script") else None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "style":
            self.styles.append(data)
        elif self._in == "script":
            self.scripts.append(data)
        else:
            self.text.append(data)


def parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


URL_ATTRS = ("src", "href", "xlink:href", "srcset", "poster", "data", "action", "formaction", "background")


def assert_self_contained(path: Path) -> _Page:
    """No reference leaves the file: every URL is a data: URI or a #fragment of the page, and every fragment exists."""
    page = parse(path)
    text = path.read_text(encoding="utf-8")
    ids = {a["id"] for _, a in page.elements if "id" in a}
    for tag, attrs in page.elements:
        assert tag not in ("link", "iframe", "object", "embed", "base", "frame"), f"<{tag}> in the page"
        if tag == "script":
            assert "src" not in attrs, "external script"
        for k in URL_ATTRS:
            v = attrs.get(k)
            if v is None:
                continue
            assert v.startswith(("data:", "#")), f"<{tag} {k}={v[:80]!r}> leaves the file"
            if v.startswith("#"):
                assert v[1:] in ids, f"<{tag} {k}={v!r}> points nowhere"
    for css in page.styles + re.findall(r'style="([^"]*)"', text):
        for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", css):
            assert u.startswith(("data:", "#")), f"CSS url({u[:80]}) leaves the file"
        assert "@import" not in css and "@font-face" not in css
    assert not re.search(r"https?://", text), "a network address in the page"
    assert not re.search(r"""(?:src|href)\s*=\s*["']?//""", text), "a protocol-relative reference"
    assert not re.search(r"\b(?:fetch|XMLHttpRequest|WebSocket|EventSource|importScripts)\b", " ".join(page.scripts))
    return page


def data_uris(text: str):
    for mime, b64 in re.findall(r"data:(image/(?:png|jpeg));base64,([A-Za-z0-9+/=]+)", text):
        yield mime, base64.b64decode(b64, validate=True)


def sections(page: _Page) -> list[str]:
    return [a["id"] for t, a in page.elements if t == "section" and "data-section" in a]


# --------------------------------------------------------------------------- one run


@pytest.fixture(scope="module")
def demo_report(demo_run, demo_ablation, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-report") / "demo.html"
    res = onnx_fe.report(demo_run, out, ablation=demo_ablation)
    return res


def test_demo_report_has_every_section_and_is_self_contained(demo_report):
    assert demo_report.path.exists() and demo_report.size == demo_report.path.stat().st_size
    page = assert_self_contained(demo_report.path)
    assert sections(page) == required_sections(1) == demo_report.sections
    text = demo_report.path.read_text(encoding="utf-8")
    assert "default-src 'none'" in text  # the page forbids requests wherever it is opened
    for s in required_sections(1):  # every section says something: a figure, a table or a reason
        body = re.search(rf'<section id="{s}".*?</section>', text, re.S).group(0)
        assert re.search(r"<svg|<img|<table|class=\"missing\"", body), s
    from PIL import Image

    n = 0
    for mime, raw in data_uris(text):
        with Image.open(io.BytesIO(raw)) as im:
            assert im.format == {"image/png": "PNG", "image/jpeg": "JPEG"}[mime]
            im.verify()
        n += 1
    assert n > 10


def test_demo_report_numbers_are_the_stored_ones(demo_run, demo_report):
    """The per-layer table shows the means of the results file (3 decimals), in layer order."""
    text = demo_report.path.read_text(encoding="utf-8")
    table = re.search(r'<section id="layers".*?<tbody>(.*?)</tbody>', text, re.S).group(1)
    cells = [re.findall(r'<td class="num" data-v="([^"]+)">', row) for row in table.split("<tr>")[1:]]
    rows = layer_summary(demo_run / "results.h5")
    assert len(cells) == len(rows) == 3
    for c, r in zip(cells, rows):
        vals = [float(v) for v in c]
        assert vals[0] == r["layer_index"]
        assert pytest.approx(r["feature_entropy"], abs=1e-12) in vals
        assert pytest.approx(r["birth_rate"], abs=1e-12) in vals
        assert f"{r['feature_entropy']:.3f}" in table and f"{r['birth_rate']:.3f}" in table


def test_demo_gallery_recomputes_the_stored_birth_points(demo_report):
    text = demo_report.path.read_text(encoding="utf-8")
    m = re.search(r"the birth points of (\d+) of (\d+) maps equal the stored ones", text)
    assert m, "the gallery states how many recomputed birth points agree"
    # 3 layers × (3 best + 3 worst units) × (2 classes × 3 images)
    assert int(m.group(2)) == 3 * 6 * 6 == text.count('<figure class="tile')
    assert int(m.group(1)) == int(m.group(2))
    assert 'class="tile diff"' not in text


def test_demo_report_shows_the_ablation_and_the_rankings(demo_report):
    text = demo_report.path.read_text(encoding="utf-8")
    abl = re.search(r'<section id="ablation".*?</section>', text, re.S).group(0)
    assert "<svg" in abl and "feature_entropy" in abl and "AUC most first" in abl
    rk = re.search(r'<section id="ranking".*?</section>', text, re.S).group(0)
    for b in ("mean_activation", "apoz", "weight_l1"):
        assert f"ρ {b}" in rk


def test_results_without_statistics_are_shown_with_what_is_missing(demo_run, tmp_path):
    """A results file from before the statistics (no per-cell CIs, no layers.csv, no tap attributes, no wall time):
    the page shows what exists and says what does not."""
    run = tmp_path / "old"
    shutil.copytree(demo_run, run)
    (run / "layers.csv").unlink()
    with h5py.File(run / "results.h5", "r+") as f:
        for key in f["layers"]:
            g = f["layers"][key]
            for name in STAT_COLUMNS:
                if name in g:
                    del g[name]
            for a in ("tap_op", "activated"):
                if a in g.attrs:
                    del g.attrs[a]
        for a in ("wall_time_s", "finished"):
            del f.attrs[a]
    seal(run / "results.h5")  # as that older version wrote it: a finished file, not one damaged afterwards
    res = onnx_fe.report(run, gallery=False)
    text = res.path.read_text(encoding="utf-8")
    assert sections(assert_self_contained(res.path)) == required_sections(1)
    assert "Not in these results: rarefied FE, confidence intervals, layers.csv" in text
    assert "No noise null in these results" in text and "not stored in this results file" in text
    layers = re.search(r'<section id="layers".*?</section>', text, re.S).group(0)
    assert ">mean FE</th>" in layers and ">unit FE quartiles</th>" in layers
    for gone in ("CI]</th>", ">noise FE<", ">rarefied FE", "Against the control"):
        assert gone not in layers, gone
    assert "post-activation (Relu)" in layers  # the tap kind, read from the chain


def test_statistics_noise_null_and_control_are_shown(demo_control_run):
    """layers.csv's CIs, noise null and control, and the control's units, in the table and the figures."""
    res = onnx_fe.report(demo_control_run, gallery=False)
    text = res.path.read_text(encoding="utf-8")
    assert_self_contained(res.path)
    layers = re.search(r'<section id="layers".*?</section>', text, re.S).group(0)
    for header in (
        "mean FE [95 % CI]",
        "noise FE",
        "rarefied FE [95 % CI]",
        "birth rate [95 % CI]",
        "control FE",
        "Δ FE [95 % CI]",
        "Cohen&#x27;s d",
        "Δ rarefied FE [95 % CI]",
    ):
        assert f">{header}</th>" in layers, header
    with open(demo_control_run / "layers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for r in rows:  # the stored numbers, as stored
        for a, b in (("fe", "fe_ci_low"), ("delta_fe", "delta_fe_ci_low"), ("birth_rate", "birth_rate_ci_low")):
            cell = f'{float(r[a]):.3f}<br><span class="ci">[{float(r[b]):.3f}, '
            assert cell in layers, cell
        assert f">{float(r['null_fe']):.3f}<" in layers and f">{float(r['cohens_d']):.2f}<" in layers
    depth = re.search(r'<section id="depth".*?</section>', text, re.S).group(0)
    for label in ("noise null (same map size)", "control", "95 % CI over units", "Δ FE", "mean rarefied FE"):
        assert label in depth, label
    assert "control units" in re.search(r'<section id="distributions".*?</section>', text, re.S).group(0)
    assert "random-init twin (seed 0)" in text
    assert "Not in these results" not in text and "No noise null" not in text


# --------------------------------------------------------------------------- several runs, options, errors


def test_compare_report_puts_runs_side_by_side(demo_run, tmp_path):
    other = tmp_path / "demo_b"
    onnx_fe.score(DEMO / "model.onnx", DEMO / "data", other, device="cpu", images_per_class=5, workers=2)
    res = onnx_fe.report([demo_run, other], tmp_path / "cmp.html", gallery_layers=[2], gallery_units=1)
    page = assert_self_contained(res.path)
    assert sections(page) == required_sections(2)
    text = res.path.read_text(encoding="utf-8")
    blocks = re.findall(r'<div class="run-block" data-run="([^"]+)">', text)
    assert (
        set(blocks) == {"demo", "demo_b"} and len(blocks) == 2 * 6
    )  # layers, depth, distributions, heatmap, ranking, gallery
    cmp = re.search(r'<section id="compare".*?</section>', text, re.S).group(0)
    assert "relative depth" in cmp and ">200<" in cmp and ">50<" in cmp  # images per run


def test_report_of_a_compare_directory(tmp_path):
    models = [DEMO / "model.onnx", ROOT / "models" / "digits_vgg" / "random" / "model.onnx"]
    out = tmp_path / "cmp"
    onnx_fe.compare(models, DEMO / "data", out, plot=False, images_per_class=4, device="cpu", workers=2)
    res = onnx_fe.report(out, gallery=False)
    assert res.path == out / "report.html"
    page = assert_self_contained(res.path)
    assert sections(page) == required_sections(2)
    cmp = re.search(r'<section id="compare".*?</section>', res.path.read_text(encoding="utf-8"), re.S).group(0)
    acc = re.search(r"top-1 accuracy \(scored images\)</th>(.*?)</tr>", cmp).group(1)
    assert len(re.findall(r"<td>\d\.\d{3}</td>", acc)) == 2  # both models' accuracy, from compare_models.csv


def test_the_gallery_says_why_it_is_missing_and_takes_model_and_data(demo_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    with h5py.File(run / "results.h5", "r+") as f:
        f.attrs["model_path"] = str(tmp_path / "gone" / "model.onnx")
        f.attrs["data_source"] = str(tmp_path / "gone" / "data")
    seal(run / "results.h5")  # as if scored from there: a finished file, not one damaged afterwards
    text = onnx_fe.report(run).path.read_text(encoding="utf-8")
    assert "Unit gallery not drawn: the scored model" in text and "--model" in text
    text = onnx_fe.report(run, model=DEMO / "model.onnx", data=DEMO / "data").path.read_text(encoding="utf-8")
    assert "maps equal the stored ones" in text
    other = ROOT / "models" / "digits_vgg" / "converged" / "model.onnx"
    text = onnx_fe.report(run, model=other, data=DEMO / "data").path.read_text(encoding="utf-8")
    assert "is not the model that was scored" in text


def test_cli_report_and_score_report(demo_run, demo_ablation, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert (
        main(
            [
                "report",
                str(demo_run),
                "-o",
                str(out),
                "--ablation",
                str(demo_ablation),
                "--heatmap-layer",
                "1",
                "--gallery-units",
                "1",
                "--gallery-images",
                "2",
                "--gallery-classes",
                "3,4",
                "-q",
            ]
        )
        == 0
    )
    text = out.read_text(encoding="utf-8")
    heat = re.search(r'<section id="heatmap".*?</section>', text, re.S).group(0)
    assert "layer 1 " in heat and "layer 2 " not in heat
    assert text.count('<figure class="tile') == 3 * 2 * 4
    gal = re.search(r'<section id="gallery".*?</section>', text, re.S).group(0)
    assert ">3</th>" in gal and ">4</th>" in gal and ">0</th>" not in gal
    run = tmp_path / "scored"
    assert (
        main(
            [
                "score",
                str(DEMO / "model.onnx"),
                str(DEMO / "data"),
                "-o",
                str(run),
                "-n",
                "4",
                "--device",
                "cpu",
                "--report",
                "-q",
            ]
        )
        == 0
    )
    assert_self_contained(run / "report.html")
    with h5py.File(run / "results.h5") as f:
        assert float(f.attrs["wall_time_s"]) > 0 and f.attrs["finished"]
    assert "wall time" in (run / "report.html").read_text(encoding="utf-8")
    assert "not stored in this results file" not in (run / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "args, message",
    [
        (["report", "{tmp}/nothing"], "results not found"),
        (["report", "{tmp}"], "no results.h5 in"),
        (["report", "{demo}", "--gallery-units", "0"], "--gallery-units must be at least 1"),
        (["report", "{demo}", "--heatmap-layer", "x"], "--heatmap-layer takes layer indices"),
        (["report", "{demo}", "--gallery-classes", "nope"], "--gallery-classes nope: not a class of demo"),
        (["report", "{demo}", "--gallery-layer", "7"], "--gallery-layer 7: not a scored layer of demo"),
        (["report", "{demo}", "--heatmap-layer", "0,9"], "--heatmap-layer 9: not a scored layer"),
        (["report", "{demo}", "--ablation", "{tmp}"], "no ablation.csv"),
        (["report", "{demo}", "{demo}"], "given twice"),
        (["report", "{demo}", "-o", "{tmp}"], "is a directory"),
    ],
)
def test_cli_errors_are_one_line(demo_run, tmp_path, capsys, args, message):
    argv = [a.format(tmp=tmp_path, demo=demo_run) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onnx-fe: error: ") and message in err[0], err


def test_unfinished_results_are_refused(demo_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    with h5py.File(run / "results.h5", "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(onnx_fe.OnnxFeError, match="unfinished"):
        onnx_fe.report(run)


@pytest.mark.parametrize("first", ["import onnx_fe.report.plots", "import onnx_fe; onnx_fe.report"])
def test_api_name_is_callable_in_any_import_order(first, demo_run, tmp_path):
    code = (
        f"{first}\nimport onnx_fe\nr = onnx_fe.report({str(demo_run)!r}, {str(tmp_path / 'x.html')!r}, "
        "gallery=False)\nprint(r.path.name, callable(onnx_fe.report), onnx_fe.report.plots.__name__)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["x.html", "True", "onnx_fe.report.plots"]


# --------------------------------------------------------------------------- the zoo ResNet


def test_resnet_report_is_small_enough_to_email(resnet_run, tmp_path):
    res = onnx_fe.report(resnet_run, tmp_path / "resnet.html")
    page = assert_self_contained(res.path)
    assert sections(page) == required_sections(1)
    text = res.path.read_text(encoding="utf-8")
    assert "pre-activation (BatchNormalization)" in text  # residual branches end before their ReLU
    m = re.search(r"the birth points of (\d+) of (\d+) maps equal the stored ones", text)
    assert m and int(m.group(2)) == 12 * 6 * 6
    assert res.size < 2_000_000, f"{res.size / 1e6:.2f} MB"
