"""The scatter jobs' bucket files, written by :func:`realfake.shards.build.scatter` and read back bucket by bucket by the
gather jobs: per scatter job, one manifest row per kept example (``META_DTYPE``), its pixels, both grouped by bucket
(within a bucket in file and row order), the offset of each bucket and the digest of the plan followed.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from realfake.shards.plan import ShardPlan

# One manifest row as stored next to the pixels in the scatter buckets
META_DTYPE = np.dtype(
    [
        ("key", "<u8"),
        ("file", "<i4"),
        ("row", "<i8"),
        ("brick", "S8"),
        ("region", "S5"),  # north | south ("" for a single-tree release)
        ("rs", "S24"),  # seed folder: rs0, more_skip_rs1000, file0_rs500_skip1
        ("coadds", "S24"),  # the coadds the stamp was cut from: a seed folder, or "release"
        ("id", "<i8"),
        ("label", "i1"),
        ("pair", "<i8"),  # shards.balance: matched: its pair, the key of the pair's fake / 2 (0: unpaired)
        ("weight", "<f4"),
        ("ra", "<f8"),
        ("dec", "<f8"),
        ("mag_g", "<f4"),
        ("mag_r", "<f4"),
        ("mag_z", "<f4"),
        ("type", "S4"),
        ("size", "<f4"),
        ("frac_nodata", "<f4"),
        # median inverse variance of the stamp's pixels with data, per band: its depth, for the nuisance baseline
        ("ivar_g", "<f4"),
        ("ivar_r", "<f4"),
        ("ivar_z", "<f4"),
        # observing conditions at the source (the nearest real source's for a fake; NaN in older brick files)
        ("psfsize_g", "<f4"),
        ("psfsize_r", "<f4"),
        ("psfsize_z", "<f4"),
        ("nobs_g", "<f4"),
        ("nobs_r", "<f4"),
        ("nobs_z", "<f4"),
        ("ebv", "<f4"),
    ]
)


# A scatter job's output: its examples' pixels and manifest rows grouped by bucket, and where each bucket starts
# and the digest of the plan it followed
SCATTER_PIXELS, SCATTER_META, SCATTER_INDEX, SCATTER_PLAN = "pixels.f4", "meta.bin", "index.npy", "plan.sha256"


def write_at(f, arr: np.ndarray, offset: int) -> None:
    """``arr``'s bytes at ``offset`` of the open file ``f`` (os.pwrite: a full disk raises ENOSPC, not a bare short
    write)."""
    view = memoryview(arr).cast("B")
    while len(view):
        n = os.pwrite(f.fileno(), view, offset)
        view, offset = view[n:], offset + n


class _Mapped:
    """A file of fixed-size rows mapped read-only (no file descriptor kept), whose pages are handed back after each
    read: they are the page cache's, and would otherwise count in the job's RSS as the buckets go by."""

    def __init__(self, path: Path, dtype, row_shape, n: int):
        self.path, self.dtype, self.row_shape = path, np.dtype(dtype), tuple(row_shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.row_shape))
        if path.stat().st_size < n * self.row_bytes:
            raise ValueError(f"{path}: {path.stat().st_size} bytes, shorter than the {n} rows its index says: the "
                             "scatter output is damaged, make it again")
        with open(path, "rb") as f:
            self.map = mmap.mmap(f.fileno(), n * self.row_bytes, access=mmap.ACCESS_READ)

    def read_into(self, out: np.ndarray, lo: int, hi: int) -> None:
        start, stop = lo * self.row_bytes, hi * self.row_bytes
        out[...] = np.frombuffer(self.map, dtype=self.dtype, count=(stop - start) // self.dtype.itemsize,
                                 offset=start).reshape(out.shape)
        first = start - start % mmap.PAGESIZE
        self.map.madvise(mmap.MADV_DONTNEED, first, stop - first)


class ScatterOutput:
    """One scatter job's output, opened once by a gather job: its bucket offsets, and its manifest rows and pixels
    mapped, checked to follow ``plan``."""

    def __init__(self, directory, plan: ShardPlan):
        self.directory = d = Path(directory)
        followed = (d / SCATTER_PLAN).read_text().strip()
        if followed != plan.digest:
            raise ValueError(f"{d}: scattered by another shard plan ({followed}, not {plan.digest}): "
                             "the scatter is out of date, make it again")
        self.offsets = np.load(d / SCATTER_INDEX, allow_pickle=False)
        if self.offsets.shape != (plan.n_buckets + 1,):
            raise ValueError(f"{d / SCATTER_INDEX}: {self.offsets.shape} bucket offsets, the plan has "
                             f"{plan.n_buckets} buckets: the scatter output is damaged, make it again")
        n = int(self.offsets[-1])
        self.meta = _Mapped(d / SCATTER_META, META_DTYPE, (), n) if n else None
        self.pixels = _Mapped(d / SCATTER_PIXELS, "<f4", plan.census.example_shape, n) if n else None

    def span(self, bucket: int) -> tuple[int, int]:
        return int(self.offsets[bucket]), int(self.offsets[bucket + 1])


def bucket_counts(outputs, n_buckets: int) -> np.ndarray:
    """The kept examples of every bucket, summed over the scatter jobs (zeros for none)."""
    total = np.zeros(n_buckets, dtype=np.int64)
    for o in outputs:
        total += np.diff(o.offsets)
    return total


def read_bucket(outputs, bucket: int, example_shape):
    """(manifest rows, pixels, order) of one bucket from every scatter job; ``meta[order]`` and ``x[order]`` are
    in key order. The pixels are copied once, into one array, and not reordered here, which would need a second
    bucket-sized copy."""
    spans = [(o, *o.span(bucket)) for o in outputs]
    spans = [(o, lo, hi) for o, lo, hi in spans if hi > lo]
    meta = np.empty(sum(hi - lo for _, lo, hi in spans), dtype=META_DTYPE)
    x = np.empty((len(meta),) + tuple(example_shape), dtype="<f4")
    at = 0
    for o, lo, hi in spans:
        o.meta.read_into(meta[at : at + hi - lo], lo, hi)
        o.pixels.read_into(x[at : at + hi - lo], lo, hi)
        at += hi - lo
    # ties (the same example listed twice) fall back to file and row order
    return meta, x, np.lexsort((meta["row"], meta["file"], meta["key"]))
