"""Exact resume: the checkpoint a training run writes, keeps or clears, and restores.

A checkpoint (``<run>/checkpoints/``) is ``state.json`` (epoch, batch, reason,
the files below, the rows of history.csv it covers) beside the files it names:
weights, the dropout layers' random states, the metric accumulators of an
unfinished epoch, early stopping's best weights. ``run.sha256`` ties it to the
config and shards it was made with. SIGTERM becomes a flag
(:class:`Interrupt`) that the checkpoint callback (realfake.training.callbacks) reads
after each batch: it writes a checkpoint and exits with :data:`EXIT_SIGTERM`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

import numpy as np

from realfake.atomic import atomic_path

log = logging.getLogger(__name__)

EXIT_SIGTERM = 128 + signal.SIGTERM


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


def save(directory: Path, model, epoch: int, batch: int, reason: str, steps_per_epoch: int, serial: int,
         finished: bool = False, save_metrics: bool = True, early_stopping=None, history=None) -> dict:
    """Write the resumable state at (``epoch``, ``batch``) into ``directory``: the weights, the random states, the
    metric accumulators mid-epoch (``save_metrics``), early stopping's state and best weights, the rows of
    ``history`` so far; then ``state.json``, which names them, then drop the files of older checkpoints.
    ``serial`` numbers the checkpoints of this process. Returns the state."""
    directory.mkdir(parents=True, exist_ok=True)
    tag = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{serial}"
    state = {"epoch": epoch, "batch": batch, "step": epoch * steps_per_epoch + batch,
             "reason": reason, "finished": finished, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "weights": f"weights-{tag}.weights.h5", "best_weights": None, "metrics": None,
             "rng": None, "early_stopping": None, "history_rows": None}
    with atomic_path(directory / state["weights"]) as tmp:
        model.save_weights(tmp)
    rng = rng_variables(model)
    if rng:  # the dropout layers' random states, which save_weights leaves out
        state["rng"] = f"rng-{tag}.npz"
        with atomic_path(directory / state["rng"]) as tmp:
            np.savez(tmp, *[np.asarray(v.numpy()) for v in rng])
    if batch and save_metrics:
        state["metrics"] = f"metrics-{tag}.npz"
        with atomic_path(directory / state["metrics"]) as tmp:
            np.savez(tmp, **{v.path: np.asarray(v.numpy()) for v in model.metrics_variables})
    if early_stopping is not None:
        state["early_stopping"] = early_stopping.get_state()
        if early_stopping.best_weights is not None:
            state["best_weights"] = f"best-{tag}.npz"
            with atomic_path(directory / state["best_weights"]) as tmp:
                np.savez(tmp, *early_stopping.best_weights)
    if history is not None and Path(history).exists():
        state["history_rows"] = max(0, len(Path(history).read_text().splitlines()) - 1)
    with atomic_path(directory / "state.json") as tmp:
        tmp.write_text(json.dumps(state, indent=1))
    keep = {state["weights"], state["metrics"], state["best_weights"], state["rng"]}
    for old in directory.glob("*-*.*"):
        if old.name not in keep and old.name.split("-")[0] in ("weights", "metrics", "best", "rng"):
            old.unlink(missing_ok=True)
    log.info("checkpoint: epoch %d, batch %d (%s)", epoch + (batch > 0), batch, reason)
    return state


def rng_variables(model) -> list:
    """The states of the model's random-number generators (dropout's seed generators), in the model's order:
    part of where training stands, not of its weights."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def restore(model, ckpt_dir: Path, state: dict, early_stopping=None):
    """Load a checkpoint's weights, optimizer and random states into ``model`` (built and compiled); return its
    metric accumulators."""
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
    x = np.zeros((1,) + tuple(shape), np.float32)
    model.compute_metrics(x, np.zeros(1, np.int32), model(x, training=False))
    model.reset_metrics()


def truncate_history(path: Path, rows) -> None:
    """Drop the rows of epochs logged after the checkpoint (a kill between the log and the checkpoint)."""
    if rows is None or not path.exists():
        return
    lines = path.read_bytes().splitlines(keepends=True)  # bytes: CSVLogger's \r\n line ends stay as written
    if len(lines) > rows + 1:
        with atomic_path(path) as tmp:  # killed while writing, it must not lose the rows the checkpoint counts
            tmp.write_bytes(b"".join(lines[: rows + 1]))
