"""Logging set-up for rule scripts: everything, uncaught errors included, goes to the rule's log."""

from __future__ import annotations

import logging
import os
import sys
import traceback


def to_file(path: str, level=logging.INFO) -> None:
    """Send logging, stderr and uncaught exceptions to ``path`` (a Snakemake ``log:`` file).

    An uncaught exception is logged as one line (type and message); its traceback goes to ``<path less .log>.traceback``.
    """
    path = str(path)
    # each run's log starts fresh: a rerun after a failure says what this attempt did (a resumed training says so)
    stream = open(path, "w", buffering=1)
    # Native libraries (TensorFlow, HDF5, cfitsio) write to file descriptor 2 directly
    os.dup2(stream.fileno(), 2)
    sys.stderr = sys.stdout = stream  # Keras progress lines too
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=stream, force=True
    )

    def hook(kind, value, tb):
        # the log says what failed in one line; the Python traceback goes to a file beside it. Snakemake prints a
        # failed job's log on the terminal (show-failed-logs), where a user needs the message, not the stack. Some
        # errors (TensorFlow's, around a Python function it ran) carry a whole traceback in their text: cut it too.
        text = str(value).split("Traceback (most recent call last)")[0].rstrip()
        trace = str(path[:-4] if path.endswith(".log") else path) + ".traceback"
        try:
            with open(trace, "w") as f:
                traceback.print_exception(kind, value, tb, file=f)
            where = f"Python traceback in {trace}"
        except OSError:  # a full disk, say: the traceback then goes into the log itself
            logging.getLogger("realfake").error("traceback", exc_info=(kind, value, tb))
            where = "Python traceback above"
        logging.getLogger("realfake").error("failed: %s: %s (%s)", kind.__name__, text, where)
        sys.__stdout__.write(f"{kind.__name__}: {text} (details in {path})\n")

    sys.excepthook = hook
