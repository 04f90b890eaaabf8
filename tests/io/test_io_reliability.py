"""Issue 11, storage side: the output lock, output directories that cannot be made, the safe replace of a
previous result, failed writes (a full disk), damaged .partial files, and negative zeros in CSVs."""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from onnx_fe.errors import OnnxFeError
from onnx_fe.io.lock import LOCK_NAME, default_output, make_output_dir, output_lock
from onnx_fe.io.results import (
    PartialWriter,
    create,
    describe_change,
    ensure_csv,
    resume_partial,
    stored_params,
    write_csv,
)
from onnx_fe.io.tables import write_rows_csv

ROOT = Path(__file__).resolve().parents[2]
N, C = 6, 3


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.strip() == msg and "Traceback" not in msg
    return msg


def _new(path, params, n=N):
    unit = SimpleNamespace(
        index=0, name="conv", tap="t", chain_str="Conv→Relu", tap_op="Relu", activated=True, file_order=0
    )
    return PartialWriter(_create(path, params, n, unit), path)


def _create(path, params, n, unit):
    return create(
        path,
        params=params,
        meta={"device": "cpu"},
        classes=["a", "b"],
        labels=np.arange(n) % 2,
        ids=[f"{i}.png" for i in range(n)],
        units=[unit],
        n_channels_hw={0: (C, 4, 4)},
        keep_activations=False,
    )


def _write_rows(w, s, e, value=1):
    w.write(
        0,
        s,
        e,
        birth_points=np.full((e - s, C), value, np.int32),
        mean_activation=np.full((e - s, C), 0.5, np.float32),
        zero_fraction=np.zeros((e - s, C), np.float32),
        hrank=np.ones((e - s, C), np.int32),
        activation_std=np.full((e - s, C), 0.125, np.float32),
    )
    w.done(e)


def _complete(w, fe_value=0.25):
    tables = {"n_images": np.array([N // 2, N // 2]), "weight_l1": np.ones(C)}
    tables.update({k: np.full((2, C), fe_value) for k in ("feature_entropy", "birth_rate", "ineffectiveness")})
    w.put_tables(0, tables)
    w.complete()


def _finished_run(out, params, fe_value=0.25):
    w = _new(out / "results.h5.partial", params)
    _write_rows(w, 0, N)
    _complete(w, fe_value)
    w.commit(out / "results.h5", out / "scores.csv")


# --------------------------------------------------------------------------- the lock

_HOLDER = """
import sys, time
from onnx_fe.io.lock import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold(out, seconds):
    p = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_second_run_into_a_locked_directory_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    holder = _hold(out, 30)
    try:
        refused = f"in use by another onnx-fe run \\(pid {holder.pid}\\)"
        with pytest.raises(OnnxFeError, match=refused) as e, output_lock(out):
            pass
        assert "--wait" in _one_line(e)
    finally:
        holder.kill()
        holder.wait()
    with output_lock(out) as got:  # the kernel dropped the dead holder's lock
        assert got == out and (out / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_with_wait_the_second_run_waits_for_the_first(tmp_path):
    out = tmp_path / "out"
    holder = _hold(out, 1.0)
    notes = []
    t0 = time.monotonic()
    with output_lock(out, wait=True, log=notes.append):
        waited = time.monotonic() - t0
    holder.wait()
    assert waited > 0.5  # the holder kept it for 1 s after it said "locked"
    assert len(notes) == 1 and f"pid {holder.pid}" in notes[0]


def test_the_lock_is_released_when_the_block_ends_or_fails(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ZeroDivisionError), output_lock(out):
        raise ZeroDivisionError
    with output_lock(out):
        pass


@pytest.mark.parametrize("bad", ["/dev/null/sub", "/proc/foo/bar", "/sys/kernel/x/y"])
def test_output_directories_that_cannot_be_made_give_one_line(bad):
    if Path(bad).parent.exists() and os.access(Path(bad).parent, os.W_OK) and Path(bad).parts[1] != "dev":
        pytest.skip(f"{Path(bad).parent} is writable here")
    with pytest.raises(OnnxFeError, match="cannot create output directory") as e:
        make_output_dir(bad)
    assert bad in _one_line(e)
    with pytest.raises(OnnxFeError, match="cannot create output directory"), output_lock(bad):
        pass


def test_an_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OnnxFeError, match="exists and is not a directory"):
        make_output_dir(tmp_path / "f")
    with pytest.raises(OnnxFeError, match="cannot create output directory"):
        make_output_dir(tmp_path / "f" / "sub")


def test_default_outputs_of_different_model_files_differ(tmp_path):
    a, b = tmp_path / "converged" / "model.onnx", tmp_path / "random" / "model.onnx"
    assert default_output(a) != default_output(b)
    assert default_output(a).name.startswith("model-") and default_output(a).parent == Path("onnx-fe-results")
    assert default_output(a) == default_output(tmp_path / "converged" / ".." / "converged" / "model.onnx")


# --------------------------------------------------------------------------- the safe replace


def test_a_previous_result_stays_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _finished_run(out, {"run": 1}, fe_value=0.25)
    old_csv = (out / "scores.csv").read_bytes()
    # a second run with other parameters, which fails half way
    w = _new(out / "results.h5.partial", {"run": 2})
    _write_rows(w, 0, 2)
    w.close()
    assert (out / "scores.csv").read_bytes() == old_csv
    assert stored_params(out / "results.h5") == {"run": 1}
    assert describe_change(stored_params(out / "results.h5"), {"run": 2}) == "run"
    assert describe_change({"data_sha256": "a"}, {"data_sha256": "b"}) == "data contents"
    # the next run completes: now both files are replaced, together
    f = resume_partial(out / "results.h5.partial", {"run": 2})
    assert f is not None and int(f.attrs["n_done"]) == 2
    w = PartialWriter(f, out / "results.h5.partial")
    _write_rows(w, 2, N)
    _complete(w, fe_value=0.75)
    w.commit(out / "results.h5", out / "scores.csv")
    assert not (out / "results.h5.partial").exists() and not (out / "scores.csv.partial").exists()
    assert stored_params(out / "results.h5") == {"run": 2}
    assert b"0.75" in (out / "scores.csv").read_bytes() and b"0.25" not in (out / "scores.csv").read_bytes()
    assert ensure_csv(out / "results.h5", out / "scores.csv") is False  # matches its results.h5


def test_a_scores_csv_left_from_another_run_is_rewritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _finished_run(out, {"run": 1}, fe_value=0.25)
    stale = (out / "scores.csv").read_bytes()
    _finished_run(out, {"run": 2}, fe_value=0.75)
    (out / "scores.csv").write_bytes(stale)  # as if a crash fell between the two renames
    assert ensure_csv(out / "results.h5", out / "scores.csv") is True
    assert b"0.75" in (out / "scores.csv").read_bytes()
    (out / "scores.csv").unlink()
    assert ensure_csv(out / "results.h5", out / "scores.csv") is True and (out / "scores.csv").exists()


# --------------------------------------------------------------------------- failed writes


def test_a_failed_write_discards_the_partial_with_one_line_and_keeps_the_previous_result(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    _finished_run(out, {"run": 1})
    before = (out / "results.h5").read_bytes(), (out / "scores.csv").read_bytes()
    partial = out / "results.h5.partial"
    w = _new(partial, {"run": 2})
    real = h5py.Dataset.__setitem__
    calls = {"n": 0}

    def full_disk(self, key, value):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError(
                "Unable to synchronously flush file (file write failed: errno = 28, error message = "
                "'No space left on device', offset = 262144)"
            )
        return real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full_disk)
    with pytest.raises(OnnxFeError, match="no space left on device while writing") as e:
        _write_rows(w, 0, 2)
        _write_rows(w, 2, 4)
    msg = _one_line(e)
    assert "removed" in msg and str(partial) in msg
    assert not partial.exists()
    assert ((out / "results.h5").read_bytes(), (out / "scores.csv").read_bytes()) == before


def test_a_csv_that_cannot_be_written_gives_one_line_and_no_half_file(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    _finished_run(out, {"run": 1})
    real_open = open

    def no_space(path, *a, **k):
        if str(path).endswith("x.csv.partial"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", no_space)
    with pytest.raises(OnnxFeError, match="no space left on device while writing .*x.csv") as e:
        write_csv(out / "results.h5", out / "x.csv")
    _one_line(e)
    with pytest.raises(OnnxFeError, match="cannot write .*t.csv"):
        write_rows_csv(out / "missing-dir" / "t.csv", ["a"], [{"a": 1.0}])
    assert not list(out.glob("*.partial"))


_TMPFS = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import numpy as np
from test_io_reliability import _new, _write_rows
from onnx_fe.errors import OnnxFeError
partial = Path(sys.argv[1]) / "results.h5.partial"
n = int(sys.argv[3])
try:
    w = _new(partial, {"run": 1}, n=n)
    for s in range(0, n, 100):
        _write_rows(w, s, s + 100)
except OnnxFeError as e:
    print("onnx-fe: error:", e)
    sys.exit(2)
"""


@pytest.mark.parametrize("n", [4000, 20000])  # the disk fills while the file is made / while rows are written
def test_a_real_full_disk_ends_with_one_line_not_a_crash(tmp_path, n):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        r = subprocess.run(
            [sys.executable, "-c", _TMPFS, str(mnt), str(Path(__file__).parent), str(n)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert r.returncode == 2, (r.returncode, r.stderr[-2000:])  # not 139 (segfault at exit)
        assert r.stderr == "" and r.stdout.count("\n") == 1 and "no space left on device" in r.stdout
        assert not (mnt / "results.h5.partial").exists()
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# --------------------------------------------------------------------------- damaged partials


def _interrupted(tmp_path, n_done=4):
    partial = tmp_path / "results.h5.partial"
    w = _new(partial, {"run": 1})
    _write_rows(w, 0, n_done)
    w.close()
    return partial


def test_a_sound_partial_resumes(tmp_path):
    partial = _interrupted(tmp_path)
    notes = []
    f = resume_partial(partial, {"run": 1}, log=notes.append)
    assert f is not None and int(f.attrs["n_done"]) == 4 and notes == []
    f.close()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_an_unreadable_partial_is_restarted_with_one_note(tmp_path, damage):
    partial = _interrupted(tmp_path)
    size = partial.stat().st_size
    if damage == "truncate":
        os.truncate(partial, size // 2)
    elif damage == "garbage":
        partial.write_bytes(os.urandom(size))
    else:
        partial.write_bytes(b"")
    notes = []
    assert resume_partial(partial, {"run": 1}, log=notes.append) is None
    assert len(notes) == 1 and "cannot be read" in notes[0] and "starting afresh" in notes[0]
    assert "\n" not in notes[0]
    assert not partial.exists()


def test_a_partial_counting_unwritten_images_as_done_is_restarted(tmp_path):
    partial = _interrupted(tmp_path, n_done=2)
    with h5py.File(partial, "r+") as f:  # as after a crash that lost the last batch's data but not its count
        f.attrs["n_done"] = 4
    notes = []
    assert resume_partial(partial, {"run": 1}, log=notes.append) is None
    assert len(notes) == 1 and "damaged" in notes[0] and "never written" in notes[0]


def test_a_partial_of_other_parameters_is_replaced_saying_what_changed(tmp_path):
    partial = _interrupted(tmp_path)
    notes = []
    assert resume_partial(partial, {"run": 2}, log=notes.append) is None
    assert not partial.exists()
    assert len(notes) == 1 and notes[0].startswith("note:") and "other run" in notes[0] and "afresh" in notes[0]


# --------------------------------------------------------------------------- negative zeros


def test_no_negative_zero_in_scores_csv_or_tables(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _finished_run(out, {"run": 1}, fe_value=-0.0)
    text = (out / "scores.csv").read_text()
    assert "-0.0" not in text and ",0.0," in text
    write_rows_csv(tmp_path / "t.csv", ["a", "b"], [{"a": -0.0, "b": -1.5}])
    assert (tmp_path / "t.csv").read_text().splitlines()[1] == "0.0,-1.5"


def test_a_full_disk_while_committing_keeps_the_finished_partial_and_the_previous_result(tmp_path, monkeypatch):
    import onnx_fe.io.results as results

    out = tmp_path / "out"
    out.mkdir()
    _finished_run(out, {"run": 1})
    before = (out / "results.h5").read_bytes(), (out / "scores.csv").read_bytes()
    w = _new(out / "results.h5.partial", {"run": 2})
    _write_rows(w, 0, N)
    _complete(w)

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "_write_csv_to", no_space)
    with pytest.raises(OnnxFeError, match="cannot write .*scores.csv: no space left on device") as e:
        w.commit(out / "results.h5", out / "scores.csv")
    assert "kept in results.h5.partial" in _one_line(e)
    assert ((out / "results.h5").read_bytes(), (out / "scores.csv").read_bytes()) == before
    monkeypatch.undo()
    f = resume_partial(out / "results.h5.partial", {"run": 2})  # the next run finds it whole and only commits
    assert f is not None and int(f.attrs["n_done"]) == N and f.attrs["complete"]
    PartialWriter(f, out / "results.h5.partial").commit(out / "results.h5", out / "scores.csv")
    assert stored_params(out / "results.h5") == {"run": 2}
