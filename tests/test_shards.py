"""Shards: names, shapes, split, determinism and traceability."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd

from realfake.cutouts import DEFAULT_CHANNELS
from realfake.shards import build, shard_files


def test_shards_named_shaped_and_traceable(brick_files, tmp_path):
    summary = build(brick_files, tmp_path, DEFAULT_CHANNELS, shard_size=8, test_fraction=0.2, seed=3)
    n = summary["n_examples"]
    train, test = shard_files(tmp_path, "train"), shard_files(tmp_path, "test")
    assert train[0][0].name == "xtrain_0.npy" and test[0][1].name == "ytest_0.npy"
    sizes = {s: sum(len(np.load(y)) for _, y in shard_files(tmp_path, s)) for s in ("train", "test")}
    assert sizes["train"] + sizes["test"] == n
    assert sizes["test"] == round(0.2 * n)
    x0 = np.load(train[0][0])
    assert len(train) > 2 and x0.shape == (8, 64, 64, 6) and x0.dtype == np.float32
    last = np.load(train[-1][0])
    assert 1 <= len(last) <= 8
    # every example can be traced back to its brick file and row
    man = pd.read_csv(tmp_path / "manifest.csv", dtype={"brick": str, "rs": str})
    assert len(man) == n and set(man["label"]) == {0, 1}
    rows = man[(man["split"] == "train") & (man["shard"] == 0)].sort_values("index")
    y0 = np.load(train[0][1])
    assert (rows["label"].to_numpy() == y0).all()
    files = {f.stem: f for f in brick_files}
    with h5py.File(files[rows.iloc[7]["brick"]], "r") as f:
        src = f["sources"][()]
        row = np.flatnonzero((src["id"] == rows.iloc[7]["id"]) & (src["rs"].astype(str) == (rows.iloc[7]["rs"] if isinstance(rows.iloc[7]["rs"], str) else "")) & (src["label"] == rows.iloc[7]["label"]))
        assert len(row) == 1
        assert np.array_equal(f["cutouts"][row[0]], x0[7])
    assert set(summary["normalisation"]) == set(DEFAULT_CHANNELS)


def test_shards_deterministic_whatever_the_input_order(brick_files, tmp_path):
    build(brick_files, tmp_path / "a", DEFAULT_CHANNELS, shard_size=5, seed=9)
    build(list(reversed(brick_files)), tmp_path / "b", DEFAULT_CHANNELS, shard_size=5, seed=9)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
