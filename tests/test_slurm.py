"""The SLURM path for real: the default pipeline through `--profile profiles/slurm` on a local cluster.

tests/slurm/local_cluster.sh starts munged, slurmctld and slurmd on localhost (partitions cpu,
knl and gpu). The profile is used as written, except for what a 2-core node cannot give: the
training job's cores and memory, and the status poll's start-up delay.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, snakemake

CLUSTER = ROOT / "tests" / "slurm" / "local_cluster.sh"
STATE = os.environ.get("REALFAKE_SLURM_DIR", "/tmp/realfake-slurm")
HAVE_SLURM = all(shutil.which(c) for c in ("slurmctld", "slurmd", "munged", "sbatch"))

pytestmark = pytest.mark.skipif(
    not HAVE_SLURM and not os.environ.get("REALFAKE_REQUIRE_SLURM"),
    reason="SLURM is not installed (apt-get install slurm-wlm munge); .ci/run installs it",
)


@pytest.fixture(scope="module")
def cluster():
    subprocess.run(["bash", str(CLUSTER), "up"], check=True, timeout=120)
    yield
    subprocess.run(["bash", str(CLUSTER), "down"], check=True, timeout=120)


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("slurm")
    shutil.copytree(ROOT / ".test" / "config", work / "config")
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile["set-resources"]["train_cnn"].update(cpus_per_task=2, mem_mb=4000)  # the node has 2 cores
    profile["set-threads"]["make_cutouts"] = 2
    profile["cores"] = 2  # caps grouped jobs at the node's cores
    profile["slurm-init-seconds-before-status-checks"] = 1
    (work / "profile").mkdir()
    (work / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    r = snakemake("-s", str(ROOT / "Snakefile"), "--directory", str(work), "--profile", str(work / "profile"),
                  cwd=work, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return work, profile


def _jobs(work) -> pd.DataFrame:
    """rule, SLURM job id, state and partition of every job of this run."""
    comp = {}
    for line in open(f"{STATE}/log/jobcomp.txt"):
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        comp[fields["JobId"]] = fields
    rows = []
    logs = work / ".snakemake" / "slurm_logs"  # rule_<name>/[<wildcards>/]<jobid>.log
    for log in sorted(logs.rglob("*.log")):
        job = comp[log.stem]
        rows.append({"rule": log.relative_to(logs).parts[0][5:], "job": log.stem, "state": job["JobState"],
                     "partition": job["Partition"]})
    return pd.DataFrame(rows)


def test_every_job_went_through_sbatch_and_training_to_the_partition_it_asked_for(slurm_run):
    work, profile = slurm_run
    jobs = _jobs(work)
    # fold_shards is a local rule (links, seconds): it runs on the submitting host
    rules = {"mock_release", "make_cutouts", "summarise_cutouts", "plan_shards", "scatter_shards", "gather_shards",
             "build_shards", "train_cnn", "predict_fold",
             "nuisance_baseline", "evaluate_cnn", "plot_evaluation", "plot_mosaic"}
    assert set(jobs["rule"]) == rules and (jobs["state"] == "COMPLETED").all()
    assert (jobs["rule"] == "make_cutouts").sum() == 2  # one per batch: .test has two bricks, one per batch
    assert (jobs["rule"] == "train_cnn").sum() == 2  # one per fold: two bricks, two folds
    train = jobs[jobs["rule"] == "train_cnn"].iloc[0]
    assert train["partition"] == profile["set-resources"]["train_cnn"]["slurm_partition"] == "knl"
    assert (jobs.loc[jobs["rule"] != "train_cnn", "partition"] == profile["default-resources"]["slurm_partition"]).all()
    out = subprocess.run(["scontrol", "show", "job", train["job"]], capture_output=True, text=True).stdout
    assert "Features=knl" in out  # the constraint reached SLURM (MinJobAge keeps the finished job visible)


def test_outputs_equal_those_of_a_local_run(slurm_run, tiny_run):
    import h5py

    work, _ = slurm_run
    for f in sorted((tiny_run / "results" / "shards").glob("*.npy")):
        assert (work / "results" / "shards" / f.name).read_bytes() == f.read_bytes(), f.name
    cutouts = sorted((tiny_run / "results" / "cutouts").glob("*/*.h5"))
    assert len(cutouts) == 2
    for f in cutouts:
        with h5py.File(f, "r") as a, h5py.File(work / "results" / "cutouts" / f.parent.name / f.name, "r") as b:
            assert np.array_equal(a["cutouts"][()], b["cutouts"][()])
    local = pd.read_csv(tiny_run / "results" / "evaluation" / "predictions.csv")
    remote = pd.read_csv(work / "results" / "evaluation" / "predictions.csv")
    assert np.allclose(local["p_fake"], remote["p_fake"], atol=1e-5)  # same training, deterministic ops


def test_a_failed_job_is_reported_with_its_slurm_log_and_a_rerun_completes(slurm_run, tmp_path):
    work, _ = slurm_run
    run = tmp_path / "run"
    shutil.copytree(ROOT / ".test" / "config", run / "config")
    shutil.copytree(work / "resources", run / "resources")  # the synthetic release, already built
    cfg = yaml.safe_load((run / "config" / "config.yaml").read_text())
    cfg["cutouts"]["on_error"] = "fail"  # a bad brick fails its job (the default skips it with a record)
    (run / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    image = next((run / "resources" / "synthetic" / "release" / "coadd").rglob("legacysurvey-1212p060-image-r.fits.fz"))
    good = image.read_bytes()
    image.write_bytes(good[: len(good) // 3])  # truncated, as by a failed transfer
    args = ("-s", str(ROOT / "Snakefile"), "--directory", str(run), "--profile", str(work / "profile"), "cutouts")

    r = snakemake(*args, cwd=run, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert re.search(r"\.snakemake/slurm_logs/rule_make_cutouts/121-1/\d+\.log", out), out[-3000:]
    assert (run / "results" / "cutouts" / "121-0" / "1210p060.h5").exists()  # the other batch went on (keep-going)
    assert not (run / "results" / "cutouts" / "121-1").exists()  # nothing half-written
    log = (run / "logs" / "cutouts" / "121-1.log").read_text()
    assert "brick 1212p060 failed" in log and "legacysurvey-1212p060-image-r.fits.fz" in log  # names brick, file

    image.write_bytes(good)
    r = snakemake(*args, "--rerun-incomplete", cwd=run, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (run / "results" / "cutouts" / "121-1" / "1212p060.h5").exists()
