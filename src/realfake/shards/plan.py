"""The shard plan: which examples go into the shards, in which split, and through which scatter bucket.

Read from the brick files' source tables only (no pixels): the census counts the examples and decides the
magnitude matching and class balancing, bricks are dealt to the splits or folds, and the key range of every
split is cut into scatter buckets sized for the memory budget. The plan is a small JSON file that every
scatter and gather job of the shuffle (realfake.shards.build) reads, so that they all take the same decisions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from realfake import FAKE, REAL
from realfake.atomic import atomic_path
from realfake.shards.census import Census, _hash_strings, _mix, census
from realfake.shards.settings import ShardConfig

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
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


def split_sizes(n: int, cfg: ShardConfig) -> dict:
    """Examples per group with ``split_by: example``, in the order of ``cfg.groups``."""
    if cfg.folds:
        return {g: n // cfg.folds + (k < n % cfg.folds) for k, g in enumerate(cfg.groups)}
    n_test = int(round(n * cfg.test_fraction))
    n_valid = int(round(n * cfg.validation_fraction))
    return {"test": n_test, "valid": n_valid, "train": n - n_test - n_valid}


# --------------------------------------------------------------------------- the plan


@dataclass
class ShardPlan:
    """Everything a scatter or gather job needs to take the decisions the whole shuffle takes: the config, the
    census, the brick files in their global order (a file's position breaks ties in the sort) and the buckets."""

    config: ShardConfig
    census: Census
    buckets: dict  # split (None with split_by: example) -> (first bucket, number of buckets)
    channels: tuple

    @property
    def n_buckets(self) -> int:
        return sum(n for _, n in self.buckets.values())

    @property
    def n_examples(self) -> int:
        return sum(self.census.n_kept.values())

    @cached_property
    def digest(self) -> str:
        """A short hash of the plan (computed once: a plan of 300,000 bricks is tens of MB of JSON): what a
        scatter job records and the gather jobs and the assembly check."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def part_buckets(self, part: int, parts: int) -> range:
        """The buckets of gather job ``part`` of ``parts`` (0-based): contiguous ranges of equal length +- 1."""
        if not 0 <= part < parts:
            raise ValueError(f"gather part {part} outside 0..{parts - 1}")
        nb = self.n_buckets
        return range(part * nb // parts, (part + 1) * nb // parts)

    def file_index(self, path) -> int:
        index = getattr(self, "_file_index", None)
        if index is None:
            index = self._file_index = {p: i for i, p in enumerate(self.census.files)}
        try:
            return index[str(path)]
        except KeyError:
            raise ValueError(f"{path}: brick file not in the shard plan (made from {len(index)} other files): "
                             "the plan is out of date, make it again") from None

    def assign(self, src: pd.DataFrame):
        """Per example of a brick file's source table: kept or not, its key, its bucket, its split
        (None with ``split_by: example``, where the split is decided by the position in key order) and its pair
        (``balance: matched``; else 0)."""
        keep, keys, pair = self.census.keep_pairs(src, self.config)
        if self.config.split_by == "example":
            first, nb = (np.uint64(v) for v in self.buckets[None])
            split = None
        else:
            # a brick in no split (one class only, balanced away) keeps none of its examples
            split = src["brick"].map(self.census.split_of).fillna(self.config.groups[0]).to_numpy()
            first = np.array([self.buckets[v][0] for v in split], dtype=np.uint64)
            nb = np.array([self.buckets[v][1] for v in split], dtype=np.uint64)
        bucket = first + (((keys >> np.uint64(32)) * nb) >> np.uint64(32))
        return keep, keys, bucket.astype(np.int64), split, pair

    def to_json(self) -> str:
        c = self.census
        census = {f.name: getattr(c, f.name) for f in fields(Census)}
        census["p_match"] = None if c.p_match is None else [float(v) for v in c.p_match]
        return json.dumps({"config": asdict(self.config), "census": census, "channels": list(self.channels),
                           "buckets": [[s, first, nb] for s, (first, nb) in self.buckets.items()]}, indent=1,
                          default=float)

    @classmethod
    def from_json(cls, text: str) -> "ShardPlan":
        d = json.loads(text)
        c = d["census"]
        labelled = {k: {int(lab): v for lab, v in c[k].items()} for k in ("n_in", "n_kept", "weights") if c[k]}
        counted = Census(**{**c, **labelled, "example_shape": tuple(c["example_shape"]),
                           "p_match": None if c["p_match"] is None else np.array(c["p_match"], dtype=np.float64),
                           "undersample": None if c["undersample"] is None else tuple(c["undersample"])})
        return cls(ShardConfig.from_config(d["config"]), counted, {s: (first, nb) for s, first, nb in d["buckets"]},
                   tuple(d["channels"]))

    def write(self, path) -> None:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(self.to_json())

    @classmethod
    def read(cls, path) -> "ShardPlan":
        try:
            return cls.from_json(Path(path).read_text())
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a readable shard plan ({e})") from e


def make_plan(brick_files, channels, cfg: ShardConfig) -> ShardPlan:
    """The census of the brick files, the split of each brick and the scatter buckets; checks that the examples
    and the memory budget allow shards at all. The number of gather jobs is not part of it (nor of the bytes)."""
    c = census(brick_files, cfg)
    n = sum(c.n_kept.values())
    if n == 0 and cfg.balance == "matched":
        raise ValueError(f"no fake has a real galaxy of its brick within the calipers of shards.match ({cfg.match}) "
                         f"in any of the {len(c.files)} brick files ({c.n_in[REAL]} reals, {c.n_in[FAKE]} fakes): "
                         "nothing to shard; widen the calipers, or compare the populations with shards.balance: brick")
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
    plan = ShardPlan(cfg, c, bucket_layout(c, cfg, example_bytes), tuple(channels))
    log.info("%d examples (%d real, %d fake) from %d brick files; %d scatter buckets for %d MB; split by %s",
             n, c.n_kept[REAL], c.n_kept[FAKE], len(c.files), plan.n_buckets, cfg.memory_mb, cfg.split_by)
    return plan
