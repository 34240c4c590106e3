"""Atomic writes: a file or directory appears under its final name only once complete.

Everything is first written to a hidden temporary name in the same directory
(same filesystem, so the final ``os.replace`` is atomic) and removed if the
writer fails: a killed job never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, directory: bool = False):
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    The temporary name keeps the final suffix (``.fits.fz``, ``.h5``, ``.npy``)
    so libraries that choose a format by extension behave the same.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # temporaries of a writer that was killed (SIGKILL, node failure) can be large: a rerun
    # removes them. One writer per output at a time, as Snakemake guarantees.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmpdir = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmpdir) / path.name
    try:
        if directory:
            tmp.mkdir()
        yield tmp
        if directory and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
