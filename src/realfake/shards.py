"""Per-brick cutout files to shuffled train/test shards, out of core.

All real and fake examples of the selected bricks are shuffled together and
split (test, optional validation, train), then written as ``xtrain_<N>.npy``
(size, S, S, C) float32 and ``ytrain_<N>.npy`` int8 (real = 0, fake = 1),
``xtest_<N>``/``ytest_<N>`` and ``xvalid_<N>``/``yvalid_<N>`` likewise; the
last shard of a split may be short.

The shuffle is a sort on a random 64-bit key computed from each example's
identity (seed, brick, rs, id, label), so the result does not depend on the
order of the input files, on brick batching or on the number of workers.
It never holds the data in memory: a first pass scatters the examples into
key-range buckets on disk, each small enough for the memory budget; a second
pass sorts one bucket at a time and streams it into the shards.

The split (``split_by``) is by brick by default: bricks, in an order drawn from
the seed, go to the test split until it holds ``test_fraction`` of the
examples, then to the validation split, the rest to training, and every split
is shuffled within. A brick's real galaxies and its fakes share the sky (the
fakes are injected into the same images, every injection run over the same
galaxies) and the brick's PSF, depth and class counts: split by example, the
network could learn a training brick's sky or its share of fakes, and meet the
same sky, or the complement of that share, in the test split, which biases the
test's AUC either way. With ``split_by: example`` the examples with the
smallest keys form the test split, the next the validation split, the rest
training, and the split sizes are exact.

A manifest names the split, shard, position, brick, rs, id and label of every
example, so anything in a figure can be traced back to the sky; a summary
gives the class counts per shard and the per-channel normalisation statistics
of the training split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import FAKE, REAL
from .atomic import atomic_path
from .brickfile import read_sources
from .catalogs import CONDITIONS
from .schema import schema_defaults

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
BALANCE = ("none", "brick", "undersample", "weights")
SPLIT_BY = ("brick", "example")
# Examples of the training split whose pixels give the normalisation statistics
STATS_EXAMPLES = 512

# One manifest row as stored next to the pixels in the scatter buckets
META_DTYPE = np.dtype(
    [
        ("key", "<u8"),
        ("file", "<i4"),
        ("row", "<i8"),
        ("brick", "S8"),
        ("region", "S5"),  # north | south ("" for a single-tree release)
        ("rs", "S24"),  # seed folder: rs0, more_skip_rs1000, file0_rs500_skip1
        ("id", "<i8"),
        ("label", "i1"),
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
MANIFEST_COLUMNS = ["split", "shard", "index"] + [n for n in META_DTYPE.names if n not in ("key", "file", "row")]


# The schema's defaults of the shards: block (their one home)
_DEFAULTS = schema_defaults("shards")


@dataclass(frozen=True)
class ShardConfig:
    """The ``shards:`` block of the config. The defaults are the schema's; ``size``, ``test_fraction`` and ``seed``,
    which the schema requires, default to the reference's values for callers without a config."""

    size: int = 512
    test_fraction: float = 0.2
    validation_fraction: float = _DEFAULTS["validation_fraction"]
    seed: int = 1
    # none | brick (each brick: its majority class undersampled to its minority's count; a brick with one class
    # drops out) | undersample (the majority class, globally) | weights (per-example, in w<split>_N.npy)
    balance: str = _DEFAULTS["balance"]
    # keep reals so that their g-magnitude histogram follows the fakes'
    match_magnitude: bool = _DEFAULTS["match_magnitude"]
    match_bins: tuple = tuple(_DEFAULTS["match_bins"])
    memory_mb: float = _DEFAULTS["memory_mb"]  # bound on the memory the shuffle uses for pixels
    split_by: str = _DEFAULTS["split_by"]  # brick: each brick's examples in one split | example: exact split sizes
    # >= 2: cross-fitting, the examples in that many folds (fold<k>, of whole bricks with split_by: brick) instead
    # of train/valid/test splits; each fold is tested by a model trained on the others (realfake.folds)
    folds: int = 0

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"shards.size must be >= 1, not {self.size}")
        if not (0 < self.test_fraction < 1 and 0 <= self.validation_fraction < 1):
            raise ValueError("shards.test_fraction must be in (0, 1) and shards.validation_fraction in [0, 1)")
        if self.test_fraction + self.validation_fraction >= 1:
            raise ValueError("shards.test_fraction + shards.validation_fraction must be < 1: no training split left")
        if self.balance not in BALANCE:
            raise ValueError(f"shards.balance must be one of {BALANCE}, not {self.balance!r}")
        if self.split_by not in SPLIT_BY:
            raise ValueError(f"shards.split_by must be one of {SPLIT_BY}, not {self.split_by!r}")
        if self.folds < 0 or self.folds == 1:
            raise ValueError(f"folds must be 0 (train/valid/test splits) or >= 2, not {self.folds}")

    @property
    def groups(self) -> tuple:
        """The shard groups, in the order their examples are written: the folds, or test, valid, train."""
        return tuple(f"fold{k}" for k in range(self.folds)) if self.folds else ("test", "valid", "train")

    @classmethod
    def from_config(cls, cfg: dict) -> "ShardConfig":
        cfg = dict(cfg)
        if "match_bins" in cfg:
            cfg["match_bins"] = tuple(cfg["match_bins"])
        return cls(**cfg)


# --------------------------------------------------------------------------- keys


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective scramble of uint64 (wrap-around arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash_strings(values) -> np.ndarray:
    """A stable 64-bit hash of each string (Python's hash() is salted per process)."""
    cache = {}
    out = np.empty(len(values), dtype=np.uint64)
    for i, v in enumerate(values):
        if v not in cache:
            cache[v] = int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little")
        out[i] = cache[v]
    return out


def example_keys(sources: pd.DataFrame, seed: int) -> np.ndarray:
    """The random key of each example: a function of its identity (brick, rs, id, label) and the seed only."""
    z = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
    z = _mix(z ^ _hash_strings(sources["brick"].to_numpy()))
    z = _mix(z ^ _hash_strings(sources["rs"].to_numpy()))
    ids = sources["id"].to_numpy(np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = _mix(z ^ (ids * np.uint64(2) + sources["label"].to_numpy(np.uint64)))
    return z


def _uniform(keys: np.ndarray) -> np.ndarray:
    return (keys >> np.uint64(11)).astype(np.float64) / float(2**53)


# --------------------------------------------------------------------------- selection


def _match_mask(src: pd.DataFrame, cfg: ShardConfig, p_match, keys) -> np.ndarray:
    """Reals kept with the probability of their magnitude bin; fakes always."""
    keep = np.ones(len(src), dtype=bool)
    if p_match is None:
        return keep
    real = src["label"].to_numpy() == REAL
    idx = np.digitize(src["mag_g"].to_numpy(float), cfg.match_bins) - 1
    inside = (idx >= 0) & (idx < len(p_match))
    p = np.where(inside, p_match[np.clip(idx, 0, len(p_match) - 1)], 0.0)
    u = _uniform(_mix(keys ^ np.uint64(0xA5A5A5A5A5A5A5A5)))
    keep[real] = u[real] < p[real]
    return keep


def _balance_u(keys) -> np.ndarray:
    """The uniform variate that decides which examples of the majority class undersampling keeps."""
    return _uniform(_mix(keys ^ np.uint64(0x5A5A5A5A5A5A5A5A)))


def kth_smallest(chunks, k: int, n_bins: int = 2**20) -> float:
    """The k-th smallest (1-based) of values in [0, 1) given as a re-iterable of arrays, out of core.

    A histogram locates the bin of the k-th value, a second pass collects only that bin.
    """
    hist = np.zeros(n_bins, dtype=np.int64)
    for v in chunks():
        hist += np.bincount((v * n_bins).astype(np.int64), minlength=n_bins)
    cum = np.cumsum(hist)
    if not 1 <= k <= cum[-1]:
        raise ValueError(f"k = {k} outside 1..{cum[-1]}")
    b = int(np.searchsorted(cum, k))
    below = int(cum[b - 1]) if b else 0
    inbin = np.sort(np.concatenate([v[(v * n_bins).astype(np.int64) == b] for v in chunks()]))
    return float(inbin[k - below - 1])


def _read_sources(path) -> pd.DataFrame:
    src = read_sources(path)
    if len(src) and not set(np.unique(src["label"])) <= {REAL, FAKE}:
        raise ValueError(f"{path}: labels other than real = 0 and fake = 1")
    return src


@dataclass
class Census:
    """What the brick files hold, and the decisions that match and balance the classes."""

    files: list
    example_shape: tuple
    n_in: dict  # label -> examples in the brick files
    per_brick: dict  # brick -> examples in the brick files
    n_kept: dict  # label -> examples after matching and balancing
    p_match: np.ndarray | None = None  # per magnitude bin, probability to keep a real (None: no matching)
    undersample: tuple | None = None  # (label, threshold): keep that label where its balance variate <= threshold
    weights: dict | None = None  # label -> per-example weight
    split_of: dict | None = None  # brick -> split or fold (split_by: brick)
    # balance: brick; brick -> (label, threshold): keep that label where its balance variate <= threshold
    brick_undersample: dict | None = None
    one_class: dict | None = None  # balance: brick; brick -> (reals, fakes) of the bricks holding one class only

    def keep(self, src: pd.DataFrame, cfg: ShardConfig):
        """Mask of the examples of ``src`` that go into the shards, and their keys."""
        keys = example_keys(src, cfg.seed)
        keep = _match_mask(src, cfg, self.p_match, keys)
        if self.undersample is not None:
            label, threshold = self.undersample
            keep &= (src["label"].to_numpy() != label) | (_balance_u(keys) <= threshold)
        if self.brick_undersample is not None:
            bricks, labels, u = src["brick"].to_numpy(), src["label"].to_numpy(), _balance_u(keys)
            for brick in np.unique(bricks):
                label, threshold = self.brick_undersample.get(brick, (None, -1.0))
                keep &= (bricks != brick) | ((labels != label) if label is not None else False) | (u <= threshold)
        return keep, keys


def _undersample_bricks(c: "Census", cfg: ShardConfig) -> None:
    """balance: brick. In each brick the majority class keeps as many examples as the minority has (those with
    the smallest balance variates), so that neither a brick's share of fakes nor anything a brick's examples share
    (sky, depth, PSF) tells the classes apart; a brick with one class only keeps nothing and is recorded."""
    thresholds, one_class, kept = {}, {}, {}
    for path in c.files:
        src = _read_sources(path)
        keep, keys = c.keep(src, cfg)  # magnitude matching only, so far
        u, labels, bricks = _balance_u(keys), src["label"].to_numpy(), src["brick"].to_numpy()
        for brick in np.unique(bricks):
            if brick in kept:
                raise ValueError(f"{path}: brick {brick} is also in another brick file: cannot balance it")
            n = {lab: int(np.count_nonzero(keep & (bricks == brick) & (labels == lab))) for lab in (REAL, FAKE)}
            n_min = min(n.values())
            kept[brick] = 2 * n_min
            if n_min == 0:
                one_class[str(brick)] = (n[REAL], n[FAKE])
                continue  # absent from the thresholds: nothing kept
            majority = REAL if n[REAL] > n[FAKE] else FAKE
            thresholds[brick] = (majority, float(np.sort(u[keep & (bricks == brick) & (labels == majority)])[n_min - 1]))
    c.brick_undersample, c.one_class = thresholds, one_class
    c.per_brick = {b: n for b, n in kept.items() if n}
    c.n_kept = {REAL: sum(kept.values()) // 2, FAKE: sum(kept.values()) // 2}
    if one_class:
        log.info("%d brick(s) hold one class only and are left out: %s", len(one_class),
                 ", ".join(f"{b} ({r} real, {f} fake)" for b, (r, f) in sorted(one_class.items())))


def census(brick_files, cfg: ShardConfig) -> Census:
    """Count the examples (reading only the small source tables) and decide matching and balancing.

    Undersampling keeps exactly as many of the majority class as the minority has.
    """
    import h5py

    files = sorted(set(map(str, brick_files)))
    if not files:
        raise ValueError("no brick files given: nothing to shard")
    shape, n_in, per_brick = None, {REAL: 0, FAKE: 0}, {}
    nb = len(cfg.match_bins) - 1
    hist = {REAL: np.zeros(nb), FAKE: np.zeros(nb)}
    for path in files:
        with h5py.File(path, "r") as f:
            s = f["cutouts"].shape[1:]
        if shape is None:
            shape = s
        elif s != shape:
            raise ValueError(f"{path}: cutouts of shape {s}, other brick files have {shape}")
        src = _read_sources(path)
        for brick, n in src["brick"].value_counts().items():
            per_brick[brick] = per_brick.get(brick, 0) + int(n)
        for lab in (REAL, FAKE):
            sel = src["label"].to_numpy() == lab
            n_in[lab] += int(sel.sum())
            hist[lab] += np.histogram(src["mag_g"].to_numpy(float)[sel], cfg.match_bins)[0]
    if sum(n_in.values()) == 0:
        raise ValueError(f"no cutouts in any of the {len(files)} brick files: nothing to shard")
    c = Census(files, tuple(shape), n_in, per_brick, dict(n_in), weights={REAL: 1.0, FAKE: 1.0})

    def kept_variates(label):
        """Per file, the balance variates of the examples of ``label`` that matching keeps."""
        def chunks():
            for path in files:
                src = _read_sources(path)
                keep, keys = c.keep(src, cfg)
                yield _balance_u(keys)[keep & (src["label"].to_numpy() == label)]
        return chunks

    if cfg.match_magnitude:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(hist[REAL] > 0, hist[FAKE] / hist[REAL], 0.0)
        if ratio.max() <= 0:
            raise ValueError("shards.match_magnitude: no magnitude bin holds both reals and fakes")
        c.p_match = ratio / ratio.max()
        c.n_kept[REAL] = sum(len(v) for v in kept_variates(REAL)())

    if cfg.balance == "brick":
        _undersample_bricks(c, cfg)
        return c
    minority = min(c.n_kept, key=c.n_kept.get)
    majority = FAKE if minority == REAL else REAL
    n_min, n_max = c.n_kept[minority], c.n_kept[majority]
    if cfg.balance == "undersample" and 0 < n_min < n_max:
        c.undersample = (majority, kth_smallest(kept_variates(majority), n_min))
        c.n_kept[majority] = n_min
    elif cfg.balance == "weights" and n_min > 0:
        total = n_min + n_max
        c.weights = {lab: total / (2.0 * n) for lab, n in c.n_kept.items()}
    return c


# --------------------------------------------------------------------------- scatter and gather


def _meta(src: pd.DataFrame, keys, file_index: int, weights: dict) -> np.ndarray:
    m = np.zeros(len(src), dtype=META_DTYPE)
    m["key"], m["file"], m["row"] = keys, file_index, np.arange(len(src))
    for col in ("brick", "rs", "type"):
        m[col] = src[col].astype(str).str.encode("ascii").to_numpy()
    if "region" in src:  # (brick files written before regions were read have none)
        m["region"] = src["region"].astype(str).str.encode("ascii").to_numpy()
    for col in ("id", "label", "ra", "dec", "mag_g", "mag_r", "mag_z", "size", "frac_nodata"):
        m[col] = src[col].to_numpy()
    for col in CONDITIONS:
        m[col] = src[col].to_numpy() if col in src else np.nan
    m["weight"] = np.where(m["label"] == REAL, weights[REAL], weights[FAKE])
    return m


# How the memory budget is shared in the gather pass: one bucket, the shard being
# filled, a shard-sized temporary of the copy into it, and the statistics sample.
BUCKET_SHARE, SHARD_SHARE = 1 / 5, 1 / 6


def n_buckets(n_examples: int, example_bytes: int, memory_mb: float) -> int:
    """Buckets needed for one bucket's pixels to fit in its share of the memory budget."""
    return max(1, math.ceil(n_examples * example_bytes / (memory_mb * 2**20 * BUCKET_SHARE)))


def _brick_order(bricks, seed: int) -> list:
    """The bricks in an order drawn from the seed (a function of the names and the seed only)."""
    bricks = sorted(bricks)
    salt = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ np.uint64(0x6B72696373706C74))  # "brickspl"
    return [bricks[i] for i in np.argsort(_mix(salt ^ _hash_strings(bricks)), kind="stable")]


def brick_folds(per_brick: dict, cfg: ShardConfig) -> dict:
    """The fold of each brick (cross-fitting, ``split_by: brick``): bricks in an order drawn from the seed, each
    to the fold holding the fewest examples so far, so that the folds are of near-equal size and random."""
    bricks = [b for b in _brick_order(per_brick, cfg.seed) if per_brick[b] > 0]
    if len(bricks) < cfg.folds:
        raise ValueError(f"{len(bricks)} brick(s) hold examples of both classes: too few for {cfg.folds} folds of "
                         "whole bricks; lower evaluate.folds or select more bricks")
    load, fold_of = np.zeros(cfg.folds, np.int64), {}
    for b in bricks:
        k = int(np.argmin(load))
        fold_of[b] = f"fold{k}"
        load[k] += per_brick[b]
    return fold_of


def brick_splits(per_brick: dict, cfg: ShardConfig) -> dict:
    """The split of each brick (``split_by: brick``): bricks, in an order drawn from the seed, fill the test
    split to ``test_fraction`` of the examples, then the validation split; the rest train.

    A brick joins a split while that brings the split nearer its share; each split asked for gets at least
    one brick, and too few bricks for that is an error.
    """
    order = _brick_order(per_brick, cfg.seed)
    bricks = order
    n = sum(per_brick.values())
    wanted = [("test", cfg.test_fraction * n)] + ([("valid", cfg.validation_fraction * n)]
                                                  if cfg.validation_fraction > 0 else [])
    split_of, i = {}, 0
    for split, target in wanted:
        got = 0
        while i < len(order) and (got == 0 or got + per_brick[order[i]] - target < target - got):
            split_of[order[i]] = split
            got += per_brick[order[i]]
            i += 1
    if i >= len(order):
        names = " and ".join(["test"] + (["validation"] if len(wanted) > 1 else []) + ["training"])
        raise ValueError(f"{len(bricks)} brick(s) are too few to split by brick into {names} splits: "
                         "select more bricks, or set shards.split_by: example")
    split_of.update({b: "train" for b in order[i:]})
    return split_of


def bucket_layout(c: Census, cfg: ShardConfig, example_bytes: int) -> dict:
    """split -> (first bucket, number of buckets): the buckets of each split in turn, test first, so that
    the gather pass streams the splits in order (``split_by: brick``); one range for all (``example``)."""
    if cfg.split_by == "example":
        return {None: (0, n_buckets(sum(c.n_kept.values()), example_bytes, cfg.memory_mb))}
    layout, first = {}, 0
    for split in cfg.groups:
        n = sum(k for b, k in c.per_brick.items() if c.split_of[b] == split)  # an upper bound: before balancing
        nb = n_buckets(n, example_bytes, cfg.memory_mb) if n else 0
        layout[split], first = (first, nb), first + nb
    return layout


def ivar_medians(x: np.ndarray, channels) -> dict:
    """Per band, the median inverse variance of each stamp's pixels with data (0 where a band has none)."""
    out = {}
    for b in ("g", "r", "z"):
        v = x[..., list(channels).index(f"ivar_{b}")].reshape(len(x), -1)
        v = np.sort(np.where(v > 0, v, np.inf), axis=1)  # no data last
        n = np.count_nonzero(np.isfinite(v), axis=1)
        rows = np.arange(len(v))
        lo, hi = v[rows, np.maximum((n - 1) // 2, 0)], v[rows, np.maximum(n // 2, 0)]
        out[b] = np.where(n > 0, 0.5 * (lo + hi), 0.0).astype(np.float32)
    return out


def scatter(c: Census, cfg: ShardConfig, bucket_dir: Path, buckets: dict, channels) -> dict:
    """Pass 1: every kept example goes to the bucket of its split and key range, pixels and manifest row apart.

    Returns the number of examples in each split (``split_by: brick``; None for ``example``)."""
    import h5py

    example_bytes = int(np.prod(c.example_shape)) * 4
    # a chunk is read, then copied once per bucket it spans: a few chunks in memory at once
    chunk = max(1, int(cfg.memory_mb * 2**20 / 16 // example_bytes))
    counts = {split: 0 for split in cfg.groups}
    for k, path in enumerate(c.files):
        src = _read_sources(path)
        keep, keys = c.keep(src, cfg)
        meta = _meta(src, keys, k, c.weights)
        if cfg.split_by == "example":
            first, nb = (np.uint64(v) for v in buckets[None])
        else:
            # a brick in no split (one class only, balanced away) keeps none of its examples
            split = src["brick"].map(c.split_of).fillna(cfg.groups[0]).to_numpy()
            for name in cfg.groups:
                counts[name] += int(np.count_nonzero(keep & (split == name)))
            first = np.array([buckets[v][0] for v in split], dtype=np.uint64)
            nb = np.array([buckets[v][1] for v in split], dtype=np.uint64)
        bucket = first + (((keys >> np.uint64(32)) * nb) >> np.uint64(32))
        with h5py.File(path, "r") as f:
            d = f["cutouts"]
            for i0 in range(0, len(src), chunk):
                i1 = min(i0 + chunk, len(src))
                sel = np.flatnonzero(keep[i0:i1])
                if not len(sel):
                    continue
                x = d[i0:i1][sel]
                b = bucket[i0:i1][sel]
                m = meta[i0:i1][sel]
                for band, med in ivar_medians(x, channels).items():
                    m[f"ivar_{band}"] = med
                for bb in np.unique(b):
                    j = b == bb
                    # file.write, not ndarray.tofile: a full disk then raises ENOSPC, not a bare short write
                    with open(bucket_dir / f"{int(bb):06d}.x", "ab") as fx:
                        fx.write(np.ascontiguousarray(x[j], dtype="<f4").data)
                    with open(bucket_dir / f"{int(bb):06d}.m", "ab") as fm:
                        fm.write(np.ascontiguousarray(m[j]).data)
        log.info("scattered %s (%d/%d): %d of %d examples kept", Path(path).name, k + 1, len(c.files),
                 int(keep.sum()), len(src))
    return None if cfg.split_by == "example" else counts


def gather(bucket_dir: Path, nb: int, example_shape):
    """Pass 2: (manifest rows, pixels, order) of one bucket at a time, buckets in key order.

    ``meta[order]`` and ``x[order]`` are in global key order; the pixels are not
    reordered here, which would need a second bucket-sized copy.
    """
    for bb in range(nb):
        mpath, xpath = bucket_dir / f"{bb:06d}.m", bucket_dir / f"{bb:06d}.x"
        if not mpath.exists():
            continue
        meta = np.fromfile(mpath, dtype=META_DTYPE)
        x = np.fromfile(xpath, dtype="<f4").reshape((len(meta),) + tuple(example_shape))
        # ties (the same example listed twice) fall back to file and row order
        order = np.lexsort((meta["row"], meta["file"], meta["key"]))
        yield meta, x, order
        mpath.unlink()
        xpath.unlink()


class ShardWriter:
    """Streams examples in order into the shards of each split; holds at most one shard."""

    def __init__(self, out_dir: Path, sizes: dict, shard_size: int, example_shape, weights: bool, manifest):
        self.out_dir, self.shard_size, self.weights, self.manifest = out_dir, shard_size, weights, manifest
        # groups in key order (test, validation, train; or the folds), as ``sizes`` lists them
        self.bounds, start = [], 0
        for split in sizes:
            self.bounds.append((split, start, start + sizes[split]))
            start += sizes[split]
        self.x = np.empty((shard_size,) + tuple(example_shape), dtype=np.float32)
        self.meta = np.empty(shard_size, dtype=META_DTYPE)
        self.pos, self.fill, self.per_shard, self.stats_sample = 0, 0, [], []
        self.header_written = False

    def _split_at(self, pos):
        for split, lo, hi in self.bounds:
            if lo <= pos < hi:
                return split, lo, hi
        raise IndexError(pos)

    def add(self, meta: np.ndarray, x: np.ndarray, order: np.ndarray) -> None:
        """Append the examples ``order`` of ``meta`` and ``x``, in that order."""
        i = 0
        while i < len(order):
            split, lo, hi = self._split_at(self.pos)
            room = min(self.shard_size - self.fill, hi - self.pos, len(order) - i)
            rows = order[i : i + room]
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
        rows = pd.DataFrame({c: meta[c] for c in MANIFEST_COLUMNS[3:]})
        for c in ("brick", "region", "rs", "type"):
            rows[c] = rows[c].str.decode("ascii")
        rows.insert(0, "index", np.arange(n))
        rows.insert(0, "shard", shard)
        rows.insert(0, "split", split)
        rows.to_csv(self.manifest, header=not self.header_written, index=False)
        self.header_written = True
        labels = meta["label"]
        self.per_shard.append({"split": split, "shard": shard, "n_real": int((labels == REAL).sum()),
                               "n_fake": int((labels == FAKE).sum())})
        # the last group (train, or the last fold) is in random order: its first shard is a fair sample
        if split == self.bounds[-1][0] and not self.stats_sample:
            self.stats_sample.append(x[:STATS_EXAMPLES].copy())
        log.info("shard %s_%d written (%d examples, %d/%d in all)", split, shard, n, self.pos,
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


def split_sizes(n: int, cfg: ShardConfig) -> dict:
    """Examples per group with ``split_by: example``, in the order of ``cfg.groups``."""
    if cfg.folds:
        return {g: n // cfg.folds + (k < n % cfg.folds) for k, g in enumerate(cfg.groups)}
    n_test = int(round(n * cfg.test_fraction))
    n_valid = int(round(n * cfg.validation_fraction))
    return {"test": n_test, "valid": n_valid, "train": n - n_test - n_valid}


def build(brick_files, out_dir, channels, cfg: ShardConfig | dict | None = None, **overrides) -> dict:
    """Census, scatter, gather into shards; write the manifest and the summary; return the summary.

    ``out_dir`` should be new or empty (the rule writes it through an atomic directory).
    """
    if cfg is None or isinstance(cfg, dict):
        cfg = ShardConfig.from_config({**(cfg or {}), **overrides})
    elif overrides:
        raise TypeError("pass either a ShardConfig or keyword overrides")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = census(brick_files, cfg)
    n = sum(c.n_kept.values())
    if n == 0:
        raise ValueError("no example left after magnitude matching and balancing: nothing to shard")
    if cfg.split_by == "example":
        sizes = split_sizes(n, cfg)
        if min(sizes.values()) == 0 and (cfg.folds or sizes["train"] == 0 or sizes["test"] == 0):
            raise ValueError(f"{n} examples are too few for {cfg.folds} folds" if cfg.folds else
                             f"{n} examples are too few for a test fraction of {cfg.test_fraction}")
    else:
        c.split_of = brick_folds(c.per_brick, cfg) if cfg.folds else brick_splits(c.per_brick, cfg)
    example_bytes = int(np.prod(c.example_shape)) * 4
    if cfg.size * example_bytes > cfg.memory_mb * 2**20 * SHARD_SHARE:
        raise ValueError(f"shards.memory_mb = {cfg.memory_mb} is too small for shards of {cfg.size} examples "
                         f"({cfg.size * example_bytes / 2**20:.0f} MB each; need at least {1 / SHARD_SHARE:.0f}x that)")
    buckets = bucket_layout(c, cfg, example_bytes)
    nb = sum(n for _, n in buckets.values())
    log.info("%d examples (%d real, %d fake) from %d brick files; %d scatter buckets for %d MB; split by %s",
             n, c.n_kept[REAL], c.n_kept[FAKE], len(c.files), nb, cfg.memory_mb, cfg.split_by)
    bucket_dir = out_dir / ".buckets"
    shutil.rmtree(bucket_dir, ignore_errors=True)
    bucket_dir.mkdir()
    try:
        counts = scatter(c, cfg, bucket_dir, buckets, channels)
        if counts is not None:
            sizes = counts
            if not cfg.folds and (sizes["train"] == 0 or sizes["test"] == 0):
                raise ValueError(f"split by brick, the {'training' if sizes['test'] else 'test'} split is empty "
                                 "after matching and balancing: select more bricks, or set shards.split_by: example")
        with atomic_path(out_dir / "manifest.csv") as tmp, open(tmp, "w", newline="") as manifest:
            writer = ShardWriter(out_dir, sizes, cfg.size, c.example_shape, cfg.balance == "weights", manifest)
            for meta, x, order in gather(bucket_dir, nb, c.example_shape):
                writer.add(meta, x, order)
    finally:
        shutil.rmtree(bucket_dir, ignore_errors=True)
    if writer.pos != n:
        raise RuntimeError(f"wrote {writer.pos} examples, expected {n}")
    per_shard = writer.per_shard
    summary = {
        "n_examples": n,
        "example_shape": list(c.example_shape),
        "channels": list(channels),
        "config": asdict(cfg),
        "n_in": {"real": c.n_in[REAL], "fake": c.n_in[FAKE]},
        "class_weights": {"real": c.weights[REAL], "fake": c.weights[FAKE]},
        "scatter_buckets": nb,
        "groups": list(cfg.groups),
        "bricks": ({split: sorted(b for b, v in c.split_of.items() if v == split) for split in cfg.groups}
                   if c.split_of else None),
        "one_class_bricks": ({b: {"real": r, "fake": f} for b, (r, f) in sorted(c.one_class.items())}
                             if c.one_class is not None else None),
        "splits": {
            s: {
                "n_shards": sum(1 for p in per_shard if p["split"] == s),
                "n_real": sum(p["n_real"] for p in per_shard if p["split"] == s),
                "n_fake": sum(p["n_fake"] for p in per_shard if p["split"] == s),
            }
            for s in cfg.groups
        },
        "per_shard": per_shard,
        "normalisation": channel_stats(np.concatenate(writer.stats_sample), channels),
    }
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=float))
    return summary
