"""Training: the callbacks, checkpoints and logs around ``model.fit``.

Run directory layout (beside the final ``model.keras``)::

    checkpoints/   resumable state (weights, optimizer, position, early stopping); removed once the model is saved
    tensorboard/   scalars (loss, accuracy, AUC, learning rate), graph, example cutouts, profiler trace
    history.csv    one row per epoch
    run.json       reproducibility record: versions, config, host, threads, SLURM job, distribution

Exact resume. Every ``train.checkpoint_every_batches`` batches, at the end of every
epoch, and when SIGTERM arrives (SLURM's signal before a time limit or a
pre-emption) the weights, optimizer state, metric accumulators, early-stopping
state and position (epoch, batch) are written; after SIGTERM the process exits
with status 143, so SLURM and Snakemake see a failed job and a retry resumes.
Epoch ``k``'s data order depends on ``(seed, k)`` only (:mod:`realfake.data`), so
a resumed run skips the batches already seen of its epoch, finishes that epoch,
then goes on: its weights equal those of an uninterrupted run (with
``train.deterministic``). Keras' own ``BackupAndRestore`` (3.15) restores only the
epoch, not the batch, so it would replay or skip part of an epoch.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .devices import require_tensorflow

require_tensorflow()  # a clear message, naming the cpu and gpu extras, instead of a bare ModuleNotFoundError later
log = logging.getLogger(__name__)

# Defaults of the optional keys of the `train:` block (as in workflow/schemas/config.schema.yaml)
TRAIN_DEFAULTS = {
    "early_stopping_patience": 0,
    "early_stopping_monitor": "val_loss",
    "checkpoint_every_batches": 200,
    "class_weight": "none",
    "lr_schedule": "constant",
    "warmup_epochs": 0,
    "lr_step_epochs": 10,
    "lr_step_factor": 0.1,
    "mixed_precision": "auto",
    "device": "auto",
    "distribute": "auto",
    "worker_port": 12345,
    "inter_op_threads": 2,
    "loader_threads": 0,
    "env": {},
    "example_images": 4,
    "augment": False,
}
EXIT_SIGTERM = 128 + signal.SIGTERM
# Environment variables about threads and placement recorded in run.json
THREAD_ENV_PREFIXES = ("OMP_", "KMP_", "MKL_", "TF_NUM_", "TF_ENABLE_ONEDNN", "OPENBLAS_NUM_THREADS")
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME", "SLURM_JOB_PARTITION",
              "SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
              "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE",
              "SLURM_JOB_CPUS_PER_NODE", "SLURM_MEM_PER_NODE", "SLURM_RESTART_COUNT", "SLURM_CLUSTER_NAME",
              "SLURM_STEP_ID")


def train_config(tcfg: dict) -> dict:
    """The ``train:`` block with the defaults of its optional keys filled in (YAML's bare on/off read as on/off)."""
    tcfg = {**TRAIN_DEFAULTS, **tcfg}
    for key in ("mixed_precision", "distribute"):
        if isinstance(tcfg[key], bool):
            tcfg[key] = "on" if tcfg[key] else "off"
    return tcfg


def allocated_threads(threads: int) -> int:
    """Threads to use: the SLURM allocation (cpus per task) when there is one, else Snakemake's ``threads``."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and int(slurm) != threads:
        log.info("SLURM_CPUS_PER_TASK = %s: using %s threads (Snakemake asked for %d)", slurm, slurm, threads)
        return int(slurm)
    return threads


def apply_env(env: dict, threads: int) -> dict:
    """Set ``train.env`` (e.g. OMP_NUM_THREADS, KMP_AFFINITY, KMP_BLOCKTIME) before TensorFlow starts.

    ``{threads}`` in a value is replaced by the thread count. Returns what was set.
    """
    done = {}
    for key, value in (env or {}).items():
        done[key] = str(value).format(threads=threads)
        os.environ[key] = done[key]
    if done and "tensorflow" in sys.modules:
        log.warning("TensorFlow was imported before train.env was applied: %s may not take effect", sorted(done))
    return done


def configure_threads(threads: int, inter_op: int = 2) -> None:
    """Size TensorFlow's thread pools to the job's allocation (Snakemake threads / SLURM cpus per task).

    The pools can only be sized before TensorFlow's runtime starts; in a process
    where it already runs (a test session, a notebook) the existing pools are kept.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(inter_op, threads)))
    except RuntimeError:
        log.warning(
            "TensorFlow already initialised: keeping %d intra-op threads",
            tf.config.threading.get_intra_op_parallelism_threads(),
        )


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        if not out.stdout.strip():
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_record(cfg: dict, threads: int, extra: dict | None = None) -> dict:
    from importlib import metadata

    import tensorflow as tf

    from . import __version__
    from .devices import gpus_given

    pkgs = {}
    for p in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "h5py", "astropy", "fitsio", "galsim", "snakemake",
              "tensorboard"):
        try:
            pkgs[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return {
        "realfake": __version__,
        "git": git_revision(),
        "python": sys.version,
        "packages": pkgs,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "thread_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(THREAD_ENV_PREFIXES)},
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "gpu_env": gpus_given(),  # the variables that say the job was given GPUs
        "tensorflow_cuda_build": tf.test.is_built_with_cuda(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm": {k: os.environ[k] for k in SLURM_VARS if k in os.environ},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": cfg,
        **(extra or {}),
    }


# --------------------------------------------------------------------------- checkpoints


def start_or_resume(run_dir: Path, cfg: dict, shard_dir, chief: bool = True) -> dict | None:
    """Keep the checkpoint of an interrupted run of the same config on the same shards; start afresh otherwise.

    A job killed at its time limit resumes from its checkpoint, but a changed
    model or training config, or new shards (a new split: resuming would train
    on today's test examples), must not inherit the old weights. A finished run
    leaves no checkpoint behind, so a rerun always trains anew. Returns the
    checkpoint's state, or None for a fresh start. Only the chief clears or stamps.

    A fresh start also clears the logs of an attempt killed before its first
    checkpoint (after the first epoch's row in history.csv, say): appended to,
    they would hold that attempt's epochs twice.
    """
    import hashlib
    import shutil

    summary = (Path(shard_dir) / "summary.json").read_text()
    key = hashlib.sha256(json.dumps([cfg, summary], sort_keys=True, default=str).encode()).hexdigest()
    ckpt = run_dir / "checkpoints"
    stamp, state_file = ckpt / "run.sha256", ckpt / "state.json"
    if not (stamp.exists() and stamp.read_text() == key and state_file.exists()):
        if chief:
            for old in ("checkpoints", "tensorboard"):
                shutil.rmtree(run_dir / old, ignore_errors=True)
            (run_dir / "history.csv").unlink(missing_ok=True)
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(key)
        return None
    state = json.loads(state_file.read_text())
    log.info("resuming from the checkpoint in %s: epoch %d, batch %d (%s)", ckpt, state["epoch"] + 1,
             state["batch"], state.get("reason"))
    return state


class Interrupt:
    """Turns SIGTERM into a flag the checkpoint callback reads after each batch."""

    def __init__(self):
        self.signum = None
        self._previous = None

    def _handler(self, signum, frame):
        self.signum = signum
        log.warning("received signal %d: checkpoint after the current batch, then exit", signum)

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        else:
            log.warning("not the main thread: SIGTERM will not be turned into a checkpoint")
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _callbacks_module():
    import keras
    import numpy as np

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """EarlyStopping whose state survives a restart and the second ``fit`` of a resumed run.

        The best weights are put back by :meth:`finish`, once, after the last ``fit``.
        """

        STATE = ("wait", "stopped_epoch", "best", "best_epoch")

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._started = False

        def on_train_begin(self, logs=None):
            if not self._started:
                super().on_train_begin(logs)
                self._started = True

        def on_train_end(self, logs=None):
            pass

        def get_state(self) -> dict:
            return {k: (None if getattr(self, k) is None else float(getattr(self, k)) if k == "best"
                        else int(getattr(self, k))) for k in self.STATE}

        def set_state(self, state: dict, best_weights) -> None:
            super().on_train_begin()
            self._started = True
            for k in self.STATE:
                setattr(self, k, state[k])
            self.best_weights = best_weights

        def finish(self) -> None:
            if self.stopped_epoch > 0:
                log.info("early stopping at epoch %d; best %s %.4f at epoch %d", self.stopped_epoch + 1,
                         self.monitor, self.best, self.best_epoch + 1)
            if self.restore_best_weights and self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    class LearningRateToLogs(keras.callbacks.Callback):
        """Puts the learning rate in the epoch logs (history.csv; TensorBoard logs it by itself)."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                opt = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
                logs["learning_rate"] = float(np.asarray(keras.ops.convert_to_numpy(opt.learning_rate)))

    class Checkpointer(keras.callbacks.Callback):
        """Writes the resumable state every ``every`` batches, at each epoch end and on SIGTERM (then exits).

        ``position(epoch, batch0)`` tells it where the current ``fit`` starts; batches
        are numbered in the epoch as in an uninterrupted run.
        """

        def __init__(self, directory, steps_per_epoch, every, interrupt, early_stopping=None, history=None,
                     save_metrics=True):
            super().__init__()
            self.dir, self.steps_per_epoch, self.every = Path(directory), steps_per_epoch, every
            self.interrupt, self.early_stopping, self.history = interrupt, early_stopping, history
            self.save_metrics = save_metrics
            self.epoch, self.batch0, self.serial = 0, 0, 0
            self.pending_metrics = None
            self.nan = None

        def position(self, epoch, batch0, metrics=None):
            self.epoch, self.batch0, self.pending_metrics = epoch, batch0, metrics

        def on_epoch_begin(self, epoch, logs=None):
            if epoch != self.epoch:
                self.epoch, self.batch0 = epoch, 0
            if self.pending_metrics is not None:  # the accumulators of the interrupted epoch so far
                for v in self.model.metrics_variables:
                    if v.path in self.pending_metrics:
                        v.assign(self.pending_metrics[v.path])
                self.pending_metrics = None

        def on_train_batch_end(self, batch, logs=None):
            done = self.batch0 + batch + 1
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(float(loss)):
                self.nan = (self.epoch, done)
                self.model.stop_training = True
                return
            if done >= self.steps_per_epoch:  # the epoch's last batch: the checkpoint comes at the epoch's end
                return
            if self.interrupt.signum is not None:
                self.save(self.epoch, done, "signal")
                self.exit()
            if self.every and (self.epoch * self.steps_per_epoch + done) % self.every == 0:
                self.save(self.epoch, done, "batch")

        def on_epoch_end(self, epoch, logs=None):
            if self.nan is not None:
                return
            self.save(epoch + 1, 0, "epoch", finished=bool(self.model.stop_training))
            if self.interrupt.signum is not None:
                self.exit()

        def exit(self):
            log.warning("interrupted: checkpoint written; exiting with status %d so that a rerun resumes",
                        EXIT_SIGTERM)
            for handler in logging.getLogger().handlers:
                handler.flush()
            raise SystemExit(EXIT_SIGTERM)

        def save(self, epoch, batch, reason, finished=False):
            from .atomic import atomic_path

            self.dir.mkdir(parents=True, exist_ok=True)
            self.serial += 1
            tag = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{self.serial}"
            state = {"epoch": epoch, "batch": batch, "step": epoch * self.steps_per_epoch + batch,
                     "reason": reason, "finished": finished, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "weights": f"weights-{tag}.weights.h5", "best_weights": None, "metrics": None,
                     "rng": None, "early_stopping": None, "history_rows": None}
            with atomic_path(self.dir / state["weights"]) as tmp:
                self.model.save_weights(tmp)
            rng = rng_variables(self.model)
            if rng:  # the dropout layers' random states, which save_weights leaves out
                state["rng"] = f"rng-{tag}.npz"
                with atomic_path(self.dir / state["rng"]) as tmp:
                    np.savez(tmp, *[np.asarray(v.numpy()) for v in rng])
            if batch and self.save_metrics:
                state["metrics"] = f"metrics-{tag}.npz"
                with atomic_path(self.dir / state["metrics"]) as tmp:
                    np.savez(tmp, **{v.path: np.asarray(v.numpy()) for v in self.model.metrics_variables})
            es = self.early_stopping
            if es is not None:
                state["early_stopping"] = es.get_state()
                if es.best_weights is not None:
                    state["best_weights"] = f"best-{tag}.npz"
                    with atomic_path(self.dir / state["best_weights"]) as tmp:
                        np.savez(tmp, *es.best_weights)
            if self.history is not None and Path(self.history).exists():
                state["history_rows"] = max(0, len(Path(self.history).read_text().splitlines()) - 1)
            with atomic_path(self.dir / "state.json") as tmp:
                tmp.write_text(json.dumps(state, indent=1))
            keep = {state["weights"], state["metrics"], state["best_weights"], state["rng"]}
            for old in self.dir.glob("*-*.*"):
                if old.name not in keep and old.name.split("-")[0] in ("weights", "metrics", "best", "rng"):
                    old.unlink(missing_ok=True)
            log.info("checkpoint: epoch %d, batch %d (%s)", epoch + (batch > 0), batch, reason)

    return ResumableEarlyStopping, LearningRateToLogs, Checkpointer


def rng_variables(model) -> list:
    """The states of the model's random-number generators (dropout's seed generators), in the model's order:
    part of where training stands, not of its weights."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def restore(model, ckpt_dir: Path, state: dict, early_stopping=None):
    """Load a checkpoint's weights, optimizer and random states into ``model`` (built and compiled); return its
    metric accumulators."""
    import numpy as np

    model.optimizer.build(model.trainable_variables)
    model.load_weights(ckpt_dir / state["weights"])
    if state.get("rng"):
        with np.load(ckpt_dir / state["rng"], allow_pickle=False) as f:
            for k, v in enumerate(rng_variables(model)):
                v.assign(f[f"arr_{k}"])
    if early_stopping is not None and state.get("early_stopping"):
        best = None
        if state.get("best_weights"):
            with np.load(ckpt_dir / state["best_weights"], allow_pickle=False) as f:
                best = [f[f"arr_{i}"] for i in range(len(f.files))]
        early_stopping.set_state(state["early_stopping"], best)
    if state.get("metrics"):
        with np.load(ckpt_dir / state["metrics"], allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    return None


def build_metrics(model, shape) -> None:
    """Create the compiled metrics' variables now (Keras builds them at the first step) so a checkpoint's fill them."""
    import numpy as np

    x = np.zeros((1,) + tuple(shape), np.float32)
    model.compute_metrics(x, np.zeros(1, np.int32), model(x, training=False))
    model.reset_metrics()


def truncate_history(path: Path, rows) -> None:
    """Drop the rows of epochs logged after the checkpoint (a kill between the log and the checkpoint)."""
    if rows is None or not path.exists():
        return
    from .atomic import atomic_path

    lines = path.read_bytes().splitlines(keepends=True)  # bytes: CSVLogger's \r\n line ends stay as written
    if len(lines) > rows + 1:
        with atomic_path(path) as tmp:  # killed while writing, it must not lose the rows the checkpoint counts
            tmp.write_bytes(b"".join(lines[: rows + 1]))


# --------------------------------------------------------------------------- TensorBoard images


def composite(x, channels, stats, bands=("z", "r", "g")):
    """RGB (z, r, g) asinh composites in [0, 1] of cutouts ``x`` (N, S, S, C)."""
    import numpy as np

    planes = []
    for b in bands:
        c = list(channels).index(b)
        v = np.arcsinh((x[..., c] - stats[b]["median"]) / stats[b]["scale"])
        planes.append(np.clip((v + 1.0) / (np.arcsinh(50.0) + 1.0), 0, 1))
    return np.stack(planes, axis=-1).astype(np.float32)


def log_example_images(log_dir, shards, channels, stats, n: int) -> None:
    """A few real and fake g/r/z composites of the first shard of ``shards`` (the training split, a ShardSet), once,
    under ``examples/``."""
    import numpy as np
    import tensorflow as tf

    from .shardset import load_shard

    x_path, y_path = shards.x[0], shards.y[0]
    x, y = load_shard(x_path, mmap_mode="r"), load_shard(y_path)
    if not {"g", "r", "z"} <= set(channels):
        return
    writer = tf.summary.create_file_writer(str(Path(log_dir) / "examples"))
    with writer.as_default():
        for label, name in ((0, "real"), (1, "fake")):
            idx = np.flatnonzero(y == label)[:n]
            if len(idx):
                tf.summary.image(f"examples/{name}", composite(np.asarray(x[idx]), channels, stats), step=0,
                                 max_outputs=n,
                                 description=f"{name} cutouts of {x_path.name}: z, r, g as R, G, B (asinh)")
    writer.close()


def log_graph(log_dir, model, shape) -> None:
    """The network's forward graph, for TensorBoard's graph dashboard (Keras 3 writes no graph of its own)."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False))
    graph = forward.get_concrete_function(tf.TensorSpec((None,) + tuple(shape), tf.float32)).graph
    writer = tf.summary.create_file_writer(str(Path(log_dir) / "train"))
    with writer.as_default():
        tf.summary.graph(graph)
    writer.close()


# --------------------------------------------------------------------------- precision


def use_mixed_precision(mode: str) -> bool:
    """``on``, ``off``, or ``auto``: on only when every GPU has compute capability >= 7 (tensor cores)."""
    if mode in ("on", "off"):
        return mode == "on"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return False
    caps = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0)) for g in gpus]
    return all(tuple(c) >= (7, 0) for c in caps)


# --------------------------------------------------------------------------- fit


class _closing:
    """On an exception (SIGTERM's exit included), end the TensorBoard callback: stop a running trace, flush."""

    def __init__(self, tensorboard):
        self.tensorboard = tensorboard

    def __enter__(self):
        return self.tensorboard

    def __exit__(self, kind, value, tb):
        if kind is not None:
            try:
                self.tensorboard.on_train_end()
            except Exception as err:  # never hide the original exception
                log.warning("closing TensorBoard logs: %s", err)


def fit(shard_dir, model_path, cfg: dict, threads: int = 1, callbacks=(), device: str | None = None):
    """Train the configured network on every training shard; write ``model_path`` (.keras). Resumes when it can.

    ``callbacks``: extra Keras callbacks, run before the checkpoint's. ``device``: ``train.device`` as the rule
    resolved it (``cpu`` or ``gpu``); default: as configured. ``gpu``: stop if TensorFlow sees no GPU.
    """
    cfg = {"model": cfg["model"], "train": train_config(cfg["train"])}
    tcfg = cfg["train"]
    threads = allocated_threads(threads)
    env_set = apply_env(tcfg["env"], threads)
    configure_threads(threads, tcfg["inter_op_threads"])

    import keras
    import tensorflow as tf

    from .data import dataset, train_stream
    from .devices import check_gpus
    from .distribute import strategy_from_environment
    from .model import FakeAUC, LearningRate, build_model
    from .shardset import ShardSet, read_summary

    # a job given GPUs that TensorFlow cannot see (the CPU build on a GPU node) stops here, before anything is written
    check_gpus(require=(device or tcfg["device"]) == "gpu")
    # fresh Keras state: layer names, which checkpoints key on, are the same in every process
    keras.backend.clear_session()
    dist = strategy_from_environment(tcfg["distribute"], tcfg["worker_port"])
    strategy = dist.strategy
    keras.utils.set_random_seed(tcfg["seed"])
    if tcfg["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    mixed = use_mixed_precision(tcfg["mixed_precision"])
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")

    run_dir = Path(model_path).parent
    # Keras' multi-worker convention: workers other than the chief write into a temporary directory
    out_dir = run_dir if dist.is_chief else Path(tempfile.mkdtemp(prefix=f"realfake-worker{dist.task_index}-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    state = start_or_resume(run_dir, cfg, shard_dir, chief=dist.is_chief)
    ckpt_dir = run_dir / "checkpoints"

    summary = read_summary(shard_dir)
    channels, stats = summary["channels"], summary["normalisation"]
    train = ShardSet.read(shard_dir, "train")  # listed once, handed on
    shape = train.example_shape
    batch = tcfg["batch_size"]
    multi = dist.kind == "multi_worker"  # every global batch is split evenly between the workers: whole batches only
    steps = train.batches(batch, drop_remainder=multi)
    if steps < 1:
        raise ValueError(f"fewer training examples than one batch of {batch}")
    weights = "none"
    class_weights = None
    if train.weights is not None:
        weights = "shards"
        if tcfg["class_weight"] != "none":
            log.warning("train.class_weight = %s ignored: the shards carry per-example weights (w*.npy)",
                        tcfg["class_weight"])
    elif tcfg["class_weight"] == "balanced":
        weights, class_weights = "class", train.balanced_class_weights()
        log.info("class weights (real, fake): %s", class_weights)
    loader = tcfg["loader_threads"]
    data_kw = dict(shuffle_buffer=tcfg["shuffle_buffer"], seed=tcfg["seed"], weights=weights,
                   class_weights=class_weights, drop_remainder=multi, augment_examples=tcfg["augment"], threads=loader)
    # the validation split, when the shards have one, shows over-fitting in the training curves
    valid = ShardSet.read(shard_dir, "valid")
    valid = dataset(valid, batch, drop_remainder=multi, threads=loader) if valid.x else None

    epochs = tcfg["epochs"]
    lr = LearningRate(tcfg["learning_rate"], tcfg["lr_schedule"], total_steps=epochs * steps,
                      warmup_steps=round(tcfg["warmup_epochs"] * steps), step_every=tcfg["lr_step_epochs"] * steps,
                      factor=tcfg["lr_step_factor"])
    with strategy.scope():
        model = build_model(cfg["model"], shape, channels, stats)
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy", FakeAUC(name="auc")],
        )
    model.summary(print_fn=lambda line, **kw: log.info(line))

    extra = {"distribution": dist.record(), "mixed_precision": mixed, "env_set": env_set, "steps_per_epoch": steps,
             "weights": weights, "class_weights": class_weights,
             "resumed_from": None if state is None else {k: state[k] for k in ("epoch", "batch", "reason")}}
    if dist.is_chief:
        record = run_record(cfg, threads, extra)
        old = run_dir / "run.json"
        if state is not None and old.exists():  # a resumed run keeps the record of the attempts before it
            prev = json.loads(old.read_text())
            record["previous_attempts"] = prev.pop("previous_attempts", []) + [
                {k: prev.get(k) for k in ("host", "started", "slurm", "git", "threads", "distribution")}
            ]
        (run_dir / "run.json").write_text(json.dumps(record, indent=1, default=str))

    ResumableEarlyStopping, LearningRateToLogs, Checkpointer = _callbacks_module()
    interrupt = Interrupt()
    # the metric accumulators of an interrupted epoch are kept with one replica (with several, reading them syncs)
    save_metrics = dist.kind == "default"
    if save_metrics:
        build_metrics(model, shape)
    patience = tcfg["early_stopping_patience"]
    early = None
    if patience and valid is not None:
        # stop when the monitored validation metric has not improved for `patience` epochs; keep the best weights
        monitor = tcfg["early_stopping_monitor"]
        early = ResumableEarlyStopping(monitor, mode="max" if monitor == "val_auc" else "min", patience=patience,
                                       restore_best_weights=True)
        early.set_model(model)  # a resumed run with no epoch left runs no fit, which would attach it
    history = out_dir / "history.csv"
    checkpointer = Checkpointer(ckpt_dir if dist.is_chief else out_dir / "checkpoints", steps,
                                tcfg["checkpoint_every_batches"], interrupt, early, history, save_metrics)
    tensorboard = keras.callbacks.TensorBoard(
        log_dir=str(out_dir / "tensorboard"), write_graph=True,
        profile_batch=tuple(tcfg["profile_batches"]) if dist.is_chief else 0,
    )
    callbacks = [LearningRateToLogs(), *([early] if early else []),
                 keras.callbacks.CSVLogger(str(history), append=True), tensorboard, *callbacks, checkpointer]

    epoch, batch0, metrics = 0, 0, None
    if state is not None:
        with strategy.scope():
            metrics = restore(model, ckpt_dir, state, early)
        epoch, batch0 = state["epoch"], state["batch"]
        if dist.is_chief:
            truncate_history(history, state.get("history_rows"))
        if state.get("finished"):
            epoch = epochs
    elif dist.is_chief:
        log_graph(out_dir / "tensorboard", model, shape)
        if tcfg["example_images"]:
            log_example_images(out_dir / "tensorboard", train, channels, stats, tcfg["example_images"])

    t0 = time.perf_counter()
    with interrupt, _closing(tensorboard):
        if batch0 and epoch < epochs:
            # the rest of the interrupted epoch, then the following epochs
            checkpointer.position(epoch, batch0, metrics)
            model.fit(train_stream(train, batch, epoch, epoch + 1, batch0, **data_kw),
                      steps_per_epoch=steps - batch0, initial_epoch=epoch, epochs=epoch + 1,
                      validation_data=valid, callbacks=callbacks, verbose=2, shuffle=False)
            epoch += 1
            if model.stop_training:
                epoch = epochs
        if epoch < epochs:
            checkpointer.position(epoch, 0)
            model.fit(train_stream(train, batch, epoch, epochs, 0, **data_kw), steps_per_epoch=steps,
                      initial_epoch=epoch, epochs=epochs, validation_data=valid, callbacks=callbacks, verbose=2,
                      shuffle=False)
    if checkpointer.nan is not None:
        raise FloatingPointError(f"training loss is not finite at epoch {checkpointer.nan[0] + 1}, batch "
                                 f"{checkpointer.nan[1]}: lower train.learning_rate (no model written)")
    if early is not None:
        early.finish()
    log.info("trained %d steps in %.1f s", int(model.optimizer.iterations.numpy()), time.perf_counter() - t0)

    from .atomic import atomic_path

    target = Path(model_path) if dist.is_chief else out_dir / Path(model_path).name
    with atomic_path(target) as tmp:
        model.save(tmp)
    import shutil

    # a finished run leaves no checkpoint: a rerun trains anew; a worker's temporary directory goes too
    shutil.rmtree(ckpt_dir if dist.is_chief else out_dir, ignore_errors=True)
    return model


def main(argv=None) -> int:
    """``python -m realfake.train``: the rule's training outside Snakemake, e.g. one ``srun`` task per worker."""
    import argparse

    import yaml

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--shards", required=True, help="shard directory (results/shards)")
    p.add_argument("--model", required=True, help="output model (results/model/model.keras)")
    p.add_argument("--configfile", required=True, help="config with model: and train: blocks")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads per task [all cores]")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = yaml.safe_load(Path(a.configfile).read_text())
    fit(a.shards, a.model, {"model": cfg["model"], "train": cfg["train"]}, threads=a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
