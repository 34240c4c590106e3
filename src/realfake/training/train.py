"""Training: :func:`fit`, the configured network trained on a shard set's training split, resumable.

Run directory layout (``run_dir``: by default the final ``model.keras``'s directory; the workflow's
``results/folds/<k>/training/``, a directory it declares, so that Snakemake keeps it when a job fails)::

    checkpoints/   resumable state (weights, optimizer, position, early stopping); removed once the model is saved
    tensorboard/   scalars (loss, accuracy, AUC, learning rate), graph, example cutouts, profiler trace
    history.csv    one row per epoch
    run.json       reproducibility record: versions, config, host, threads, SLURM job, distribution

Exact resume. Every ``train.checkpoint_every_batches`` batches, at the end of every
epoch, and when SIGTERM arrives (SLURM's signal before a time limit or a
pre-emption) the weights, optimizer state, metric accumulators, early-stopping
state and position (epoch, batch) are written; after SIGTERM the process exits
with status 143, so SLURM and Snakemake see a failed job and a retry resumes.
Epoch ``k``'s data order depends on ``(seed, k)`` only (:mod:`realfake.training.data`), so
a resumed run skips the batches already seen of its epoch, finishes that epoch,
then goes on: its weights equal those of an uninterrupted run (with
``train.deterministic``). Keras' own ``BackupAndRestore`` (3.15) restores only the
epoch, not the batch, so it would replay or skip part of an epoch.

The parts: realfake.training.runtime (threads, environment, session, run.json),
realfake.shards.shardset (the splits, listed once), realfake.training.data (the tf.data
streams), realfake.training.model (the network, the learning-rate schedule),
realfake.training.callbacks and realfake.training.checkpoints (exact resume),
realfake.training.summaries (TensorBoard's example cutouts and graph).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from realfake.training.checkpoints import Interrupt, build_metrics, restore, start_or_resume, truncate_history
from realfake.training.devices import require_tensorflow
from realfake.training.runtime import (
    allocated_threads, apply_env, configure_threads, run_record, start_session, write_run_record
)
from realfake.schema import schema_defaults
from realfake.shards.shardset import ShardSet, read_summary

require_tensorflow()  # a clear message, naming the cpu and gpu extras, instead of a bare ModuleNotFoundError later
log = logging.getLogger(__name__)


def train_config(tcfg: dict) -> dict:
    """The ``train:`` block with the schema's defaults of its optional keys filled in (YAML's bare on/off read as
    on/off)."""
    tcfg = {**schema_defaults("train"), **tcfg}
    for key in ("mixed_precision", "distribute"):
        if isinstance(tcfg[key], bool):
            tcfg[key] = "on" if tcfg[key] else "off"
    return tcfg


@dataclass
class TrainingData:
    """What training reads of a shard directory, once: the training split, the validation stream, the steps of an
    epoch, the loss weights, and the channels and normalisation statistics of the summary."""

    train: ShardSet
    valid: object  # the validation split's tf.data stream, or None where the shards have none
    channels: list
    stats: dict
    steps: int
    weights: str  # none | shards (w<split>_N.npy) | class (train.class_weight: balanced)
    class_weights: list | None
    stream: dict  # train_stream's options

    @property
    def shape(self) -> tuple:
        return self.train.example_shape

    @classmethod
    def read(cls, shard_dir, tcfg: dict, multi: bool) -> "TrainingData":
        """``multi``: several workers split every global batch evenly between them, so whole batches only."""
        from realfake.training.data import dataset

        summary = read_summary(shard_dir)
        train, batch = ShardSet.read(shard_dir, "train"), tcfg["batch_size"]
        steps = train.batches(batch, drop_remainder=multi)
        if steps < 1:
            raise ValueError(f"fewer training examples than one batch of {batch}")
        weights, class_weights = "none", None
        if train.weights is not None:
            weights = "shards"
            if tcfg["class_weight"] != "none":
                log.warning("train.class_weight = %s ignored: the shards carry per-example weights (w*.npy)",
                            tcfg["class_weight"])
        elif tcfg["class_weight"] == "balanced":
            weights, class_weights = "class", train.balanced_class_weights()
            log.info("class weights (real, fake): %s", class_weights)
        loader = tcfg["loader_threads"]
        stream = dict(shuffle_buffer=tcfg["shuffle_buffer"], seed=tcfg["seed"], weights=weights,
                      class_weights=class_weights, drop_remainder=multi, augment_examples=tcfg["augment"],
                      threads=loader)
        # the validation split, when the shards have one, shows over-fitting in the training curves
        valid = ShardSet.read(shard_dir, "valid")
        valid = dataset(valid, batch, drop_remainder=multi, threads=loader) if valid.x else None
        return cls(train, valid, summary["channels"], summary["normalisation"], steps, weights, class_weights, stream)


def compiled_model(cfg: dict, data: TrainingData, strategy):
    """The configured network, compiled under ``strategy`` with Adam on the configured learning-rate schedule."""
    import keras

    from realfake.training.model import FakeAUC, LearningRate, build_model

    tcfg, steps = cfg["train"], data.steps
    lr = LearningRate(tcfg["learning_rate"], tcfg["lr_schedule"], total_steps=tcfg["epochs"] * steps,
                      warmup_steps=round(tcfg["warmup_epochs"] * steps), step_every=tcfg["lr_step_epochs"] * steps,
                      factor=tcfg["lr_step_factor"])
    with strategy.scope():
        model = build_model(cfg["model"], data.shape, data.channels, data.stats)
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy", FakeAUC(name="auc")],
        )
    model.summary(print_fn=lambda line, **kw: log.info(line))
    return model


def make_callbacks(model, tcfg: dict, dist, data: TrainingData, run_dir: Path, out_dir: Path, interrupt, extra=()):
    """The callbacks of ``model.fit``, in their order, ``extra`` before the checkpoint's; and early stopping (or
    None), the checkpoint writer and the TensorBoard callback, which training also uses."""
    import keras

    from realfake.training.callbacks import Checkpointer, LearningRateToLogs, ResumableEarlyStopping

    # the metric accumulators of an interrupted epoch are kept with one replica (with several, reading them syncs)
    save_metrics = dist.kind == "default"
    if save_metrics:
        build_metrics(model, data.shape)
    patience = tcfg["early_stopping_patience"]
    early = None
    if patience and data.valid is not None:
        # stop when the monitored validation metric has not improved for `patience` epochs; keep the best weights
        monitor = tcfg["early_stopping_monitor"]
        early = ResumableEarlyStopping(monitor, mode="max" if monitor == "val_auc" else "min", patience=patience,
                                       restore_best_weights=True)
        early.set_model(model)  # a resumed run with no epoch left runs no fit, which would attach it
    history = out_dir / "history.csv"
    checkpointer = Checkpointer(run_dir / "checkpoints" if dist.is_chief else out_dir / "checkpoints", data.steps,
                                tcfg["checkpoint_every_batches"], interrupt, early, history, save_metrics)
    tensorboard = keras.callbacks.TensorBoard(
        log_dir=str(out_dir / "tensorboard"), write_graph=True,
        profile_batch=tuple(tcfg["profile_batches"]) if dist.is_chief else 0,
    )
    callbacks = [LearningRateToLogs(), *([early] if early else []),
                 keras.callbacks.CSVLogger(str(history), append=True), tensorboard, *extra, checkpointer]
    return callbacks, early, checkpointer, tensorboard


def start_position(model, state, early, data: TrainingData, tcfg: dict, dist, run_dir: Path, out_dir: Path):
    """Where training starts: (epoch, batch, metric accumulators), restored from the checkpoint's ``state``; a fresh
    run (state None) starts at (0, 0) and logs the graph and the example cutouts first."""
    from realfake.training.summaries import log_example_images, log_graph

    if state is None:
        if dist.is_chief:
            log_graph(out_dir / "tensorboard", model, data.shape)
            if tcfg["example_images"]:
                log_example_images(out_dir / "tensorboard", data.train, data.channels, data.stats,
                                   tcfg["example_images"])
        return 0, 0, None
    with dist.strategy.scope():
        metrics = restore(model, run_dir / "checkpoints", state, early)
    if dist.is_chief:
        truncate_history(out_dir / "history.csv", state.get("history_rows"))
    return (tcfg["epochs"] if state.get("finished") else state["epoch"]), state["batch"], metrics


def train_epochs(model, data: TrainingData, tcfg: dict, callbacks, checkpointer, epoch: int, batch0: int,
                 metrics) -> None:
    """Train from (``epoch``, ``batch0``) to the last epoch: the rest of an interrupted epoch, then the following."""
    from realfake.training.data import train_stream

    epochs, batch, steps = tcfg["epochs"], tcfg["batch_size"], data.steps
    if batch0 and epoch < epochs:
        checkpointer.position(epoch, batch0, metrics)
        model.fit(train_stream(data.train, batch, epoch, epoch + 1, batch0, **data.stream),
                  steps_per_epoch=steps - batch0, initial_epoch=epoch, epochs=epoch + 1,
                  validation_data=data.valid, callbacks=callbacks, verbose=2, shuffle=False)
        epoch += 1
        if model.stop_training:
            epoch = epochs
    if epoch < epochs:
        checkpointer.position(epoch, 0)
        model.fit(train_stream(data.train, batch, epoch, epochs, 0, **data.stream), steps_per_epoch=steps,
                  initial_epoch=epoch, epochs=epochs, validation_data=data.valid, callbacks=callbacks, verbose=2,
                  shuffle=False)


def save_model(model, model_path, dist, run_dir: Path, out_dir: Path) -> None:
    """Write the model (atomically; a worker other than the chief into its temporary directory), then remove the
    checkpoint: a rerun of a finished run trains anew. A worker's temporary directory goes too."""
    import shutil

    from realfake.atomic import atomic_path

    target = Path(model_path) if dist.is_chief else out_dir / Path(model_path).name
    with atomic_path(target) as tmp:
        model.save(tmp)
    shutil.rmtree(run_dir / "checkpoints" if dist.is_chief else out_dir, ignore_errors=True)


def fit(shard_dir, model_path, cfg: dict, threads: int = 1, callbacks=(), device: str | None = None, run_dir=None):
    """Train the configured network on every training shard; write ``model_path`` (.keras). Resumes when it can.

    ``run_dir``: the run's working state and logs (see the module's docstring); default: ``model_path``'s directory.
    ``callbacks``: extra Keras callbacks, run before the checkpoint's. ``device``: ``train.device`` as the rule
    resolved it (``cpu`` or ``gpu``); default: as configured. ``gpu``: stop if TensorFlow sees no GPU.
    """
    cfg = {"model": cfg["model"], "train": train_config(cfg["train"])}
    tcfg = cfg["train"]
    threads = allocated_threads(threads)
    env_set = apply_env(tcfg["env"], threads)
    configure_threads(threads, tcfg["inter_op_threads"])

    from realfake.training.callbacks import close_on_error  # (Keras: once the threads and the environment are set)
    from realfake.training.devices import check_gpus

    # a job given GPUs that TensorFlow cannot see (the CPU build on a GPU node) stops here, before anything is written
    check_gpus(require=(device or tcfg["device"]) == "gpu")
    dist, mixed = start_session(tcfg)
    run_dir = Path(model_path).parent if run_dir is None else Path(run_dir)
    # Keras' multi-worker convention: workers other than the chief write into a temporary directory
    out_dir = run_dir if dist.is_chief else Path(tempfile.mkdtemp(prefix=f"realfake-worker{dist.task_index}-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    state = start_or_resume(run_dir, cfg, shard_dir, chief=dist.is_chief)
    data = TrainingData.read(shard_dir, tcfg, multi=dist.kind == "multi_worker")
    model = compiled_model(cfg, data, dist.strategy)
    if dist.is_chief:
        extra = {"distribution": dist.record(), "mixed_precision": mixed, "env_set": env_set,
                 "steps_per_epoch": data.steps, "weights": data.weights, "class_weights": data.class_weights,
                 "resumed_from": None if state is None else {k: state[k] for k in ("epoch", "batch", "reason")}}
        write_run_record(run_dir, run_record(cfg, threads, extra), resumed=state is not None)

    interrupt = Interrupt()
    callbacks, early, checkpointer, tensorboard = make_callbacks(model, tcfg, dist, data, run_dir, out_dir,
                                                                 interrupt, callbacks)
    epoch, batch0, metrics = start_position(model, state, early, data, tcfg, dist, run_dir, out_dir)
    t0 = time.perf_counter()
    with interrupt, close_on_error(tensorboard):
        train_epochs(model, data, tcfg, callbacks, checkpointer, epoch, batch0, metrics)
    if checkpointer.nan is not None:
        raise FloatingPointError(f"training loss is not finite at epoch {checkpointer.nan[0] + 1}, batch "
                                 f"{checkpointer.nan[1]}: lower train.learning_rate (no model written)")
    if early is not None:
        early.finish()
    log.info("trained %d steps in %.1f s", int(model.optimizer.iterations.numpy()), time.perf_counter() - t0)
    save_model(model, model_path, dist, run_dir, out_dir)
    return model


def main(argv=None) -> int:
    """``python -m realfake.training.train``: the rule's training outside Snakemake, e.g. one ``srun`` task per worker (the
    ``train_cnn`` rule starts its tasks so, with ``--config``, when ``train.nodes`` x ``train.tasks_per_node`` > 1)."""
    import argparse
    import json

    import yaml

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--shards", required=True, help="shard directory (results/shards)")
    p.add_argument("--model", required=True, help="output model (results/folds/0/model/model.keras)")
    p.add_argument("--run-dir", help="checkpoints, TensorBoard logs, history.csv, run.json (results/folds/0/training) "
                                     "[the model's directory]")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--configfile", help="config with model: and train: blocks")
    given.add_argument("--config", help="the same as JSON text")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads per task [all cores]")
    p.add_argument("--device", choices=("cpu", "gpu"), help="train.device as resolved (gpu: stop if TensorFlow "
                                                          "sees no GPU) [train.device]")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = json.loads(a.config) if a.config else yaml.safe_load(Path(a.configfile).read_text())
    fit(a.shards, a.model, {"model": cfg["model"], "train": cfg["train"]}, threads=a.threads, device=a.device,
        run_dir=a.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
