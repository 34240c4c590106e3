"""The SLURM path for real: the default pipeline through `--profile profiles/slurm` on a local cluster.

tests/slurm/local_cluster.sh starts munged, slurmctld and slurmd on localhost (partitions cpu,
knl and gpu). The profile is used as written, except for what a 2-core node cannot give: the
training job's cores and memory, and the status poll's start-up delay. One fold's training is
run again as two SLURM tasks that the train_cnn job starts itself (train.tasks_per_node: 2).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, snakemake
from realfake.testing import free_port_pair

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
    # (.test trains two replicates of each fold: replicate_train_cnn goes where train_cnn goes)
    rules = {"mock_release", "make_cutouts", "summarise_cutouts", "plan_shards", "scatter_shards", "gather_shards",
             "build_shards", "train_cnn", "predict_fold", "replicate_train_cnn", "replicate_predict_fold",
             "plant_statistics", "capacity", "nuisance_baseline", "processing_check", "population", "evaluate_cnn",
             "plot_evaluation", "plot_mosaic"}
    assert set(jobs["rule"]) == rules and (jobs["state"] == "COMPLETED").all()
    assert (jobs["rule"] == "make_cutouts").sum() == 2  # one per batch: .test has two bricks, one per batch
    assert (jobs["rule"] == "train_cnn").sum() == 2  # one per fold: two bricks, two folds
    train = jobs[jobs["rule"] == "train_cnn"].iloc[0]
    assert train["partition"] == profile["set-resources"]["train_cnn"]["slurm_partition"] == "knl"
    trains = jobs["rule"].isin(["train_cnn", "replicate_train_cnn"])
    assert (jobs.loc[trains, "partition"] == "knl").all() and trains.sum() == 4
    assert (jobs.loc[~trains, "partition"] == profile["default-resources"]["slurm_partition"]).all()
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


def _weights(model) -> dict:
    """Every array of a saved model's weights (model.weights.h5 inside the .keras zip), by its path."""
    import h5py

    with zipfile.ZipFile(model) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
        found = {}
        f.visititems(lambda name, obj: found.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
    return found


@pytest.fixture(scope="module")
def two_tasks(slurm_run, tmp_path_factory):
    """Fold 0's train_cnn again, with train.tasks_per_node: 2 (one CPU each on the 2-core node), through the same
    profile, in a copy of the finished run without that model; beside it, the by-hand path of the same training: two
    processes with the variables `srun -n 2` gives its tasks (tests/test_train.py's two-worker test)."""
    work, profile = slurm_run
    run = tmp_path_factory.mktemp("slurm_tasks") / "run"
    shutil.copytree(work, run, symlinks=True, ignore=shutil.ignore_patterns("slurm_logs", "profile"))
    shutil.rmtree(run / "results" / "folds" / "0" / "model")
    cfg = yaml.safe_load((run / "config" / "config.yaml").read_text())
    # a global batch of 10, 5 per task: whole batches (30 training examples), as several workers need
    cfg["train"].update(nodes=1, tasks_per_node=2, batch_size=10, worker_port=free_port_pair())
    # in the same key order: Snakemake compares a rule's params as written, and would rerun the rules before training
    (run / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    profile = dict(profile, **{"set-resources": dict(profile["set-resources"])})
    profile["set-resources"]["train_cnn"] = dict(profile["set-resources"]["train_cnn"], cpus_per_task=1)
    (run.parent / "profile").mkdir()
    (run.parent / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))

    from realfake.config import load_config

    resolved = load_config(run / "config" / "config.yaml")  # the defaults filled in, as Snakemake does
    by_hand = json.dumps({"model": resolved["model"], "train": dict(resolved["train"], worker_port=free_port_pair())})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TF_CONFIG"))}
    env.update(PYTHONPATH=str(ROOT / "src"), TF_CPP_MIN_LOG_LEVEL="2", SLURM_NTASKS="2", SLURM_JOB_NODELIST="localhost",
               SLURM_TASKS_PER_NODE="2")
    hand = run.parent / "by_hand"
    hand.mkdir()
    workers = [subprocess.Popen([sys.executable, "-m", "realfake.training.train", "--shards", str(run / "results" / "folds" / "0"
                                 / "shards"), "--model", str(hand / "model.keras"), "--config", by_hand, "--threads",
                                 "1"], env=dict(env, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank)),
                                stdout=open(hand / f"worker{rank}.log", "w"), stderr=subprocess.STDOUT)
               for rank in (0, 1)]
    try:  # both at once: the SLURM job spends most of its time waiting on the executor's polls
        r = snakemake("-s", str(ROOT / "Snakefile"), "--directory", str(run), "--profile", str(run.parent / "profile"),
                      "results/folds/0/model/model.keras", cwd=run, timeout=900)
        codes = [w.wait(timeout=600) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:] + (run / "logs" / "train_cnn" / "0.log").read_text()
    assert codes == [0, 0], [(hand / f"worker{k}.log").read_text()[-3000:] for k in (0, 1)]
    return run, hand


def test_two_slurm_tasks_started_by_the_train_cnn_job_train_the_by_hand_model(two_tasks):
    run, hand = two_tasks
    jobs = _jobs(run)
    assert list(jobs["rule"]) == ["train_cnn"] and (jobs["state"] == "COMPLETED").all()  # only that job was run
    job = jobs["job"].iloc[0]
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "NumTasks=2" in out and "NumNodes=1" in out, out  # sbatch asked SLURM for the two tasks
    record = json.loads((run / "results" / "folds" / "0" / "run.json").read_text())
    assert record["distribution"]["kind"] == "multi_worker" and record["distribution"]["replicas"] == 2
    assert record["slurm"]["SLURM_JOB_ID"] == job and record["slurm"]["SLURM_STEP_NUM_TASKS"] == "2"  # the job's srun
    log = (run / "logs" / "train_cnn" / "0.log").read_text()
    assert re.search(r"^0: ", log, re.M) and re.search(r"^1: ", log, re.M)  # lines of both tasks, labelled by srun
    # the same model as the by-hand path, exactly
    ours, theirs = _weights(run / "results" / "folds" / "0" / "model" / "model.keras"), _weights(hand / "model.keras")
    assert ours.keys() == theirs.keys() and len(ours) > 0
    for name in ours:
        assert np.array_equal(ours[name], theirs[name]), name
    assert (run / "results" / "folds" / "0" / "history.csv").read_text() == (hand / "history.csv").read_text()
