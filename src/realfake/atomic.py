"""Atomic writes: a file or directory appears under its final name only once complete.

Everything is first written to a hidden temporary name in the same directory
(same filesystem, so the final ``os.replace`` is atomic) and removed if the
writer fails: a killed job never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
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
        try:
            yield tmp
        except OSError as err:
            if not _disk_full(err) or getattr(err, "explained", False) or _inside_temporary(path):
                raise  # (inside another atomic output: that one names the final path)
            # writers (NumPy, HDF5, cfitsio) rarely say which file: name the output and where the space ran out
            full = OSError(errno.ENOSPC, f"no space left on the device of {path.parent} while writing {path} "
                                         f"(partial temporaries removed; free space and rerun): {err}")
            full.explained = True
            raise full from err
        if directory and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _inside_temporary(path: Path) -> bool:
    return any(p.startswith(".") and p.endswith(".tmp") for p in path.parent.parts)


def _disk_full(err: OSError) -> bool:
    """Whether ``err`` means the disk (or quota) is full: by its errno, or by NumPy's message for a short write
    (``tofile``: "N requested and M written"), which has none."""
    text = str(err)
    return (err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in text
            or re.search(r"\d+ requested and \d+ written", text) is not None)
