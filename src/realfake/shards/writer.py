"""The shards' writer: examples in key order to ``x<group>_<N>.npy``, ``y<group>_<N>.npy`` (and ``w...``) with
their manifest rows, and the normalisation statistics of the training split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from realfake import FAKE, REAL
from realfake.atomic import atomic_path

log = logging.getLogger(__name__)

# Examples of the training split whose pixels give the normalisation statistics
STATS_EXAMPLES = 512


def manifest_columns(meta_dtype) -> list:
    """The manifest's columns: where an example is (split, shard, index), then its scattered manifest row less the
    shuffle's bookkeeping (key, file, row)."""
    return ["split", "shard", "index"] + [n for n in meta_dtype.names if n not in ("key", "file", "row")]


class ShardWriter:
    """Streams examples in key order into the shards of each group; holds at most one shard.

    It writes the shards that start at positions [``begin``, ``end``) of the global key order: one gather job's
    shards."""

    def __init__(self, out_dir: Path, sizes: dict, shard_size: int, example_shape, weights: bool, manifest,
                 begin: int = 0, end: int | None = None):
        self.out_dir, self.shard_size, self.weights, self.manifest = out_dir, shard_size, weights, manifest
        # groups in key order (test, validation, train; or the folds), as ``sizes`` lists them
        self.bounds, start = [], 0
        for split in sizes:
            self.bounds.append((split, start, start + sizes[split]))
            start += sizes[split]
        # the window written, both ends moved on to shard boundaries: a shard is written by the writer in whose
        # window it starts
        self.begin = self.shard_start(begin)
        self.end = self.shard_start(start if end is None else end)
        self.x = np.empty((shard_size,) + tuple(example_shape), dtype=np.float32)
        self.meta = None  # manifest rows: allocated with the dtype of the first rows given
        self.pos, self.fill, self.per_shard, self.stats_sample = self.begin, 0, [], None

    def shard_start(self, pos: int) -> int:
        """The first shard boundary at or after ``pos`` (group ends are boundaries too)."""
        for _, lo, hi in self.bounds:
            if pos <= hi:
                return min(hi, lo + -(-(pos - lo) // self.shard_size) * self.shard_size) if pos > lo else lo
        return self.bounds[-1][2]

    def _split_at(self, pos):
        for split, lo, hi in self.bounds:
            if lo <= pos < hi:
                return split, lo, hi
        raise IndexError(pos)

    @property
    def done(self) -> bool:
        return self.pos >= self.end

    def add(self, meta: np.ndarray, x: np.ndarray, order: np.ndarray, first: int = 0) -> None:
        """Append the examples ``order`` of ``meta`` and ``x``, in that order; ``order[0]`` is at global
        position ``first``. Examples outside [begin, end) are passed over."""
        i = max(0, self.pos - first)
        order = order[: max(0, self.end - first)]
        while i < len(order):
            split, lo, hi = self._split_at(self.pos)
            room = min(self.shard_size - self.fill, hi - self.pos, len(order) - i)
            rows = order[i : i + room]
            if self.meta is None:
                self.meta = np.empty(self.shard_size, dtype=meta.dtype)
            self.x[self.fill : self.fill + room] = x[rows]
            self.meta[self.fill : self.fill + room] = meta[rows]
            self.fill += room
            self.pos += room
            i += room
            if self.fill == self.shard_size or self.pos == hi:
                self._flush(split, (self.pos - 1 - lo) // self.shard_size)

    def _flush(self, split: str, shard: int) -> None:
        n = self.fill
        x, meta = self.x[:n], self.meta[:n]
        files = [(f"x{split}_{shard}.npy", x), (f"y{split}_{shard}.npy", meta["label"].astype(np.int8))]
        if self.weights:
            files.append((f"w{split}_{shard}.npy", meta["weight"].astype(np.float32)))
        for name, arr in files:
            with atomic_path(self.out_dir / name) as tmp:
                np.save(tmp, arr, allow_pickle=False)
        rows = pd.DataFrame({c: meta[c] for c in manifest_columns(meta.dtype)[3:]})
        for c in rows.columns:  # the byte strings of the scatter files (brick, region, rs, coadds, type)
            if rows[c].dtype == object:
                rows[c] = rows[c].str.decode("ascii")
        rows.insert(0, "index", np.arange(n))
        rows.insert(0, "shard", shard)
        rows.insert(0, "split", split)
        rows.to_csv(self.manifest, header=False, index=False)
        labels = meta["label"]
        self.per_shard.append({"split": split, "shard": shard, "n_real": int((labels == REAL).sum()),
                               "n_fake": int((labels == FAKE).sum())})
        # the last group (train, or the last fold) is in random order: its first shard is a fair sample
        if split == self.bounds[-1][0] and shard == 0:
            self.stats_sample = x[:STATS_EXAMPLES].copy()
        log.info("shard %s_%d written (%d examples, position %d of %d)", split, shard, n, self.pos,
                 self.bounds[-1][2])
        self.fill = 0


def channel_stats(x: np.ndarray, channels) -> dict:
    """Per-channel median and robust scale (1.4826 x MAD) of a sample of training examples."""
    stats = {}
    for c, name in enumerate(channels):
        v = x[..., c].ravel()
        v = v[np.isfinite(v)]
        med = float(np.median(v))
        mad = float(np.median(np.abs(v - med))) * 1.4826
        stats[name] = {"median": med, "scale": mad if mad > 0 else float(np.std(v) or 1.0)}
    return stats
