"""Training: exact resume after SIGTERM, TensorBoard contents, options, SLURM cluster specs, two workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from realfake.cutouts.brickfile import DEFAULT_CHANNELS
from realfake.testing import free_port_pair

ROOT = Path(__file__).parents[1]
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
# 80 examples of 16x16 pixels: 56 train (7 batches of 8), 8 validation, 16 test, in shards of 8
# the default network (batch normalisation, dropout) and augmentation; a constant learning rate, which the
# TensorBoard test reads back
TRAIN = dict(CONFIG["train"], epochs=2, batch_size=8, shuffle_buffer=16, profile_batches=[2, 3],
             checkpoint_every_batches=3, early_stopping_patience=5, example_images=2, lr_schedule="constant",
             warmup_epochs=0)
STEPS = 7


def make_shards(root: Path, balance="none", n_real=20, n_fake=20) -> Path:
    from realfake.testing import mock_cutout_file
    from realfake.shards.build import build

    files = []
    for k in range(2):
        brick = f"{1000 + k:04d}p100"
        mock_cutout_file(root / f"{brick}.h5", brick, n_real, n_fake, size=16, seed=k)
        files.append(root / f"{brick}.h5")
    build(files, root / "shards", DEFAULT_CHANNELS, split_by="example", size=8, test_fraction=0.2, validation_fraction=0.1, seed=1,
          balance=balance)
    return root / "shards"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("train"))


def weights_of(path):
    from realfake.training.model import load_model

    return load_model(path).get_weights()


def assert_same_as_uninterrupted(model, uninterrupted):
    """The same weights, exactly, and the same epochs logged with the same numbers as the uninterrupted run."""
    for a, b in zip(weights_of(uninterrupted), weights_of(model), strict=True):
        assert np.array_equal(a, b)
    assert (model.parent / "history.csv").read_text() == (uninterrupted.parent / "history.csv").read_text()


@pytest.fixture(scope="module")
def uninterrupted(shards, tmp_path_factory):
    from realfake.training.train import fit

    run = tmp_path_factory.mktemp("uninterrupted") / "model.keras"
    fit(shards, run, {"model": CONFIG["model"], "train": TRAIN}, threads=2)
    return run


def sigterm_at(epoch: int, batch: int):
    """A callback that sends this process SIGTERM at the end of (0-based) ``batch`` of ``epoch``."""
    import keras

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, e, logs=None):
            self.epoch = e

        def on_train_batch_end(self, b, logs=None):
            if self.epoch == epoch and b == batch:
                os.kill(os.getpid(), signal.SIGTERM)

    return Kill()


@pytest.mark.parametrize("epoch,batch,resume_at", [
    (0, 1, (0, 2, "signal")),
    (1, 4, (1, 5, "signal")),
    # the last batch: the checkpoint waits for the epoch's end (validation); the rerun has no epoch left to train
    (1, STEPS - 1, (2, 0, "epoch")),
])
def test_sigterm_mid_epoch_then_resume_gives_the_uninterrupted_weights(shards, uninterrupted, tmp_path, epoch,
                                                                        batch, resume_at):
    from realfake.training.checkpoints import EXIT_SIGTERM
    from realfake.training.train import fit

    cfg = {"model": CONFIG["model"], "train": TRAIN}
    model = tmp_path / "model.keras"
    with pytest.raises(SystemExit) as stop:
        fit(shards, model, cfg, threads=2, callbacks=[sigterm_at(epoch, batch)])
    assert stop.value.code == EXIT_SIGTERM
    assert not model.exists()
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert (state["epoch"], state["batch"], state["reason"]) == resume_at
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone with the run

    fit(shards, model, cfg, threads=2)  # the rerun: resumes where the checkpoint says
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["resumed_from"] == dict(zip(("epoch", "batch", "reason"), resume_at))
    assert len(run["previous_attempts"]) == 1
    assert_same_as_uninterrupted(model, uninterrupted)  # (the interrupted epoch's metrics were checkpointed too)
    assert not (tmp_path / "checkpoints").exists(), "a finished run leaves no checkpoint"


def test_a_kill_before_the_first_checkpoint_leaves_no_epoch_logged_twice(shards, uninterrupted, tmp_path):
    """Killed after the first epoch's row in history.csv but before its checkpoint, the rerun starts afresh."""
    import keras

    from realfake.training.train import fit

    class Killed(Exception):
        pass

    class KillAtTheFirstEpochEnd(keras.callbacks.Callback):  # runs after CSVLogger, before the checkpoint
        def on_epoch_end(self, epoch, logs=None):
            raise Killed

    cfg = {"model": CONFIG["model"], "train": dict(TRAIN, checkpoint_every_batches=0)}  # no checkpoint mid-epoch
    model = tmp_path / "model.keras"
    with pytest.raises(Killed):
        fit(shards, model, cfg, threads=2, callbacks=[KillAtTheFirstEpochEnd()])
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 2  # the header and epoch 1
    assert not (tmp_path / "checkpoints" / "state.json").exists()

    fit(shards, model, cfg, threads=2)
    assert_same_as_uninterrupted(model, uninterrupted)


def test_checkpoints_every_n_batches_and_each_epoch(shards, tmp_path):
    import keras

    from realfake.training.train import fit

    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, b, logs=None):
            f = tmp_path / "checkpoints" / "state.json"
            if f.exists():
                s = json.loads(f.read_text())
                seen.append((s["epoch"], s["batch"], s["reason"]))

    fit(shards, tmp_path / "model.keras", {"model": CONFIG["model"], "train": TRAIN}, threads=2, callbacks=[Watch()])
    # every 3 global steps (steps 3, 6 of epoch 1; 9, 12 = batches 2, 5 of epoch 2) and at the end of epoch 1
    assert sorted(set(seen)) == [(0, 3, "batch"), (0, 6, "batch"), (1, 0, "epoch"), (1, 2, "batch"), (1, 5, "batch")]


def test_tensorboard_events_hold_scalars_images_graph_and_profile(uninterrupted):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = uninterrupted.parent / "tensorboard"

    def load(run):
        ea = EventAccumulator(str(tb / run), size_guidance={"tensors": 0})
        ea.Reload()
        return ea

    def plugin(ea, tag):
        return ea.SummaryMetadata(tag).plugin_data.plugin_name

    train, valid, examples = load("train"), load("validation"), load("examples")
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_auc", "epoch_learning_rate"):
        assert plugin(train, tag) == "scalars", tag
        assert [e.step for e in train.Tensors(tag)] == [0, 1], tag
    lr = [float(np.asarray(__import__("tensorflow").make_ndarray(e.tensor_proto))) for e in
          train.Tensors("epoch_learning_rate")]
    assert np.allclose(lr, TRAIN["learning_rate"])
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_auc"):
        assert plugin(valid, tag) == "scalars", tag
    assert train.Tags()["graph"], "no graph"
    for tag in ("examples/real", "examples/fake"):
        assert plugin(examples, tag) == "images", tag
        # an image summary: width, height, then the encoded PNGs
        images = examples.Tensors(tag)[0].tensor_proto.string_val
        assert len(images) == 2 + TRAIN["example_images"] and images[2][:8] == b"\x89PNG\r\n\x1a\n"
    assert list((tb / "train" / "plugins" / "profile").rglob("*.xplane.pb")), "profiler trace missing"
    run = json.loads((uninterrupted.parent / "run.json").read_text())
    for key in ("git", "packages", "host", "thread_env", "slurm", "intra_op_threads", "distribution", "config"):
        assert key in run, key
    assert run["config"]["train"]["checkpoint_every_batches"] == 3


def test_options_class_weights_lr_schedule_and_weight_shards(tmp_path):
    from realfake.training.data import epoch_dataset
    from realfake.training.model import LearningRate
    from realfake.shards.shardset import ShardSet
    from realfake.training.train import fit

    # cosine with warm-up: rises linearly over the warm-up steps, then decays to 0 at the last step
    lr = LearningRate(1e-3, "cosine", total_steps=100, warmup_steps=10)
    values = [float(lr(s)) for s in (0, 9, 10, 55, 100)]
    assert np.allclose(values, [1e-4, 1e-3, 1e-3, 5e-4, 0], atol=1e-9)
    step = LearningRate(1e-3, "step", step_every=10, factor=0.5)
    assert np.allclose([float(step(s)) for s in (0, 9, 10, 25)], [1e-3, 1e-3, 5e-4, 2.5e-4])

    # 3 reals for every fake: balanced class weights, and the shards' own weights when built with balance: weights
    unbalanced = ShardSet.read(make_shards(tmp_path / "a", n_real=30, n_fake=10), "train")
    w = unbalanced.balanced_class_weights()
    assert w[0] < 1 < w[1]
    ds = epoch_dataset(unbalanced, 8, weights="class", class_weights=w)
    x, y, sw = next(iter(ds))
    assert np.allclose(sw.numpy(), np.take(w, y.numpy()))
    weighted = make_shards(tmp_path / "b", balance="weights", n_real=30, n_fake=10)
    train = dict(TRAIN, epochs=1, class_weight="balanced", lr_schedule="cosine", warmup_epochs=0.5)
    fit(weighted, tmp_path / "run" / "model.keras", {"model": CONFIG["model"], "train": train}, threads=2)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["weights"] == "shards" and run["mixed_precision"] is False


def test_epoch_order_depends_on_the_epoch_only(shards):
    from realfake.training.data import train_stream
    from realfake.shards.shardset import ShardSet

    train = ShardSet.read(shards, "train")

    def labels(first, end, skip=0):
        return [tuple(y.numpy()) for _, y in train_stream(train, 8, first, end, skip, shuffle_buffer=16)]

    whole = labels(0, 3)
    assert len(whole) == 3 * STEPS and whole[:STEPS] != whole[STEPS : 2 * STEPS]
    assert labels(1, 3, skip=4) == whole[STEPS + 4 :]


def test_augmentation_is_a_symmetry_drawn_from_the_epoch_and_position_only(shards):
    from realfake.training.data import train_stream
    from realfake.shards.shardset import ShardSet

    train = ShardSet.read(shards, "train")

    def batches(first, end, skip=0, augment=True):
        return [x.numpy() for x, _ in train_stream(train, 8, first, end, skip, shuffle_buffer=16,
                                                   augment_examples=augment)]

    plain, whole = batches(0, 2, augment=False), batches(0, 2)
    assert all(np.array_equal(a, b) for a, b in zip(batches(1, 2, skip=3), whole[STEPS + 3 :], strict=True))
    changed = 0
    for a, b in zip(plain, whole, strict=True):
        for x, t in zip(a, b, strict=True):
            # every augmented example is one of the eight rotations and flips of the square about its centre pixel
            # (S // 2, where the galaxy is), of all channels at once: the far row and column padded with no data
            p = np.pad(x, [(0, 1), (0, 1), (0, 0)])
            turns = [np.rot90(p, k, axes=(0, 1))[:, ::f][: len(x), : len(x)] for k in range(4) for f in (1, -1)]
            assert any(np.array_equal(u, t) for u in turns)
            changed += not np.array_equal(x, t)
    assert changed > 0.6 * sum(len(a) for a in plain)  # 7 of the 8 symmetries move the pixels


@pytest.mark.parametrize("size", [64, 9])
def test_augmentation_turns_a_stamp_about_its_galaxy(size):
    """The galaxy sits at pixel size // 2 (stamp_origins): each of the eight turns leaves it there, with the
    light around it turned, and no other pixel of the centre region moves in or out."""
    import tensorflow as tf

    from realfake.inputs.coadds import stamp_origins
    from realfake.training.data import augment

    iy, ix, _ = stamp_origins([100.2], [100.2], size, (400, 400))
    c = 100 - int(ix[0])
    x = np.zeros((size, size, 2), np.float32)
    x[c, c], x[c, c + 1], x[c + 1, c] = 10.0, 3.0, 1.0  # the galaxy, with light to its right and above it
    seen = set()
    for i in range(64):
        t = augment(tf.constant(x), i, 5).numpy()
        assert t[c, c, 0] == 10.0 and t.shape == x.shape
        ring = t[c - 1 : c + 2, c - 1 : c + 2, 0]
        assert sorted(ring.ravel()) == sorted(x[c - 1 : c + 2, c - 1 : c + 2, 0].ravel())
        seen.add(ring.tobytes())
    assert len(seen) == 8


@pytest.mark.parametrize(
    "nodelist,expected",
    [
        ("localhost", ["localhost"]),
        ("nid[00012-00014,00020],login1", ["nid00012", "nid00013", "nid00014", "nid00020", "login1"]),
        ("r[1-2]n[8-9]", ["r1n8", "r1n9", "r2n8", "r2n9"]),
    ],
)
def test_expand_nodelist(nodelist, expected):
    from realfake.training.distribute import expand_nodelist

    assert expand_nodelist(nodelist) == expected


def test_tf_config_from_slurm_variables():
    from realfake.training.distribute import expand_tasks_per_node, is_chief, slurm_tf_config

    assert expand_tasks_per_node("2(x2),1") == [2, 2, 1]
    env = {"SLURM_NTASKS": "5", "SLURM_PROCID": "3", "SLURM_JOB_NODELIST": "knl[7-9]",
           "SLURM_TASKS_PER_NODE": "2(x2),1"}
    tf_config = slurm_tf_config(env, port=4000)
    assert tf_config["cluster"]["worker"] == ["knl7:4000", "knl7:4001", "knl8:4000", "knl8:4001", "knl9:4000"]
    assert tf_config["task"] == {"type": "worker", "index": 3} and not is_chief(tf_config)
    assert slurm_tf_config({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None


def test_tensorflows_slurm_cluster_resolver_cannot_serve(monkeypatch):
    """Why realfake.training.distribute builds the cluster itself (its docstring): TensorFlow's SlurmClusterResolver orders the
    workers by host name, not as SLURM numbers the tasks, and fails on a node without GPUs. When this test fails, a
    TensorFlow release has fixed that: hand the cluster to the resolver instead."""
    import tensorflow as tf

    from realfake.training.distribute import slurm_tf_config

    env = {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "node[9-10]",
           "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    resolver = tf.distribute.cluster_resolver.SlurmClusterResolver
    with pytest.raises(ValueError, match="must not be zero"):  # a CPU node: no GPU to give each task
        resolver(port_base=4000, gpus_per_node=0).cluster_spec()
    # with a GPU count made up for it: task 0 runs on node9 (SLURM's order), the resolver puts worker 0 on node10
    spec = resolver(port_base=4000, gpus_per_node=1, gpus_per_task=1, auto_set_gpu=False).cluster_spec()
    assert spec.as_dict()["worker"] == ["node10:4000", "node9:4000"]
    assert slurm_tf_config(env, port=4000)["cluster"]["worker"] == ["node9:4000", "node10:4000"]


def test_slurm_tasks_of_the_train_cnn_job():
    """train.nodes x train.tasks_per_node: the SLURM executor's resources (none for one task) and the job's srun."""
    from realfake.training.distribute import srun_command, start_tasks, task_resources

    assert task_resources({"nodes": 1, "tasks_per_node": 1}) == task_resources({}) == {}
    assert task_resources({"nodes": 4, "tasks_per_node": 1}) == {"nodes": 4, "tasks": 4, "mpi": "srun",
                                                                 "tasks_per_gpu": 0}
    assert task_resources({"nodes": 2, "tasks_per_node": 2}) == {"nodes": 2, "tasks_per_node": 2, "mpi": "srun",
                                                                 "tasks_per_gpu": 0}
    with pytest.raises(ValueError, match="distribute"):
        task_resources({"nodes": 2, "distribute": "off"})
    assert srun_command(["python", "-m", "realfake.training.train"], 2, 2, 34) == [
        "srun", "--nodes=2", "--ntasks=4", "--ntasks-per-node=2", "--cpus-per-task=34", "--kill-on-bad-exit=1",
        "--label", "python", "-m", "realfake.training.train"]
    # outside a SLURM job there is nothing to start the tasks in: said at once, nothing trained
    cfg = {"model": CONFIG["model"], "train": dict(TRAIN, nodes=2)}
    with pytest.raises(RuntimeError, match="inside a SLURM job"):
        start_tasks("shards", "model.keras", cfg, 1, launcher="no-such-srun")


GPU_VARS = ("CUDA_VISIBLE_DEVICES", "SLURM_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_PER_TASK",
            "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")


def test_the_variables_that_say_a_job_was_given_gpus():
    from realfake.training.devices import gpus_given

    assert gpus_given({"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_ID": "7"}) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert gpus_given({"SLURM_GPUS_ON_NODE": "1", "SLURM_JOB_GPUS": "2,3", "SLURM_STEP_GPUS": "2"}) == {
        "SLURM_GPUS_ON_NODE": "1", "SLURM_JOB_GPUS": "2,3", "SLURM_STEP_GPUS": "2"}
    assert gpus_given({"SLURM_GPUS_PER_NODE": "a100:2"}) == {"SLURM_GPUS_PER_NODE": "a100:2"}
    # hidden or none: CUDA's -1 and empty, SLURM's NoDevFiles and counts of 0
    assert gpus_given({"CUDA_VISIBLE_DEVICES": "-1", "SLURM_JOB_GPUS": "NoDevFiles", "SLURM_GPUS": "0",
                       "SLURM_GPUS_PER_NODE": "a100:0", "SLURM_STEP_GPUS": ""}) == {}


def test_train_device_auto_follows_the_jobs_gpu_request():
    from realfake.training.devices import train_device

    # as the SLURM executor reads a job's resources: `gpu` (the profile's *gpu-node), or a gres naming gpu
    assert [train_device("auto", r) for r in ({"gpu": 1}, {"gres": "gpu:a100:2"}, {"gpu": "2"})] == ["gpu"] * 3
    assert [train_device("auto", r) for r in ({}, {"gpu": 0}, {"constraint": "knl"}, {"gres": "tmp:10G"})] == \
        ["cpu"] * 4
    assert train_device("cpu", {"gpu": 1}) == "cpu" and train_device("gpu", {}) == "gpu"
    with pytest.raises(ValueError, match="train.device"):
        train_device("cuda", {})


def test_the_no_gpu_message_names_the_cause(monkeypatch):
    import tensorflow as tf

    from realfake.training import devices

    assert devices.check_gpus(env={}) == []  # no GPU given, none required: train on the CPUs
    with pytest.raises(devices.NoGPUError, match=r"^train.device is gpu .*, but TensorFlow sees no GPU"):
        devices.check_gpus(require=True, env={})
    # the CUDA build without a usable GPU (a driver problem), with the CPU build installed beside it
    monkeypatch.setattr(tf.test, "is_built_with_cuda", lambda: True)
    monkeypatch.setattr(devices, "tensorflow_builds", lambda: {"tensorflow": "2.21.0", "tensorflow-cpu": "2.21.0"})
    with pytest.raises(devices.NoGPUError) as err:
        devices.check_gpus(env={"SLURM_STEP_GPUS": "0"})
    for part in ("SLURM_STEP_GPUS=0", "is the CUDA build", "nvidia-smi", "both builds are installed"):
        assert part in str(err.value), part


def test_a_job_given_gpus_that_tensorflow_cannot_see_stops_before_training(shards, tmp_path, monkeypatch):
    """The CPU build of TensorFlow (this test environment's) in a job given a GPU: a clear error, nothing written."""
    from realfake.training.devices import NoGPUError
    from realfake.training.train import fit

    for name in GPU_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    cfg = {"model": CONFIG["model"], "train": dict(TRAIN, epochs=1)}
    with pytest.raises(NoGPUError) as err:
        fit(shards, tmp_path / "run" / "model.keras", cfg, threads=2)
    message = str(err.value)
    for part in ("CUDA_VISIBLE_DEVICES=0", "TensorFlow sees no GPU", "rather than training on the CPUs",
                 "CPU build", "tensorflow-cpu", "pip show", "pip install '.[gpu]'", "envs/tf-gpu.yaml"):
        assert part in message, part
    assert not (tmp_path / "run").exists()
    # SLURM's variables say so too, without CUDA_VISIBLE_DEVICES
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("SLURM_JOB_GPUS", "1")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "1")
    with pytest.raises(NoGPUError, match="SLURM_GPUS_ON_NODE=1, SLURM_JOB_GPUS=1"):
        fit(shards, tmp_path / "run" / "model.keras", cfg, threads=2)
    # no GPU variable, but the rule resolved train.device to gpu
    for name in GPU_VARS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(NoGPUError, match="^train.device is gpu"):
        fit(shards, tmp_path / "run" / "model.keras", cfg, threads=2, device="gpu")
    assert not (tmp_path / "run").exists()


def test_a_job_given_no_gpu_trains_on_the_cpus(shards, tmp_path, monkeypatch):
    from realfake.training.train import fit

    for name in GPU_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # GPUs hidden: not given
    train = dict(TRAIN, epochs=1, example_images=0, profile_batches=[100, 101], loader_threads=2)
    fit(shards, tmp_path / "model.keras", {"model": CONFIG["model"], "train": train}, threads=2)
    run = json.loads((tmp_path / "run.json").read_text())
    assert (tmp_path / "model.keras").exists() and run["gpus"] == [] and run["gpu_env"] == {}
    assert run["tensorflow_cuda_build"] is False


def test_loader_threads_give_the_loader_its_own_pool(shards):
    from realfake.training.data import dataset, train_stream
    from realfake.shards.shardset import ShardSet

    train, valid = ShardSet.read(shards, "train"), ShardSet.read(shards, "valid")
    assert train_stream(train, 8, 0, 1, threads=3).options().threading.private_threadpool_size == 3
    assert dataset(valid, 8, threads=5).options().threading.private_threadpool_size == 5
    assert not train_stream(train, 8, 0, 1).options().threading.private_threadpool_size  # tf.data's default


def test_the_loader_benchmark_runs(tmp_path):
    """benchmarks/loader.py at its smallest (one core, one timed epoch, ~25 s): its tables, not its numbers."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "loader.py"), "--examples", "1024", "--epochs", "1",
                        "--cores", "1", "--batches", "256", "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for line in ("| cold, one-epoch stream |", "goal, batch 256, warm, 1 core(s):", "| + augmentation: the loader",
                 "| float16, tf.cast", "| np.load (the loader's reader)    | float32 |", "page cache after a drop:"):
        assert line in r.stdout, line
    assert list(tmp_path.iterdir()) == []  # its shards removed


def test_the_gpu_preset_on_the_default_config_is_valid():
    from realfake.config import check_config

    preset = yaml.safe_load((ROOT / "config" / "presets" / "gpu.yaml").read_text())
    assert set(preset) == {"train"}  # training only: the rest of the run is the base config's
    assert preset["train"] == {"batch_size": 256, "mixed_precision": "on", "loader_threads": 12}
    check_config({**CONFIG, "train": {**CONFIG["train"], **preset["train"]}})


# What training must never import: the brick files' reader, the cutout and FITS code, and FITS libraries
NOT_IN_TRAINING = ("realfake.cutouts.brickfile", "realfake.shards.buckets", "realfake.inputs.catalogs",
                   "realfake.shards.census", "realfake.inputs.coadds", "realfake.cutouts.cut",
                   "realfake.inputs.fitstiles", "realfake.inputs.injection", "realfake.shards.plan",
                   "realfake.shards.build", "realfake.cutouts.stamps", "astropy", "fitsio", "galsim")


def test_training_imports_no_cutout_or_fits_code():
    """Training reads the shards (realfake.shards.shardset), never the brick files: neither it nor what it imports, even
    inside its functions, loads the cutout code, the FITS readers or the FITS libraries."""
    from conftest import realfake_imports

    reached = realfake_imports("realfake.training.train")
    assert {"realfake.shards.shardset", "realfake.training.data", "realfake.training.callbacks"} <= reached
    assert not reached & set(NOT_IN_TRAINING), sorted(reached & set(NOT_IN_TRAINING))
    code = (f"import importlib, sys\nfor m in {sorted(reached)!r}: importlib.import_module(m)\n"
            f"print(sorted(m for m in {NOT_IN_TRAINING!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT / "src"), TF_CPP_MIN_LOG_LEVEL="2"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout


def test_train_config_fills_in_the_schemas_defaults():
    """The schema is the one home of the defaults: the optional train keys a caller leaves out are the schema's."""
    from realfake.schema import schema_defaults
    from realfake.training.train import train_config

    defaults = schema_defaults("train")
    assert defaults["checkpoint_every_batches"] == 200 and defaults["env"] == {}
    assert train_config({"epochs": 3, "augment": True}) == {**defaults, "epochs": 3, "augment": True}
    assert train_config({"mixed_precision": False})["mixed_precision"] == "off"  # YAML's bare off
    assert set(defaults) <= set(CONFIG["train"])  # config/config.yaml shows every key


WORKER = """
import json, sys
import numpy as np
from realfake.training.train import fit
shards, model, cfg, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
m = fit(shards, model, cfg, threads=1)
np.savez(out, *m.get_weights(), iterations=int(m.optimizer.iterations.numpy()))
"""


def test_two_slurm_tasks_train_one_model(shards, tmp_path):
    """Two local processes with SLURM-like variables (2 tasks on localhost) train one model together."""
    port = free_port_pair()
    train = dict(TRAIN, epochs=1, worker_port=port, early_stopping_patience=0)
    # no dropout: each worker draws its half-batch's masks, so only without it does one process with the whole
    # batch train the same weights (the batch normalisation is synchronised across the workers)
    model = dict(CONFIG["model"], lenet_bn=dict(CONFIG["model"]["lenet_bn"], dropout=0.0))
    cfg = json.dumps({"model": model, "train": train})
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TF_CONFIG"))}
    base.update(PYTHONPATH=str(ROOT / "src"), SLURM_NTASKS="2", SLURM_JOB_NODELIST="localhost",
                SLURM_TASKS_PER_NODE="2", SLURM_JOB_ID="4242", TF_CPP_MIN_LOG_LEVEL="2")
    procs = []
    for rank in (0, 1):
        env = dict(base, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank))
        log = open(tmp_path / f"worker{rank}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(shards), str(tmp_path / "run" / "model.keras"),
                                       cfg, str(tmp_path / f"w{rank}.npz")], env=env, stdout=log, stderr=log))
    try:
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = [(tmp_path / f"worker{r}.log").read_text()[-3000:] for r in (0, 1)]
    assert codes == [0, 0], logs
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    # one model: the same weights on both workers, after one step per *global* batch of 8 (4 + 4 examples)
    assert int(w0["iterations"]) == int(w1["iterations"]) == STEPS
    for k in w0.files:
        assert np.array_equal(w0[k], w1[k]), k
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["distribution"]["kind"] == "multi_worker" and run["distribution"]["replicas"] == 2
    assert run["distribution"]["tf_config"]["cluster"]["worker"] == [f"localhost:{port}", f"localhost:{port + 1}"]
    assert run["slurm"]["SLURM_JOB_ID"] == "4242"
    # only the chief wrote into the run directory
    assert (tmp_path / "run" / "model.keras").exists()
    assert len((tmp_path / "run" / "history.csv").read_text().splitlines()) == 2
    # the same training as one process with the whole batch, up to the order of floating-point sums
    from realfake.training.train import fit

    single = fit(shards, tmp_path / "single" / "model.keras", json.loads(cfg), threads=2)
    for a, b in zip(single.get_weights(), [w0[f"arr_{i}"] for i in range(len(w0.files) - 1)], strict=True):
        assert np.allclose(a, b, rtol=1e-3, atol=1e-5)


def test_truncating_the_history_keeps_keras_line_ends(tmp_path):
    from realfake.training.checkpoints import truncate_history

    path = tmp_path / "history.csv"
    path.write_bytes(b"epoch,loss\r\n0,0.7\r\n1,0.6\r\n2,0.5\r\n")  # as Keras' CSVLogger writes it
    truncate_history(path, 2)  # the checkpoint was taken after epoch 1
    assert path.read_bytes() == b"epoch,loss\r\n0,0.7\r\n1,0.6\r\n"
