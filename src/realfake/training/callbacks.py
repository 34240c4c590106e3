"""The Keras callbacks around training's ``model.fit``: resumable early stopping, the learning rate in the epoch
logs, the checkpoint writer (realfake.training.checkpoints' format), and the TensorBoard callback closed on an exception.

Imports Keras: training imports this module only once its threads and environment are set (realfake.training.runtime).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from realfake.training import checkpoints
from realfake.training.checkpoints import EXIT_SIGTERM
from realfake.training.devices import require_tensorflow

require_tensorflow()
import keras  # noqa: E402

log = logging.getLogger(__name__)


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
        self.serial += 1
        checkpoints.save(self.dir, self.model, epoch, batch, reason, self.steps_per_epoch, self.serial, finished,
                         self.save_metrics, self.early_stopping, self.history)


@contextlib.contextmanager
def close_on_error(tensorboard):
    """On an exception (SIGTERM's exit included), end the TensorBoard callback: stop a running trace, flush."""
    try:
        yield tensorboard
    except BaseException:
        try:
            tensorboard.on_train_end()
        except Exception as err:  # never hide the original exception
            log.warning("closing TensorBoard logs: %s", err)
        raise
