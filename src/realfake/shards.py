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
run as independent jobs: the plan (realfake.shardplan, from the source tables
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
import mmap
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from . import FAKE, REAL
from .atomic import atomic_path
from .catalogs import CONDITIONS
from .census import labelled_sources
from .shardplan import ShardConfig, ShardPlan, make_plan, split_sizes
from .shardwriter import ShardWriter, channel_stats, manifest_columns

log = logging.getLogger(__name__)

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
MANIFEST_COLUMNS = manifest_columns(META_DTYPE)

# --------------------------------------------------------------------------- scatter


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


# A scatter job's output: its examples' pixels and manifest rows grouped by bucket, and where each bucket starts
# and the digest of the plan it followed
SCATTER_PIXELS, SCATTER_META, SCATTER_INDEX, SCATTER_PLAN = "pixels.f4", "meta.bin", "index.npy", "plan.sha256"


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
        keep, keys, bucket, _ = plan.assign(src)
        metas.append(_meta(src, keys, plan.file_index(path), plan.census.weights)[keep])
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
                        # os.pwrite: a full disk raises ENOSPC, not a bare short write
                        _pwrite_all(fx, np.ascontiguousarray(x[j], dtype="<f4"), int(cursor[bb]) * example_bytes)
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


def _pwrite_all(f, arr: np.ndarray, offset: int) -> None:
    view = memoryview(arr).cast("B")
    while len(view):
        n = os.pwrite(f.fileno(), view, offset)
        view, offset = view[n:], offset + n


# --------------------------------------------------------------------------- gather


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


def bucket_counts(outputs) -> np.ndarray:
    """The kept examples of every bucket, summed over the scatter jobs."""
    return np.sum([np.diff(o.offsets) for o in outputs], axis=0, dtype=np.int64)


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


# A gather job's output besides its shards
PART_MANIFEST, PART_SHARDS, PART_SAMPLE = "manifest.part.csv", "shards.json", "stats_sample.npy"


def gather(plan: ShardPlan, scatter_dirs, part: int, parts: int, out_dir) -> list:
    """Pass 2, for gather job ``part`` of ``parts``: the shards that start in its buckets' key range, with their
    manifest rows (``manifest.part.csv``), class counts (``shards.json``) and, for the job holding it, the
    normalisation sample; one bucket in memory at a time. Returns the shards' class counts."""
    outputs = [ScatterOutput(d, plan) for d in scatter_dirs]
    counts = bucket_counts(outputs) if outputs else np.zeros(plan.n_buckets, np.int64)
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
