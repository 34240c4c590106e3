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
pass sorts one bucket at a time and streams it into the shards. Both passes
run as independent jobs: the plan (realfake.shards.plan, from the source tables
only) is made once; one scatter job per batch of brick files writes that
batch's examples grouped by bucket; one gather job per contiguous range of
buckets writes the shards that start in its range (reading on into the next
buckets to finish its last shard); and the assembly links the shards into one
directory beside the manifest and summary. The bytes do not depend on the
number of scatter or gather jobs.

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

import errno
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from realfake import FAKE, REAL
from realfake.atomic import atomic_path
from realfake.shards.buckets import (
    META_DTYPE, SCATTER_INDEX, SCATTER_META, SCATTER_PIXELS, SCATTER_PLAN, ScatterOutput, bucket_counts, read_bucket,
    write_at,
)
from realfake.inputs.catalogs import CONDITIONS
from realfake.shards.census import labelled_sources
from realfake.shards.plan import ShardConfig, ShardPlan, make_plan, split_sizes
from realfake.shards.writer import ShardWriter, channel_stats, manifest_columns

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = manifest_columns(META_DTYPE)

# --------------------------------------------------------------------------- scatter


def _meta(src: pd.DataFrame, keys, file_index: int, weights: dict) -> np.ndarray:
    m = np.zeros(len(src), dtype=META_DTYPE)
    m["key"], m["file"], m["row"] = keys, file_index, np.arange(len(src))
    for col in ("brick", "rs", "type"):
        m[col] = src[col].astype(str).str.encode("ascii").to_numpy()
    for col in ("region", "coadds"):  # (brick files written before these were recorded have none)
        if col in src:
            m[col] = src[col].astype(str).str.encode("ascii").to_numpy()
    for col in ("id", "label", "ra", "dec", "mag_g", "mag_r", "mag_z", "size", "frac_nodata"):
        m[col] = src[col].to_numpy()
    for col in CONDITIONS:
        m[col] = src[col].to_numpy() if col in src else np.nan
    m["weight"] = np.where(m["label"] == REAL, weights[REAL], weights[FAKE])
    return m


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


def scatter(plan: ShardPlan, brick_files, out_dir) -> dict:
    """Pass 1, for one batch of brick files: every kept example to its bucket, pixels and manifest row apart.

    ``out_dir`` gets the pixels and manifest rows grouped by bucket (within a bucket in file and row order)
    and the offset of each bucket; returns the examples kept per bucket."""
    import h5py

    cfg, shape = plan.config, plan.census.example_shape
    example_bytes = int(np.prod(shape)) * 4
    # a chunk is read, then copied once per bucket it spans: a few chunks in memory at once
    chunk = max(1, int(cfg.memory_mb * 2**20 / 16 // example_bytes))
    files = sorted(map(str, brick_files), key=plan.file_index)
    # the source tables first (small): where every kept example goes
    metas, buckets = [], []
    for path in files:
        src = labelled_sources(path)
        keep, keys, bucket, _, pair = plan.assign(src)
        meta = _meta(src, keys, plan.file_index(path), plan.census.weights)
        meta["pair"] = (pair >> np.uint64(1)).astype(np.int64)  # (a CSV column of int64)
        metas.append(meta[keep])
        buckets.append(bucket[keep])
    bucket_all = np.concatenate(buckets) if buckets else np.zeros(0, np.int64)
    counts = np.bincount(bucket_all, minlength=plan.n_buckets)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cursor = offsets[:-1].copy()
    with open(out_dir / SCATTER_PIXELS, "wb") as fx:
        fx.truncate(int(offsets[-1]) * example_bytes)
        for k, path in enumerate(files):
            with h5py.File(path, "r") as f:
                d, done = f["cutouts"], 0
                if len(metas[k]) and d.shape[0] <= int(metas[k]["row"][-1]):
                    raise ValueError(f"{path}: {d.shape[0]} cutouts for more source rows: a damaged brick file, "
                                     "cut that brick again")
                src_rows = metas[k]["row"]
                for i0 in range(0, int(src_rows[-1]) + 1 if len(src_rows) else 0, chunk):
                    rows = src_rows[(src_rows >= i0) & (src_rows < i0 + chunk)]
                    if not len(rows):
                        continue
                    x = d[i0 : min(i0 + chunk, d.shape[0])][rows - i0]
                    m = metas[k][done : done + len(rows)]
                    for band, med in ivar_medians(x, plan.channels).items():
                        m[f"ivar_{band}"] = med
                    b = buckets[k][done : done + len(rows)]
                    for bb in np.unique(b):
                        j = b == bb
                        write_at(fx, np.ascontiguousarray(x[j], dtype="<f4"), int(cursor[bb]) * example_bytes)
                        cursor[bb] += int(j.sum())
                    done += len(rows)
            log.info("scattered %s (%d/%d): %d examples kept", Path(path).name, k + 1, len(files), len(metas[k]))
    if not np.array_equal(cursor, offsets[1:]):
        raise RuntimeError(f"scatter of {len(files)} brick file(s) into {out_dir}: the pixels written do not fill "
                           "the buckets counted from the source tables")
    meta_all = np.concatenate(metas) if metas else np.zeros(0, META_DTYPE)
    with atomic_path(out_dir / SCATTER_META) as tmp, open(tmp, "wb") as fm:
        fm.write(np.ascontiguousarray(meta_all[np.argsort(bucket_all, kind="stable")]).data)
    with atomic_path(out_dir / SCATTER_INDEX) as tmp:
        np.save(tmp, offsets, allow_pickle=False)
    with atomic_path(out_dir / SCATTER_PLAN) as tmp:
        Path(tmp).write_text(plan.digest + "\n")
    return counts


# --------------------------------------------------------------------------- gather


def group_sizes(plan: ShardPlan, counts: np.ndarray) -> dict:
    """Examples per group (the splits or folds), in write order."""
    cfg = plan.config
    if cfg.split_by == "example":
        return split_sizes(plan.n_examples, cfg)
    sizes = {g: int(counts[first : first + nb].sum()) for g, (first, nb) in plan.buckets.items()}
    if not cfg.folds and (sizes["train"] == 0 or sizes["test"] == 0):
        raise ValueError(f"split by brick, the {'training' if sizes['test'] else 'test'} split is empty "
                         "after matching and balancing: select more bricks, or set shards.split_by: example")
    return sizes


# A gather job's output besides its shards
PART_MANIFEST, PART_SHARDS, PART_SAMPLE = "manifest.part.csv", "shards.json", "stats_sample.npy"


def gather(plan: ShardPlan, scatter_dirs, part: int, parts: int, out_dir) -> list:
    """Pass 2, for gather job ``part`` of ``parts``: the shards that start in its buckets' key range, with their
    manifest rows (``manifest.part.csv``), class counts (``shards.json``) and, for the job holding it, the
    normalisation sample; one bucket in memory at a time. Returns the shards' class counts."""
    outputs = [ScatterOutput(d, plan) for d in scatter_dirs]
    counts = bucket_counts(outputs, plan.n_buckets)
    if counts.sum() != plan.n_examples:
        raise ValueError(f"the {len(outputs)} scatter outputs hold {counts.sum()} examples, the plan "
                         f"{plan.n_examples}: a scatter job is missing or out of date")
    starts = np.concatenate([[0], np.cumsum(counts)])
    mine = plan.part_buckets(part, parts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = plan.census.example_shape
    with atomic_path(out_dir / PART_MANIFEST) as tmp, open(tmp, "w", newline="") as manifest:
        writer = ShardWriter(out_dir, group_sizes(plan, counts), plan.config.size, shape,
                             plan.config.balance == "weights", manifest, int(starts[mine.start]),
                             int(starts[mine.stop]))
        # on from the first bucket holding position ``begin``, into the next job's buckets to end the last shard
        bucket = int(np.searchsorted(starts, writer.begin, side="right")) - 1
        while not writer.done and bucket < plan.n_buckets:
            if counts[bucket]:
                meta, x, order = read_bucket(outputs, bucket, shape)
                writer.add(meta, x, order, first=int(starts[bucket]))
                del meta, x, order  # one bucket in memory at a time
            bucket += 1
    if writer.pos != writer.end:
        raise RuntimeError(f"gather part {part}: wrote up to position {writer.pos}, expected {writer.end}")
    if writer.stats_sample is not None:
        with atomic_path(out_dir / PART_SAMPLE) as tmp:
            np.save(tmp, writer.stats_sample, allow_pickle=False)
    with atomic_path(out_dir / PART_SHARDS) as tmp:
        Path(tmp).write_text(json.dumps({"plan": plan.digest, "shards": writer.per_shard}))
    log.info("gather part %d of %d: %s, positions %d-%d, %d shard(s)", part + 1, parts,
             f"buckets {mine.start}-{mine.stop - 1}" if len(mine) else "no bucket", writer.begin, writer.end,
             len(writer.per_shard))
    return writer.per_shard


# --------------------------------------------------------------------------- assembly


def _link(src: Path, dst: Path) -> bool:
    """A hard link (no bytes copied), or a copy where the file system allows none between the two (another file
    system, or none at all); True if linked."""
    try:
        os.link(src, dst)
        return True
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        shutil.copy2(src, dst)
        return False


def assemble(plan: ShardPlan, part_dirs, out_dir) -> dict:
    """The gather jobs' shards in one directory, with the manifest and the summary; returns the summary.

    ``out_dir`` should be new or empty (the rule writes it through an atomic directory)."""
    cfg, c = plan.config, plan.census
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_shard, sample, copied = [], None, 0
    with atomic_path(out_dir / "manifest.csv") as tmp, open(tmp, "wb") as manifest:
        manifest.write(",".join(MANIFEST_COLUMNS).encode() + b"\n")
        for d in map(Path, part_dirs):
            part = json.loads((d / PART_SHARDS).read_text())
            if part["plan"] != plan.digest:
                raise ValueError(f"{d}: gathered by another shard plan ({part['plan']}, not {plan.digest}): "
                                 "the gather is out of date, make it again")
            per_shard += part["shards"]
            with open(d / PART_MANIFEST, "rb") as rows:
                shutil.copyfileobj(rows, manifest)
            if (d / PART_SAMPLE).exists():
                sample = np.load(d / PART_SAMPLE, allow_pickle=False)
            for f in sorted(d.glob("[xyw]*.npy")):
                copied += not _link(f, out_dir / f.name)
    if copied:
        log.warning("%d shard files copied, not linked (the gather outputs are on another file system): the "
                    "disk holds them twice until the gather outputs are removed", copied)
    n = plan.n_examples
    written = sum(p["n_real"] + p["n_fake"] for p in per_shard)
    if written != n:
        raise RuntimeError(f"the gather jobs wrote {written} examples, the plan has {n}")
    summary = {
        "n_examples": n,
        "example_shape": list(c.example_shape),
        "channels": list(plan.channels),
        "config": asdict(cfg),
        "n_in": {"real": c.n_in[REAL], "fake": c.n_in[FAKE]},
        "class_weights": {"real": c.weights[REAL], "fake": c.weights[FAKE]},
        "scatter_buckets": plan.n_buckets,
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
        "normalisation": channel_stats(sample, plan.channels) if sample is not None else None,
    }
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=float))
    return summary


def build(brick_files, out_dir, channels, cfg: ShardConfig | dict | None = None, batches: int = 1,
          parts: int = 1, **overrides) -> dict:
    """Plan, scatter, gather and assemble in this process: the shards of the rules' jobs, with the brick files
    in ``batches`` scatter batches and ``parts`` gather parts (the bytes do not depend on either).

    ``out_dir`` should be new or empty (the rule writes it through an atomic directory)."""
    if cfg is None or isinstance(cfg, dict):
        cfg = ShardConfig.from_config({**(cfg or {}), **overrides})
    elif overrides:
        raise TypeError("pass either a ShardConfig or keyword overrides")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # through its JSON, as the rules' jobs read it
    plan = ShardPlan.from_json(make_plan(brick_files, channels, cfg).to_json())
    work = out_dir / ".shuffle"
    shutil.rmtree(work, ignore_errors=True)
    try:
        files = plan.census.files
        scatter_dirs = [work / f"scatter{k}" for k in range(batches)]
        for k, d in enumerate(scatter_dirs):
            scatter(plan, files[k * len(files) // batches : (k + 1) * len(files) // batches], d)
        part_dirs = [work / f"part{k}" for k in range(parts)]
        for k, d in enumerate(part_dirs):
            gather(plan, scatter_dirs, k, parts, d)
        return assemble(plan, part_dirs, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
