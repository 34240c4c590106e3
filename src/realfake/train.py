"""Training: the callbacks, checkpoints and logs around ``model.fit``.

Run directory layout (beside the final ``model.keras``)::

    checkpoints/   BackupAndRestore state: a restarted job resumes at the saved epoch
    tensorboard/   scalars, graph and the profiler trace of the configured batches
    history.csv    one row per epoch
    run.json       reproducibility record: versions, config, host, threads, SLURM job
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def configure_threads(threads: int) -> None:
    """Size TensorFlow's thread pools to the job's allocation (Snakemake threads / SLURM cpus per task).

    The pools can only be sized before TensorFlow's runtime starts; in a process
    where it already runs (a test session, a notebook) the existing pools are kept.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
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
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_record(cfg: dict, threads: int) -> dict:
    from importlib import metadata

    import tensorflow as tf

    from . import __version__

    pkgs = {}
    for p in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "h5py", "astropy", "fitsio", "galsim", "snakemake"):
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
        "threads": threads,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "config": cfg,
    }


def start_or_resume(run_dir: Path, cfg: dict, shard_dir) -> None:
    """Keep the checkpoints of an interrupted run of the same config on the same shards; start afresh otherwise.

    A job killed at its time limit resumes from its checkpoint, but a changed
    model or training config, or new shards (a new split: resuming would train
    on today's test examples), must not inherit the old weights. A finished run
    leaves no checkpoint behind, so a rerun always trains anew.
    """
    import hashlib
    import shutil

    summary = (Path(shard_dir) / "summary.json").read_text()
    key = hashlib.sha256(json.dumps([cfg, summary], sort_keys=True, default=str).encode()).hexdigest()
    stamp = run_dir / "checkpoints" / "run.sha256"
    if not stamp.exists() or stamp.read_text() != key:
        for old in ("checkpoints", "tensorboard"):
            shutil.rmtree(run_dir / old, ignore_errors=True)
        (run_dir / "history.csv").unlink(missing_ok=True)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(key)
    else:
        log.info("resuming from the checkpoints in %s", stamp.parent)


def fit(shard_dir, model_path, cfg: dict, threads: int = 1):
    """Train the configured network on every training shard; write ``model_path`` (.keras)."""
    import keras
    import tensorflow as tf

    from .data import dataset, example_shape
    from .model import build_model
    from .shards import shard_files

    configure_threads(threads)
    tcfg = cfg["train"]
    keras.utils.set_random_seed(tcfg["seed"])
    if tcfg["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    run_dir = Path(model_path).parent
    start_or_resume(run_dir, cfg, shard_dir)
    (run_dir / "run.json").write_text(json.dumps(run_record(cfg, threads), indent=1, default=str))

    summary = json.loads((Path(shard_dir) / "summary.json").read_text())
    channels, stats = summary["channels"], summary["normalisation"]
    shape = example_shape(shard_dir)
    train = dataset(shard_dir, "train", tcfg["batch_size"], shape, tcfg["shuffle_buffer"], tcfg["seed"])
    # the validation split, when the shards have one, shows over-fitting in the training curves
    valid = dataset(shard_dir, "valid", tcfg["batch_size"], shape) if shard_files(shard_dir, "valid") else None
    model = build_model(cfg["model"], shape, channels, stats)
    model.summary(print_fn=lambda line, **kw: log.info(line))
    model.compile(
        optimizer=keras.optimizers.Adam(tcfg["learning_rate"]),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "checkpoints"), save_freq="epoch", delete_checkpoint=True),
        keras.callbacks.TensorBoard(
            log_dir=str(run_dir / "tensorboard"), write_graph=True, profile_batch=tuple(tcfg["profile_batches"])
        ),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TerminateOnNaN(),
    ]
    patience = tcfg.get("early_stopping_patience", 0)
    if patience and valid is not None:
        # stop when the validation loss has not improved for `patience` epochs; keep the best weights
        callbacks.append(keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=True))
    model.fit(train, validation_data=valid, epochs=tcfg["epochs"], callbacks=callbacks, verbose=2)
    from .atomic import atomic_path

    with atomic_path(model_path) as tmp:
        model.save(tmp)
    return model
