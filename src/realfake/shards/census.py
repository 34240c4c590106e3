"""The census of the brick files: each example's random key, and which examples the shards keep.

The key is a function of an example's identity (seed, brick, rs, id, label) only, so that every decision drawn
from it (magnitude matching, class balancing, the shuffle's order) does not depend on the order of the input
files, on brick batching or on the number of jobs. Only the small source tables are read, never the pixels.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from realfake import FAKE, REAL
from realfake.cutouts.brickfile import read_sources

if TYPE_CHECKING:
    from realfake.shards.settings import ShardConfig

log = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- matched pairs


def matched_values(src: pd.DataFrame, quantity: str) -> np.ndarray:
    """A quantity pairs are matched in: a source-table column, or ``log_<column>`` (its decimal logarithm: a
    caliper in it is a ratio, as a size's must be, the small sizes being the common ones)."""
    if quantity.startswith("log_"):
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.log10(src[quantity[4:]].to_numpy(float))
        return np.where(np.isfinite(v), v, np.nan)
    return src[quantity].to_numpy(float)


def match_pairs(src: pd.DataFrame, calipers: dict, keys: np.ndarray) -> np.ndarray:
    """Each fake paired with a real galaxy of its brick of the same catalogue values: per row, the key of its
    pair's fake (0 where unmatched).

    Within a brick, the fakes in the order of their keys each take the
    nearest real not yet taken (in the quantities of ``calipers``, each
    difference in units of its caliper, Euclidean), among those within every
    caliper; ties go to the real of smallest key. The pairs depend on the rows'
    values and keys only, and re-matching any set of matched rows gives the
    same pairs back (a fake's partner was the nearest of a larger set), which
    is how the evaluation finds them again from the manifest.
    """
    pair = np.zeros(len(src), np.uint64)
    if not len(src):
        return pair
    cols = list(calipers)
    x = np.column_stack([matched_values(src, c) for c in cols]) / np.array([calipers[c] for c in cols], float)
    from scipy.spatial import cKDTree

    labels, bricks = src["label"].to_numpy(), src["brick"].astype(str).to_numpy()
    complete = np.all(np.isfinite(x), axis=1)  # a missing value matches nothing
    for brick in np.unique(bricks):
        rows = np.flatnonzero((bricks == brick) & complete)
        fakes, reals = rows[labels[rows] == FAKE], rows[labels[rows] == REAL]
        if not len(fakes) or not len(reals):
            continue
        fakes, reals = fakes[np.argsort(keys[fakes], kind="stable")], reals[np.argsort(keys[reals], kind="stable")]
        # every (fake, real) within all calipers, found in the ball of radius sqrt(quantities) that holds them,
        # each fake's candidates nearest first (ties: the real of smallest key, the reals being in key order)
        near = cKDTree(x[reals]).query_ball_point(x[fakes], r=np.sqrt(len(cols)) * (1 + 1e-9))
        fi = np.repeat(np.arange(len(fakes)), [len(c) for c in near])
        rj = np.fromiter((j for c in near for j in c), np.int64, len(fi))
        d = np.abs(x[reals[rj]] - x[fakes[fi]])
        inside = np.all(d <= 1, axis=1)
        fi, rj, d2 = fi[inside], rj[inside], np.einsum("ij,ij->i", d[inside], d[inside])
        order = np.lexsort((rj, d2, fi))
        fi, rj = fi[order], rj[order]
        starts = np.searchsorted(fi, np.arange(len(fakes) + 1))
        free = np.ones(len(reals), bool)
        for i in range(len(fakes)):  # in key order, each fake takes its nearest real not yet taken
            for j in rj[starts[i] : starts[i + 1]].tolist():
                if free[j]:
                    free[j] = False
                    pair[[fakes[i], reals[j]]] = keys[fakes[i]]
                    break
    return pair


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


def labelled_sources(path) -> pd.DataFrame:
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
        keep, keys, _ = self.keep_pairs(src, cfg)
        return keep, keys

    def keep_pairs(self, src: pd.DataFrame, cfg: ShardConfig):
        """:meth:`keep`, and each example's pair (the key of its pair's fake; 0 unless ``balance: matched``)."""
        keys = example_keys(src, cfg.seed)
        pair = np.zeros(len(src), np.uint64)
        keep = _match_mask(src, cfg, self.p_match, keys)
        if self.undersample is not None:
            label, threshold = self.undersample
            keep &= (src["label"].to_numpy() != label) | (_balance_u(keys) <= threshold)
        if self.brick_undersample is not None:
            bricks, labels, u = src["brick"].to_numpy(), src["label"].to_numpy(), _balance_u(keys)
            for brick in np.unique(bricks):
                label, threshold = self.brick_undersample.get(brick, (None, -1.0))
                keep &= (bricks != brick) | ((labels != label) if label is not None else False) | (u <= threshold)
        if cfg.balance == "matched":  # (a brick's rows are all in one file: its pairs are decided here)
            kept = np.flatnonzero(keep)
            pair[kept] = match_pairs(src.iloc[kept], cfg.match, keys[kept])
            keep &= pair > 0
        return keep, keys, pair


def _undersample_bricks(c: "Census", cfg: ShardConfig) -> None:
    """balance: brick. In each brick the majority class keeps as many examples as the minority has (those with
    the smallest balance variates), so that neither a brick's share of fakes nor anything a brick's examples share
    (sky, depth, PSF) tells the classes apart; a brick with one class only keeps nothing and is recorded.
    balance: matched: in each brick the matched pairs (match_pairs), counted here; nothing to undersample."""
    thresholds, one_class, kept = {}, {}, {}
    for path in c.files:
        src = labelled_sources(path)
        keep, keys = c.keep(src, cfg)  # magnitude matching (and matched pairs) only, so far
        u, labels, bricks = _balance_u(keys), src["label"].to_numpy(), src["brick"].to_numpy()
        for brick in np.unique(bricks):
            if brick in kept:
                raise ValueError(f"{path}: brick {brick} is also in another brick file: cannot balance it")
            n = {lab: int(np.count_nonzero(keep & (bricks == brick) & (labels == lab))) for lab in (REAL, FAKE)}
            n_min = min(n.values())
            kept[brick] = 2 * n_min
            if cfg.balance == "matched":  # the pairs keep themselves: no threshold
                if n_min == 0:
                    one_class[str(brick)] = tuple(int(np.count_nonzero((bricks == brick) & (labels == lab)))
                                                  for lab in (REAL, FAKE))
                continue
            if n_min == 0:
                one_class[str(brick)] = (n[REAL], n[FAKE])
                continue  # absent from the thresholds: nothing kept
            majority = REAL if n[REAL] > n[FAKE] else FAKE
            u_major = u[keep & (bricks == brick) & (labels == majority)]
            thresholds[brick] = (majority, float(np.sort(u_major)[n_min - 1]))
    c.brick_undersample, c.one_class = (thresholds if cfg.balance == "brick" else None), one_class
    c.per_brick = {b: n for b, n in kept.items() if n}
    c.n_kept = {REAL: sum(kept.values()) // 2, FAKE: sum(kept.values()) // 2}
    if one_class:
        log.info("%d brick(s) hold %s and are left out: %s", len(one_class),
                 "no matched pair" if cfg.balance == "matched" else "one class only",
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
        src = labelled_sources(path)
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
                src = labelled_sources(path)
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

    if cfg.balance in ("brick", "matched"):
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
