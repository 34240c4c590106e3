"""Per-brick cutout files to shuffled train/test shards.

All real and fake examples of the selected bricks are shuffled together with
one seeded permutation, split (test fraction from the config) and written as
``xtrain_<N>.npy`` (shard_size, S, S, C) float32 and ``ytrain_<N>.npy`` int8,
``xtest_<N>``/``ytest_<N>`` likewise; the last shard of a split may be short.

Only the small source tables are held in memory; each shard is gathered from
the brick files and written before the next one is started. A manifest names
the brick, rs, id and label of every example of every shard, so anything in a
figure can be traced back to the sky.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .cutouts import read_sources

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


def plan(brick_files, test_fraction: float, shard_size: int, seed: int) -> pd.DataFrame:
    """The manifest: one row per example with its split, shard, position and origin."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"shards.test_fraction must be in (0, 1), not {test_fraction}")
    tables = []
    for k, path in enumerate(sorted(map(str, brick_files))):
        t = read_sources(path)
        t["file"], t["row"] = path, np.arange(len(t))
        tables.append(t)
    allsrc = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if len(allsrc) == 0:
        raise ValueError("no cutouts in any brick file: nothing to shard")
    order = np.random.default_rng(seed).permutation(len(allsrc))
    m = allsrc.iloc[order].reset_index(drop=True)
    n_test = int(round(len(m) * test_fraction))
    m["split"] = np.where(np.arange(len(m)) < n_test, "test", "train")
    pos = np.where(m["split"] == "test", np.arange(len(m)), np.arange(len(m)) - n_test)
    m["shard"], m["index"] = pos // shard_size, pos % shard_size
    return m


def _gather(rows: pd.DataFrame) -> np.ndarray:
    """Read the cutouts of ``rows`` (in that order), one sorted read per brick file."""
    import h5py

    out = None
    for path, grp in rows.groupby("file", sort=True):
        with h5py.File(path, "r") as f:
            d = f["cutouts"]
            if out is None:
                out = np.empty((len(rows),) + d.shape[1:], dtype=np.float32)
            order = np.argsort(grp["row"].to_numpy())
            idx = grp["row"].to_numpy()[order]
            out[grp["pos"].to_numpy()[order]] = d[idx]
    return out


def write_shards(manifest: pd.DataFrame, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = manifest.groupby(["split", "shard"], sort=True)
    for i, ((split, shard), rows) in enumerate(shards, 1):
        rows = rows.assign(pos=rows["index"].to_numpy())
        x = _gather(rows)
        y = rows.sort_values("index")["label"].to_numpy(np.int8)
        for name, arr in ((f"x{split}_{shard}.npy", x), (f"y{split}_{shard}.npy", y)):
            with atomic_path(out_dir / name) as tmp:
                np.save(tmp, arr, allow_pickle=False)
        log.info("shard %s_%d written (%d examples; %d/%d)", split, shard, len(rows), i, shards.ngroups)


def channel_stats(out_dir: str | Path, channels, max_shards: int = 8) -> dict:
    """Per-channel median and robust scale (1.4826 x MAD) on training shards only."""
    out_dir = Path(out_dir)
    files = sorted(out_dir.glob("xtrain_*.npy"), key=lambda p: int(p.stem.split("_")[1]))[:max_shards]
    x = np.concatenate([np.load(f, mmap_mode="r") for f in files])
    stats = {}
    for c, name in enumerate(channels):
        v = x[..., c].ravel()
        v = v[np.isfinite(v)]
        med = float(np.median(v))
        mad = float(np.median(np.abs(v - med))) * 1.4826
        stats[name] = {"median": med, "scale": mad if mad > 0 else float(np.std(v) or 1.0)}
    return stats


def build(brick_files, out_dir, channels, shard_size=512, test_fraction=0.2, seed=1) -> dict:
    """Plan, write the shards, the manifest, the statistics and a summary; return the summary."""
    out_dir = Path(out_dir)
    manifest = plan(brick_files, test_fraction, shard_size, seed)
    write_shards(manifest, out_dir)
    with atomic_path(out_dir / "manifest.csv") as tmp:
        manifest.drop(columns=["file", "row"]).to_csv(tmp, index=False)
    counts = manifest.groupby(["split", "shard", "label"]).size().unstack(fill_value=0)
    summary = {
        "n_examples": int(len(manifest)),
        "shard_size": shard_size,
        "test_fraction": test_fraction,
        "seed": seed,
        "channels": list(channels),
        "splits": {
            s: {
                "n_shards": int(manifest.loc[manifest.split == s, "shard"].nunique()),
                "n_real": int(((manifest.split == s) & (manifest.label == 0)).sum()),
                "n_fake": int(((manifest.split == s) & (manifest.label == 1)).sum()),
            }
            for s in SPLITS
        },
        "per_shard": [
            {"split": s, "shard": int(k), "n_real": int(r.get(0, 0)), "n_fake": int(r.get(1, 0))}
            for (s, k), r in counts.iterrows()
        ],
        "normalisation": channel_stats(out_dir, channels),
    }
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return summary


def shard_files(shard_dir: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(x, y) file pairs of a split, in shard order."""
    shard_dir = Path(shard_dir)
    xs = sorted(shard_dir.glob(f"x{split}_*.npy"), key=lambda p: int(p.stem.split("_")[1]))
    return [(x, shard_dir / ("y" + x.name[1:])) for x in xs]
