"""Logging set-up for rule scripts: everything, uncaught errors included, goes to the rule's log."""

from __future__ import annotations

import logging
import os
import sys


def to_file(path: str, level=logging.INFO) -> None:
    """Send logging, stderr and uncaught exceptions to ``path`` (a Snakemake ``log:`` file)."""
    stream = open(path, "a", buffering=1)
    # Native libraries (TensorFlow, HDF5, cfitsio) write to file descriptor 2 directly
    os.dup2(stream.fileno(), 2)
    sys.stderr = sys.stdout = stream  # Keras progress lines too
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=stream, force=True
    )

    def hook(kind, value, tb):
        logging.getLogger("realfake").error("failed: %s", value, exc_info=(kind, value, tb))
        sys.__stdout__.write(f"{kind.__name__}: {value} (details in {path})\n")

    sys.excepthook = hook
