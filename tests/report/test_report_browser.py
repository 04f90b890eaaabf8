"""The report in a real browser: headless Chromium renders the demo's and the zoo ResNet's reports.

Checked: no console error, no uncaught exception, no browser log error (failed load, Content-Security-Policy
violation), no request other than the page itself and its inline ``data:`` images, every section present with its
content, every image decoded, the sortable table working; a full-page screenshot is saved as a test artifact (in the
test's temporary directory, and in ``$ONNX_FE_ARTIFACTS`` when that is set). Skipped, with the reason, when no
Chromium is installed (Debian: ``apt-get install chromium``; another binary: ``$ONNX_FE_CHROMIUM``).
"""

import os
import shutil
from pathlib import Path

import pytest
from headless import find_chromium, render

import onnx_fe
from onnx_fe.report.build import required_sections

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium binary (apt-get install chromium, or set ONNX_FE_CHROMIUM): the browser checks did not run",
)

EXPRESSIONS = {
    "sections": "Array.from(document.querySelectorAll('section[data-section]')).map(s => s.id)",
    "empty_sections": "Array.from(document.querySelectorAll('section[data-section]'))"
    ".filter(s => !s.querySelector('svg, img, table, p.missing')).map(s => s.id)",
    "broken_images": "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length",
    "images": "document.images.length",
    "svgs": "document.querySelectorAll('svg.fig').length",
    "tiles": "document.querySelectorAll('figure.tile').length",
    "tables": "document.querySelectorAll('#layers table, #ranking table').length",
    "thumbs_drawn": "Array.from(document.querySelectorAll('.thumb'))"
    ".every(t => getComputedStyle(t).backgroundImage.startsWith('url(\"data:'))",
    "width_overflow": "document.documentElement.scrollWidth - document.documentElement.clientWidth",
    # click 'mean FE' of the first layer table twice: descending, then ascending
    "sorted": """(() => {
        const t = document.querySelector('#layers table.sortable');
        const i = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent.startsWith('mean FE'));
        const col = () => Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[i].dataset.v));
        t.tHead.rows[0].cells[i].click();
        const asc = col();
        t.tHead.rows[0].cells[i].click();
        return [asc, col()];
    })()""",
}


def _artifact(path: Path) -> None:
    where = os.environ.get("ONNX_FE_ARTIFACTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(where) / path.name)


def _check(rec, n_runs: int, tiles: int):
    assert rec.errors == [], rec.errors
    assert rec.foreign_requests == [], rec.foreign_requests
    assert rec.requests and rec.requests[0] == rec.url  # the recorder did see the page's own request
    v = rec.values
    assert v["sections"] == required_sections(n_runs)
    assert v["empty_sections"] == []
    assert v["images"] > 0 and v["broken_images"] == 0
    assert v["svgs"] >= 3 * n_runs and v["tiles"] == tiles and v["thumbs_drawn"]
    assert v["width_overflow"] <= 0, "the page is wider than the window"
    asc, desc = v["sorted"]
    assert asc == sorted(asc) and desc == sorted(desc, reverse=True) and len(asc) > 1
    assert rec.screenshot is not None and rec.screenshot.stat().st_size > 10_000
    assert rec.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _artifact(rec.screenshot)


def test_the_recorder_catches_errors_and_requests(tmp_path):
    """The checks below can fail: a page with a console error, an exception and outside requests is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title>'
        '<link rel="stylesheet" href="//cdn.example.invalid/x.css"></head><body>'
        '<img src="http://example.invalid/a.png"><script>console.error("boom"); nothere();</script></body></html>'
    )
    rec = render(bad, expressions={"n": "document.images.length"}, settle=0.5)
    text = " ".join(rec.errors)
    assert "console.error: boom" in text and "nothere" in text
    assert "http://example.invalid/a.png" in rec.foreign_requests
    assert any("cdn.example.invalid" in u for u in rec.foreign_requests)
    assert rec.values == {"n": 1}
    # a page that forbids requests (as the report does) still shows an attempt, as a CSP error and a request
    csp = tmp_path / "csp.html"
    csp.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:\"><title>t</title></head><body>"
        '<img src="https://example.invalid/b.png"></body></html>'
    )
    rec = render(csp, settle=0.5)
    assert any("Content Security Policy" in e for e in rec.errors)
    assert "https://example.invalid/b.png" in rec.foreign_requests


def test_demo_report_in_chromium(demo_control_run, demo_ablation, tmp_path):
    """The demo with every part the page can have: CIs, noise null, a control, ablation curves, the gallery."""
    res = onnx_fe.report(demo_control_run, tmp_path / "demo-report.html", ablation=demo_ablation)
    rec = render(res.path, expressions=EXPRESSIONS, screenshot=tmp_path / "demo-report.png")
    _check(rec, 1, tiles=3 * 6 * 6)
    assert rec.values["tables"] == 3  # layers, against the control, ranking (+ the ablation summary below)


def test_zoo_resnet_report_in_chromium(resnet_run, tmp_path):
    res = onnx_fe.report(resnet_run, tmp_path / "shapes-resnet-report.html")
    rec = render(res.path, expressions=EXPRESSIONS, screenshot=tmp_path / "shapes-resnet-report.png")
    _check(rec, 1, tiles=12 * 6 * 6)


def test_compare_report_in_chromium(demo_run, resnet_run, tmp_path):
    res = onnx_fe.report([demo_run, resnet_run], tmp_path / "compare-report.html", gallery_units=1)
    rec = render(res.path, expressions=EXPRESSIONS, screenshot=tmp_path / "compare-report.png")
    _check(rec, 2, tiles=(3 + 12) * 2 * 6)
