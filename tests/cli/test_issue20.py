"""Issue 20 (all but the cluster paths): outputs that are inputs under another name, one-line errors for outputs
that cannot be written and for damaged results, checksums of finished results, orphan processes, memory bounded by
the selected images, the README's API snippet as a plain script, and the default executor of small runs."""

import os
import sys
from pathlib import Path

import onnx
import pytest
from graphs import simple_cnn, write_image_folder

from onnx_fe.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("issue20")
    onnx.save(simple_cnn(in_shape=(None, 3, 16, 16)), root / "m.onnx")
    write_image_folder(root / "data", n_classes=2, per_class=3)
    assert main(["score", str(root / "m.onnx"), str(root / "data"), "-o", str(root / "res"), "-q", "-j", "1"]) == 0
    return root


def one_line(capsys, *args, code=2) -> str:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == code and len(lines) == 1 and lines[0].startswith("onnx-fe: error: "), (rc, err)
    return lines[0]


# --------------------------------------------------------------------------- 2. an output that is an input


def test_randomize_refuses_a_hard_link_to_its_input(files, tmp_path, capsys):
    src = tmp_path / "in.onnx"
    src.write_bytes((files / "m.onnx").read_bytes())
    before = src.read_bytes()
    hard = tmp_path / "hard.onnx"
    os.link(src, hard)
    line = one_line(capsys, "randomize", src, "-o", hard)
    assert "input" in line
    assert src.read_bytes() == before  # the trained model is untouched


def test_report_refuses_to_write_over_its_results(files, tmp_path, capsys):
    res = tmp_path / "res"
    res.mkdir()
    (res / "results.h5").write_bytes((files / "res" / "results.h5").read_bytes())
    before = (res / "results.h5").read_bytes()
    os.link(res / "results.h5", tmp_path / "page.html")
    one_line(capsys, "report", res, "-o", tmp_path / "page.html", "--no-gallery", "-q")
    assert (res / "results.h5").read_bytes() == before


def test_same_file_compares_inodes(tmp_path):
    from onnx_fe.io.paths import same_file

    a = tmp_path / "a"
    a.write_text("x")
    os.link(a, tmp_path / "b")
    (tmp_path / "c").symlink_to(a)
    (tmp_path / "d").write_text("x")
    assert same_file(a, tmp_path / "b") and same_file(a, tmp_path / "c") and same_file(a, a)
    assert not same_file(a, tmp_path / "d") and not same_file(a, tmp_path / "missing")


# --------------------------------------------------------------------------- 6. an empty output path


@pytest.mark.parametrize("cmd", ["score", "ablate", "compare", "randomize", "rank", "report"])
@pytest.mark.parametrize("form", ["-o", "--output", "--output="])
def test_an_empty_output_is_refused_and_nothing_is_written_here(files, tmp_path, capsys, monkeypatch, cmd, form):
    m, d, res = files / "m.onnx", files / "data", files / "res"
    args = {
        "score": ["score", m, d],
        "ablate": ["ablate", m, d, "-r", res, "--steps", "2", "--no-plot"],
        "compare": ["compare", m, d, "--no-plot"],
        "randomize": ["randomize", m],
        "rank": ["rank", res],
        "report": ["report", res, "--no-gallery"],
    }[cmd]
    opt = ["--output="] if form == "--output=" else [form, ""]
    monkeypatch.chdir(tmp_path)
    line = one_line(capsys, *args, *opt, "-q")
    assert "empty" in line
    assert list(tmp_path.iterdir()) == []


def test_the_api_refuses_an_empty_output(files, tmp_path, monkeypatch):
    import onnx_fe

    monkeypatch.chdir(tmp_path)  # a failure must not write into the checkout
    from onnx_fe.errors import OnnxFeError

    with pytest.raises(OnnxFeError, match="empty"):
        onnx_fe.score(files / "m.onnx", files / "data", "")


# --------------------------------------------------------------------------- 4. one line, not an internal error


@pytest.mark.parametrize("cmd", ["report", "randomize"])
def test_an_output_under_proc_is_one_line(files, capsys, cmd):
    if cmd == "report":
        one_line(capsys, "report", files / "res", "-o", "/proc/x.html", "--no-gallery", "-q")
    else:
        one_line(capsys, "randomize", files / "m.onnx", "-o", "/proc/x.onnx", "-q")


def _flipped(files, tmp_path, where: str) -> Path:
    """A copy of the finished results with 16 bytes of one HDF5 structure inverted."""
    import h5py

    src = (files / "res" / "results.h5").read_bytes()
    if where == "classes":
        with h5py.File(files / "res" / "results.h5", "r") as f:
            off = f["classes"].id.get_offset()
    else:
        off = src.find(where.encode())
    assert off > 0
    b = bytearray(src)
    for i in range(off, off + 16):
        b[i] ^= 0xFF
    d = tmp_path / f"flip-{where}"
    d.mkdir()
    (d / "results.h5").write_bytes(bytes(b))
    return d


@pytest.mark.parametrize("where", ["GCOL", "SNOD", "TREE", "HEAP", "classes"])
def test_results_with_flipped_bytes_are_one_line_for_report_and_rank(files, tmp_path, capsys, where):
    d = _flipped(files, tmp_path, where)
    for args in (["rank", d, "-o", tmp_path / "r.csv"], ["report", d, "-o", tmp_path / "r.html", "--no-gallery"]):
        line = one_line(capsys, *args, "-q")
        assert "damaged" in line


# --------------------------------------------------------------------------- 5. damaged results are never reused


def _score_args(files, out):
    return ["score", files / "m.onnx", files / "data", "-o", out, "-j", "1", "-v"]


def _edit(results_h5, what: str) -> None:
    import h5py

    with h5py.File(results_h5, "r+") as f:
        g = f["layers"][sorted(f["layers"])[0]]
        d = g["feature_entropy"] if what == "fe" else g["birth_points"]
        a = d[()]
        a.flat[0] = a.flat[0] + (0.25 if what == "fe" else 1)
        d[...] = a


@pytest.mark.parametrize("what", ["fe", "birth"])
def test_an_edited_result_is_recomputed_not_reused(files, tmp_path, capsys, what):
    import shutil

    out = tmp_path / "res"
    shutil.copytree(files / "res", out)
    before_csv = (out / "scores.csv").read_bytes()
    _edit(out / "results.h5", what)
    assert main([str(a) for a in _score_args(files, out)]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "damaged" in ln]
    assert len(lines) == 1 and "reus" not in err, err
    assert (out / "scores.csv").read_bytes() == before_csv  # recomputed: the same numbers as before the edit
    # and now reused, silently
    assert main([str(a) for a in _score_args(files, out)]) == 0
    assert "damaged" not in capsys.readouterr().err


def test_report_rank_ablate_say_damaged(files, tmp_path, capsys):
    import shutil

    out = tmp_path / "res"
    shutil.copytree(files / "res", out)
    _edit(out / "results.h5", "fe")
    for args in (
        ["rank", out, "-o", tmp_path / "r.csv"],
        ["report", out, "-o", tmp_path / "r.html", "--no-gallery"],
        ["ablate", files / "m.onnx", files / "data", "-r", out, "-o", tmp_path / "abl", "--steps", "2", "--no-plot"],
    ):
        assert "damaged" in one_line(capsys, *args, "-q")


def test_compare_recomputes_a_damaged_run_with_one_line(files, tmp_path, capsys):
    args = ["compare", files / "m.onnx", files / "data", "-o", tmp_path / "cmp", "--no-plot", "-j", "1"]
    assert main([str(a) for a in args]) == 0
    capsys.readouterr()
    (h5,) = (tmp_path / "cmp").glob("*/results.h5")
    _edit(h5, "birth")
    assert main([str(a) for a in args]) == 0
    err = capsys.readouterr().err
    assert len([ln for ln in err.splitlines() if "damaged" in ln]) == 1, err


def test_finished_results_carry_fletcher32_and_a_digest(files):
    import h5py

    from onnx_fe.io.results import verify

    h5 = files / "res" / "results.h5"
    assert verify(h5) == "intact"
    with h5py.File(h5, "r") as f:
        g = f["layers"][sorted(f["layers"])[0]]
        for name in ("birth_points", "mean_activation", "zero_fraction", "feature_entropy", "birth_rate"):
            assert g[name].fletcher32, name


def test_old_results_without_a_digest_are_read_but_not_reused(files, tmp_path, capsys):
    """A results file as older versions wrote it (no user block, no digest)."""
    import h5py

    out = tmp_path / "res"
    out.mkdir()
    with h5py.File(files / "res" / "results.h5", "r") as src, h5py.File(out / "results.h5", "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for k in src:
            src.copy(src[k], dst, name=k)
    assert main(["rank", str(out), "-o", str(tmp_path / "r.csv"), "-q"]) == 0
    assert main([str(a) for a in _score_args(files, out)]) == 0
    err = capsys.readouterr().err
    assert "no checksum" in err and "reus" not in err, err


# --------------------------------------------------------------------------- 3. no orphans after kill -9


def _session(sid: int) -> dict[int, int]:
    """pid -> parent pid of every process in session ``sid`` (read from /proc)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, session, ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            out[int(d)] = int(fields[1])
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_the_driver_leaves_no_process_behind(tmp_path):
    import signal
    import subprocess
    import threading
    import time

    demo = ROOT / "models" / "demo"
    cmd = [sys.executable, "-m", "onnx_fe.cli", "score", demo / "model.onnx", demo / "data", "-o", tmp_path / "o"]
    p = subprocess.Popen(
        [str(c) for c in cmd + ["-j", "2", "-n", "20", "--resamples", "0"]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # a worker: a process of the session whose parent is not the driver
            procs = _session(p.pid)
            if any(pp != p.pid for q, pp in procs.items() if q != p.pid):
                break
            assert p.poll() is None, "the run ended before its workers were seen"
            time.sleep(0.05)
        else:
            pytest.fail("no worker process appeared")
        time.sleep(1.0)  # the pool is running shards
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 10
        while _session(p.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _session(p.pid)
        assert not left, f"processes left after kill -9 of the driver: {left}"
        reader.join(5)  # the dead run's stderr reaches its end: nobody holds it any more
        assert not reader.is_alive()
    finally:
        if _session(p.pid):
            os.killpg(p.pid, signal.SIGKILL)


# --------------------------------------------------------------------------- 8. the README's API as a plain script


def readme_api_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory):
    """What the snippet names: model.onnx (RGB, 224×224) and data/."""
    from graphs import G

    d = tmp_path_factory.mktemp("readme")
    g = G((None, 3, 224, 224), seed=0)
    # layers 0..3; enough work (100 images, 16 maps of 224×224 each) that the default -j runs a pool of processes
    for i, (c, pool) in enumerate(((16, True), (4, True), (6, True), (8, False))):
        g.conv(c, name=f"conv{i}")
        g.act("relu")
        if pool:
            g.pool()
    g.head(2)
    onnx.save(g.model(), d / "model.onnx")
    write_image_folder(d / "data", n_classes=2, per_class=50, size=(40, 40))
    return d


def test_the_readme_run_is_large_enough_for_worker_processes():
    from onnx_fe.execution.local import worth_a_pool

    maps = [(16, 224, 224), (4, 112, 112), (6, 56, 56), (8, 28, 28)]  # the model of readme_dir, 100 images
    assert worth_a_pool(100, maps)


@pytest.mark.parametrize("how", ["script", "stdin"])
def test_the_readme_api_snippet_runs_as_a_plain_script_with_the_default_workers(readme_dir, tmp_path, how):
    import shutil
    import subprocess

    snippet = readme_api_snippet()
    assert "__main__" not in snippet and "workers" not in snippet  # as a user copies it: no guard, default -j
    work = tmp_path / "w"
    shutil.copytree(readme_dir, work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    if how == "script":
        (work / "snippet.py").write_text(snippet)
        r = subprocess.run(
            [sys.executable, "snippet.py"], cwd=work, capture_output=True, text=True, timeout=600, env=env
        )
    else:
        r = subprocess.run(
            [sys.executable, "-"], input=snippet, cwd=work, capture_output=True, text=True, timeout=600, env=env
        )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (work / "out" / "scores.csv").exists() and (work / "twin.onnx").exists()
    assert (work / "out" / "report.html").exists()
    assert "died" not in r.stderr, r.stderr


class _Key:  # what a worker gets: a key whose plan is nothing
    def plan(self):
        return None


class _Plan:
    def key(self):
        return _Key()


def _exit_1(plan, start, stop, workers):
    os._exit(1)


def test_a_worker_that_exits_is_not_blamed_on_memory():
    from onnx_fe.errors import OnnxFeError
    from onnx_fe.execution.local import ProcessExecutor, death_cause

    with ProcessExecutor(2, max_restarts=1) as ex, pytest.raises(OnnxFeError) as e:
        list(ex.map(_exit_1, _Plan(), [(0, 1), (1, 2)], 1))
    msg = str(e.value)
    assert "died" in msg and "status 1" in msg and "memory" not in msg, msg
    assert "memory" in death_cause([-9]) and "memory" not in death_cause([-11])


# --------------------------------------------------------------------------- 10. tiny runs stay in this process


def test_small_runs_are_computed_in_process_large_ones_in_a_pool():
    from onnx_fe.execution.local import estimated_work, worth_a_pool

    demo = [(8, 32, 32), (16, 16, 16), (32, 8, 8)]  # models/demo: the default run has 200 images
    assert not worth_a_pool(200, demo)
    assert not worth_a_pool(3, [(64, 224, 224)])
    assert worth_a_pool(100, [(64, 224, 224), (128, 112, 112)])
    assert worth_a_pool(100_000, demo)  # the same model on many images
    assert estimated_work(2, demo) == 2 * estimated_work(1, demo)


def test_the_default_workers_run_a_small_job_without_a_pool(files, tmp_path, monkeypatch):
    import onnx_fe.execution.local as local

    started = []
    monkeypatch.setattr(local.ProcessExecutor, "__init__", lambda self, *a, **k: started.append(a) or 1 / 0)
    monkeypatch.setattr(local, "prestart", lambda: started.append("prestart"))
    import onnx_fe.experiments.score as score

    monkeypatch.setattr(score, "prestart", lambda: started.append("prestart"))
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert main(["score", str(files / "m.onnx"), str(files / "data"), "-o", str(tmp_path / "o"), "-q"]) == 0
    assert started == []


# --------------------------------------------------------------------------- 9. smaller ones


def test_inspect_of_a_model_with_nothing_scorable_is_an_error(tmp_path, capsys):
    from graphs import G

    g = G((None, 3, 1, 1), seed=0)  # its only conv gives 1×1 maps: not a layer
    g.conv(4, name="c")
    g.act("relu")
    g.head(2)
    onnx.save(g.model(), tmp_path / "flat.onnx")
    rc = main(["inspect", str(tmp_path / "flat.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "onnx-fe: error: " in err, (rc, err)


def test_ablate_warns_when_the_data_classes_differ_from_the_outputs(files, tmp_path, capsys):
    # m.onnx has 4 outputs, the data 2 classes
    args = ["ablate", files / "m.onnx", files / "data", "-r", files / "res", "-o", tmp_path / "a", "--steps", "2"]
    assert main([str(a) for a in args + ["--no-plot"]]) == 0
    err = capsys.readouterr().err
    warn = [ln for ln in err.splitlines() if ln.startswith("warning") and "classes" in ln]
    assert len(warn) == 1 and "2 classes" in warn[0] and "4" in warn[0], err


def test_compare_on_a_non_classifier_does_not_speak_of_ablation(files, tmp_path, capsys):
    from graphs import G

    g = G((None, 3, 16, 16), seed=0)
    g.conv(4, name="c1")
    g.act("relu")
    g.conv(4, name="c2")
    g.act("relu")
    onnx.save(g.model(), tmp_path / "maps.onnx")  # its output is a map, not logits
    args = ["compare", tmp_path / "maps.onnx", files / "data", "-o", tmp_path / "c", "--no-plot", "-j", "1"]
    main([str(a) for a in args])
    captured = capsys.readouterr()
    text = captured.err + captured.out + "".join(p.read_text() for p in (tmp_path / "c").glob("*.csv"))
    assert "accuracy" in text and "ablation" not in text, text


def test_a_sigint_inherited_as_ignored_stays_ignored_while_onnxruntime_loads(tmp_path):
    import subprocess

    code = (
        "import signal\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "seen = []\n"
        "real = signal.signal\n"
        "signal.signal = lambda s, h: (seen.append(h), real(s, h))[1]\n"
        "from onnx_fe.model.runner import import_onnxruntime\n"
        "import_onnxruntime()\n"
        "signal.signal = real\n"
        "assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n"
        "print('handlers', [h is signal.SIG_IGN for h in seen])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "False" not in r.stdout, r.stdout  # no handler but SIG_IGN was ever installed


# --------------------------------------------------------------------------- 7. memory bounded by the chosen images


def _huge_npz(path: Path, n: int, shape=(1, 32, 32)) -> None:
    """A compressed .npz whose x (float32, n rows, all zero but the first six) is written a block at a time, never
    held in memory; y: rows 0..5 are classes 0 and 1, the rest class 2."""
    import zipfile

    import numpy as np

    row = int(np.prod(shape))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (n, *shape)})
            first = np.arange(6 * row, dtype="<f4").reshape(6, row) / (6 * row)
            fh.write(first.tobytes())
            block = np.zeros((4096, row), dtype="<f4").tobytes()
            left = n - 6
            while left > 0:
                k = min(4096, left)
                fh.write(block[: k * row * 4])
                left -= k
        y = np.full(n, 2, dtype=np.int64)
        y[:6] = [0, 1, 0, 1, 0, 1]
        with zf.open("y.npy", "w") as fh:
            np.lib.format.write_array(fh, y)


def test_an_npz_is_read_only_as_far_as_the_chosen_images(tmp_path):
    import subprocess

    npz = tmp_path / "big.npz"
    _huge_npz(npz, 400_000)  # x: 1.6 GB declared, a few MB on disk
    assert npz.stat().st_size < 20e6
    code = (
        "import resource, sys\n"
        "import numpy as np\n"
        "from onnx_fe.data import open_dataset\n"
        "from onnx_fe.data.preprocess import Preprocess\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"  # 1 GiB: far less than x
        f"ds = open_dataset({str(npz)!r}, images_per_class=3, classes=['0', '1'])\n"
        "x = ds.load(0, len(ds), None)\n"
        "print(len(ds), ds.ids, x.shape, float(x.max()), ds.fingerprint()[:12])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    n, rest = r.stdout.split(" ", 1)
    assert n == "6" and "(6, 1, 32, 32)" in rest


def test_a_streamed_npz_gives_the_same_dataset_as_a_loaded_one(tmp_path):
    import numpy as np

    from onnx_fe.data import open_dataset

    rng = np.random.default_rng(0)
    x = rng.random((40, 3, 8, 8)).astype(np.float32)
    y = np.arange(40) % 4
    np.savez_compressed(tmp_path / "a.npz", x=x, y=y)
    np.savez(tmp_path / "b.npz", x=np.asfortranarray(x), y=y)  # stored, Fortran order: read whole
    for name in ("a.npz", "b.npz"):
        ds = open_dataset(tmp_path / name, images_per_class=3, seed=1)
        rows = [int(i.split(":")[1]) for i in ds.ids]
        assert np.array_equal(ds.load(0, len(ds), None), x[rows])
        assert ds.sample_shape == (3, 8, 8)
    a = open_dataset(tmp_path / "a.npz", images_per_class=3, seed=1)
    b = open_dataset(tmp_path / "b.npz", images_per_class=3, seed=1)
    assert a.fingerprint() == b.fingerprint()


def test_the_report_gallery_reads_only_its_images_of_an_npz(tmp_path):
    import subprocess

    npz = tmp_path / "big.npz"
    _huge_npz(npz, 700_000)  # x: 2.9 GB declared
    demo = ROOT / "models" / "demo" / "model.onnx"
    out = tmp_path / "res"
    args = ["score", demo, npz, "-n", "3", "--classes", "0,1", "-o", out, "-j", "1", "-q", "--resamples", "0"]
    assert main([str(a) for a in args]) == 0
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (5 << 29, 5 << 29))\n"  # 2.5 GiB: less than x
        "from onnx_fe.cli import main\n"
        f"sys.exit(main(['report', {str(out)!r}, '-o', {str(tmp_path / 'r.html')!r}, '-q']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Unit gallery" in (tmp_path / "r.html").read_text()
