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
from concurrent.futures import ThreadPoolExecutor
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


def settle(path: str | Path) -> None:
    """Flush a finished output to disk and drop its pages from the page cache.

    The pages are dropped only where the kernel offers ``posix_fadvise``. A
    flush that fails (an I/O error, a full quota on a network file system)
    raises, naming the file.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # drops clean pages only: after the flush
    except OSError as err:
        raise OSError(err.errno, f"{path}: could not be flushed to disk: {err.strerror}") from err
    finally:
        os.close(fd)


class Settler:
    """Settle (flush and drop from the page cache) a job's finished outputs in a background thread, one at a
    time, while the job makes the next.

    A cutout job writes tens of gigabytes that nothing in the job reads again.
    Left in the page cache they count against a SLURM job's memory cgroup, and
    every new page costs the kernel a fresh one: on virtual machines that hand
    free memory back to their host (free page reporting), writes slowed from
    5 GB/s to 0.4 GB/s once a few gigabytes had piled up. Settled, a job holds
    about two outputs' pages, reused from one to the next. ``add`` waits for
    the previous output first, so a disk slower than the job slows the job
    rather than filling memory. Use as a context manager: leaving waits for
    the last one (and raises its error).
    """

    def __init__(self):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="settle")
        self._pending = None

    def add(self, path: str | Path) -> None:
        self.wait()
        self._pending = self._pool.submit(settle, path)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> "Settler":
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True)
