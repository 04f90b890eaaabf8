"""``--cluster slurm`` and ``--cluster-option``: what is checked before anything starts, and the SLURMCluster
arguments they become (fixed scaling, the driver's Python, worker lifetimes a margin before the walltime)."""

from __future__ import annotations

import sys

import pytest

import onnx_fe
from onnx_fe.cli import main
from onnx_fe.config import ScoreConfig
from onnx_fe.execution.slurm import cluster_kwargs, parse_options


def test_options_become_slurmcluster_arguments_with_a_walltime_margin():
    opts = parse_options(
        [
            "queue=cpu",
            "walltime=02:00:00",
            "cores=8",
            "jobs=3",
            "job_extra_directives=--exclusive",
            "job_extra_directives=--constraint=a,b",
        ]
    )
    kw, own = cluster_kwargs(opts)
    assert own["jobs"] == 3 and kw["queue"] == "cpu" and kw["cores"] == 8
    assert kw["processes"] == 8 and kw["memory"] == "16GB"  # one single-threaded worker per core
    assert kw["job_extra_directives"] == ["--exclusive", "--constraint=a,b"]
    assert kw["python"] == sys.executable  # the jobs run this environment's Python
    # workers retire 12 min (a tenth) before the 2 h walltime, staggered over a quarter of that margin
    assert kw["worker_extra_args"] == ["--lifetime", "6480s", "--lifetime-stagger", "180s"]


def test_short_walltimes_keep_a_minute_and_lifetime_can_be_set_or_dropped():
    kw, _ = cluster_kwargs(parse_options(["walltime=10"]))
    assert kw["worker_extra_args"][:2] == ["--lifetime", "540s"]
    kw, _ = cluster_kwargs(parse_options(["walltime=1-00:00:00", "lifetime=20h", "lifetime_stagger=5m"]))
    assert kw["worker_extra_args"] == ["--lifetime", "20h", "--lifetime-stagger", "5m"]
    kw, _ = cluster_kwargs(parse_options(["lifetime=none"]))
    assert "worker_extra_args" not in kw


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"cluster": "slurm", "cluster_options": ["queue"]}, "expected KEY=VALUE"),
        ({"cluster": "slurm", "cluster_options": ["partition=cpu"]}, "unknown key"),
        ({"cluster": "slurm", "cluster_options": ["cores=0"]}, "expected a positive int"),
        ({"cluster": "slurm", "cluster_options": ["walltime=soon"]}, "walltime=soon"),
        ({"cluster": "slurm", "cluster_options": ["cores=2", "processes=4"]}, "exceeds cores"),
        ({"cluster": "pbs"}, "--cluster 'pbs'"),
        ({"cluster_options": ["queue=cpu"]}, "needs --cluster slurm"),
        ({"cluster": "slurm", "scheduler": "tcp://h:8786"}, "exclude each other"),
    ],
)
def test_bad_cluster_options_are_refused_before_anything_starts(kw, message):
    with pytest.raises(onnx_fe.OnnxFeError, match=message):
        ScoreConfig.build("m.onnx", "data", **kw)


def test_cli_refuses_a_bad_cluster_option_in_one_line(capsys):
    assert main(["score", "m.onnx", "d", "--cluster", "slurm", "--cluster-option", "nope=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onnx-fe: error: --cluster-option nope") and "unknown key" in err[0]


def test_the_api_takes_cluster_options_as_a_dict():
    cfg = ScoreConfig.build(
        "m.onnx", "data", cluster="slurm", cluster_options={"jobs": 2, "job_extra_directives": ["--exclusive", "-C x"]}
    )
    assert cfg.cluster_options == (
        ("jobs", "2"),
        ("job_extra_directives", "--exclusive"),
        ("job_extra_directives", "-C x"),
    )
    assert ScoreConfig.from_json(cfg.to_json()) == cfg
