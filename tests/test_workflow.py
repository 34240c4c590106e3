"""The Snakemake workflow: dry run without TensorFlow, lint, format, and a tiny real run end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, snakemake


def test_dry_run_imports_no_tensorflow_and_globs_no_data(tmp_path):
    # A tensorflow that cannot be imported: parsing the workflow must not need it.
    fake = tmp_path / "blocker" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('TensorFlow imported at parse time')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "blocker"))
    # a fresh directory: no synthetic release, no results; the plan must not need them
    work = tmp_path / "work"
    shutil.copytree(ROOT / "config", work / "config")
    r = snakemake("-s", str(ROOT / "Snakefile"), "--directory", str(work), "-n", "--quiet", "rules", env=env)
    assert r.returncode == 0, r.stderr
    for rule in ("mock_release", "make_cutouts", "build_shards", "train_cnn", "evaluate_cnn", "plot_mosaic"):
        assert rule in r.stdout + r.stderr


def test_slurm_profile_dry_run_needs_no_cluster(tmp_path):
    work = tmp_path / "work"
    shutil.copytree(ROOT / "config", work / "config")
    r = snakemake("-s", str(ROOT / "Snakefile"), "--directory", str(work), "-n", "--profile", str(ROOT / "profiles" / "slurm"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "train_cnn" in r.stdout + r.stderr
    assert "mpi=" not in r.stdout + r.stderr  # one training task: the job is started as every other


def test_slurm_profile_dry_run_asks_for_the_training_tasks(tmp_path):
    """train.nodes x train.tasks_per_node > 1: the train_cnn job asks SLURM for them (the executor plugin's task
    resources) and is run as it is (mpi), to start them itself with srun; the other jobs are as before."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "config", work / "config")
    (tmp_path / "tasks.yaml").write_text("train: {nodes: 2, tasks_per_node: 2}\n")
    r = snakemake("-s", str(ROOT / "Snakefile"), "--directory", str(work), "-n", "--profile", str(ROOT / "profiles" / "slurm"),
                  "--configfile", str(work / "config" / "config.yaml"), str(tmp_path / "tasks.yaml"), "--until", "train_cnn")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    jobs = (r.stdout + r.stderr).split("\nrule ")[1:]
    train = [j for j in jobs if j.startswith("train_cnn:")]
    assert train and all("nodes=2, tasks_per_node=2, mpi=srun, tasks_per_gpu=0" in j for j in train), train[:1]
    assert not any("mpi=" in j for j in jobs if not j.startswith("train_cnn:"))


# A stand-in for conda, enough for Snakemake to list the environments each job would use (it builds none)
FAKE_CONDA = """#!/bin/sh
case "$*" in
  *--version*) echo "conda 25.1.1";;
  *info*) echo '{"conda_prefix": "/nonexistent", "root_prefix": "/nonexistent", "platform": "linux-64",
                 "conda_version": "25.1.1", "envs_dirs": [], "pkgs_dirs": [], "channels": [], "env_vars": {}}';;
  *config*) echo '{"get": {"channel_priority": "strict"}}';;
  *) exit 1;;
esac
"""


@pytest.mark.parametrize("node,env", [("knl-node", "envs/tf.yaml"), ("gpu-node", "envs/tf-gpu.yaml")])
def test_the_profiles_switch_picks_trainings_conda_env(tmp_path, node, env):
    """`train_cnn: *gpu-node`, the profile's one line, makes --sdm conda train in the CUDA build of TensorFlow."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "conda").write_text(FAKE_CONDA)
    (tmp_path / "bin" / "conda").chmod(0o755)
    text = (ROOT / "profiles" / "slurm" / "config.yaml").read_text()
    assert "  train_cnn: *knl-node\n" in text
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(text.replace("train_cnn: *knl-node", f"train_cnn: *{node}"))
    shutil.copytree(ROOT / "config", tmp_path / "work" / "config")
    r = snakemake("-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path / "work"), "--profile",
                  str(tmp_path / "profile"), "--sdm", "conda", "--list-conda-envs", "train", "--quiet",
                  env=dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    envs = {Path(line.split()[0]).resolve().relative_to(ROOT).as_posix()
            for line in r.stdout.splitlines() if line.startswith("/")}
    assert {e for e in envs if e.startswith("envs/tf")} == {env}  # up to `train`, only train_cnn uses TensorFlow
    assert "never awaited" not in r.stderr


def test_lint_is_clean():
    r = snakemake("--lint")
    assert r.returncode == 0, r.stdout + r.stderr


def test_snakefmt_check():
    snakefmt = Path(sys.executable).parent / "snakefmt"
    r = subprocess.run([str(snakefmt), "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_config_typo_fails_at_parse_time(tmp_path):
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["shards"]["sise"] = 512
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    r = snakemake("-n", "--configfile", str(tmp_path / "bad.yaml"))
    assert r.returncode != 0 and "sise" in r.stdout + r.stderr


def test_tiny_pipeline_end_to_end(tiny_run):
    import h5py
    import numpy as np
    import pandas as pd

    w = tiny_run
    with h5py.File(w / "results" / "cutouts" / "121-0" / "1210p060.h5", "r") as f:
        assert f["cutouts"].shape[1:] == (64, 64, 6)
    summary = (w / "results" / "cutouts" / "summary.txt").read_text()
    assert "bricks selected: 2; cut: 2; missing: 0; failed: 0" in summary
    # two bricks: two folds (of examples, as .test splits by example), each fold's shard set a view of the shards
    assert np.load(w / "results" / "shards" / "xfold0_0.npy").shape == (16, 64, 64, 6)
    for k in (0, 1):
        view = w / "results" / "folds" / str(k) / "shards"
        assert (view / "xtrain_0.npy").is_symlink() and (view / "xtest_0.npy").resolve().name.startswith(f"xfold{k}_")
        assert (w / "results" / "folds" / str(k) / "model" / "model.keras").stat().st_size > 0
    m = json.loads((w / "results" / "evaluation" / "metrics.json").read_text())
    for key in ("auc", "auc_pooled", "ci95", "p_value", "power", "training", "baseline", "verdict_class",
                "verdict_reasons", "verdict", "by_mag_g", "by_fold", "by_brick"):
        assert key in m
    assert 0 <= m["auc"] <= 1 and m["verdict_class"] == "inconclusive"  # one epoch, examples split by example
    assert m["folds"]["k"] == 2 and "2 folds instead of the 5" in m["verdict"]
    pred = pd.read_csv(w / "results" / "evaluation" / "predictions.csv", dtype={"brick": str})
    man = pd.read_csv(w / "results" / "shards" / "manifest.csv", dtype={"brick": str})
    assert len(pred) == len(man) and set(pred["fold"]) == {0, 1}  # every example tested once
    # every example records where it came from: region ("" for the synthetic single-tree release) and seed folder
    assert {"region", "rs"} <= set(man.columns) and set(man.loc[man["label"] == 1, "rs"]) == {"rs0"}
    assert (pred["split"] == "fold" + pred["fold"].astype(str)).all()
    figures = ("roc", "binned", "calibration", "training", "folds", "statistics", "attribution", "mosaic",
               "mosaic_extremes", "capacity")
    for name in figures:
        assert (w / "results" / "evaluation" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (w / "results" / "evaluation" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    stats = json.loads((w / "results" / "evaluation" / "image_statistics.json").read_text())
    assert set(stats) == {"concentration", "asymmetry", "noise_chi", "neighbours", "second_moment", "flux_ratio",
                          "centroid_offset"}
    # two trainings of each fold (evaluate.replicates: 2): each example scored by their mean, their spread in the
    # interval; the capacity check planted the grid on the run's reals
    assert {"p_fake_replicate_0", "p_fake_replicate_1"} <= set(pred.columns)
    assert np.allclose(pred["p_fake"], pred[["p_fake_replicate_0", "p_fake_replicate_1"]].mean(axis=1))
    assert m["replicates"]["n"] == 2 and m["power"]["training_variance"] >= 0
    for k in (0, 1):
        assert (w / "results" / "replicates" / "1" / "folds" / str(k) / "model" / "model.keras").stat().st_size > 0
    cap = json.loads((w / "results" / "evaluation" / "capacity.json").read_text())
    assert set(cap) >= {"plantings", "pairs", "rows", "scenarios", "statement"}  # (2 tiny bricks: few or no pairs)
    assert m["capacity"]["statement"] == cap["statement"] and m["answers"]["classes"] == m["verdict_class"]
    assert {len(m[f"by_{k}"]) > 0 for k in ("mag_g", "rz", "size")} == {True}
    for log in ("mock_release", "summarise_cutouts", "cutouts/121-0", "shards/plan", "shards/scatter/121-0",
                "shards/gather/1", "shards/build", "fold_shards/0", "train_cnn/0", "replicates/1/train_cnn/1",
                "predict_fold/1", "nuisance_baseline", "capacity/121-0", "capacity", "evaluate_cnn", "plot_evaluation",
                "plot_mosaic"):
        assert (w / "logs" / f"{log}.log").exists()


def test_report_holds_every_figure_and_the_metrics(tiny_run):
    r = snakemake("-s", str(ROOT / "Snakefile"), "--directory", str(tiny_run), "--report", "report.html", cwd=tiny_run)
    assert r.returncode == 0, r.stderr[-3000:]
    html = (tiny_run / "report.html").read_text()
    for name in ("roc.png", "binned.png", "calibration.png", "training.png", "statistics.png", "attribution.png",
                 "mosaic.png", "mosaic_extremes.png", "metrics.json"):
        assert name in html, name
    for caption in ("reliability diagram", "Integrated gradients", "Kolmogorov-Smirnov", "matched in extinction"):
        assert caption in html, caption


def test_rerun_has_nothing_to_do(tiny_run):
    r = snakemake("-s", str(ROOT / "Snakefile"), "--directory", str(tiny_run), "-n", cwd=tiny_run)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr


def test_every_file_the_run_wrote_is_declared(tiny_run):
    """Each file under results/, resources/ and logs/ is an output or a log of a job of the DAG (Snakemake's
    --summary), or lies under a declared directory; the benchmarks are Snakemake's own (benchmark:)."""
    r = snakemake("-s", str(ROOT / "Snakefile"), "--directory", str(tiny_run), "--summary", cwd=tiny_run)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.split("\t") for line in r.stdout.splitlines()[1:] if "\t" in line]
    declared = {Path(row[0]) for row in rows} | {Path(log) for row in rows for log in row[3].split(", ") if log != "-"}
    assert Path("results/folds/0/training") in declared  # the training's state: checkpoints, TensorBoard, run.json
    written = [p.relative_to(tiny_run) for root in ("results", "resources", "logs")
               for p in (tiny_run / root).rglob("*") if p.is_file()]
    undeclared = [str(p) for p in written if p.parts[:2] != ("results", "benchmarks")
                  and not any(d == p or d in p.parents for d in declared)]
    assert len(written) > 100 and not undeclared, undeclared


def test_bad_bricks_of_a_real_layout_release_are_reported_not_fatal(tiny_run, tmp_path):
    """A release outside the synthetic root (as a user's would be), listed in a file, with a truncated coadd
    and a brick that is not there: the run goes on and failures.csv says which and why."""
    import pandas as pd

    run = tmp_path / "run"
    shutil.copytree(tiny_run / "resources" / "synthetic", run / "data")
    image = run / "data" / "release" / "coadd" / "121" / "1212p060" / "legacysurvey-1212p060-invvar-z.fits.fz"
    image.write_bytes(image.read_bytes()[:5000])
    (run / "bricks.txt").write_text("1210p060\n1212p060\n1215p060  # not in this release\n")
    cfg = yaml.safe_load((ROOT / ".test" / "config" / "config.yaml").read_text())
    cfg["release"].update(root="data/release", injection_root="data/injection", bricks="bricks.txt")
    cfg["cutouts"]["batch_size"] = 2
    (run / "config").mkdir()
    (run / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = snakemake("-s", str(ROOT / "Snakefile"), "--directory", str(run), "--cores", "2", "cutouts", cwd=run)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "mock_release" not in r.stdout + r.stderr  # a release outside synthetic.root is never rendered
    failures = pd.read_csv(run / "results" / "cutouts" / "failures.csv").set_index("brick")
    assert failures.loc["1212p060", "status"] == "failed" and "invvar-z.fits.fz" in failures.loc["1212p060", "reason"]
    assert failures.loc["1215p060", "status"] == "missing"
    assert sorted(p.name for p in (run / "results" / "cutouts").glob("*/*.h5")) == ["1210p060.h5"]
    summary = (run / "results" / "cutouts" / "summary.txt").read_text()
    assert "bricks selected: 3; cut: 1; missing: 1; failed: 1" in summary
