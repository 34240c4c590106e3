"""Shards: names, shapes, split, determinism and traceability."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from realfake.cutouts.brickfile import DEFAULT_CHANNELS
from realfake.shards.build import build
from realfake.shards.shardset import shard_files


def test_shards_named_shaped_and_traceable(brick_files, tmp_path):
    summary = build(brick_files, tmp_path, DEFAULT_CHANNELS, split_by="example", size=8, test_fraction=0.2, seed=3,
                    balance="brick")
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
    build(brick_files, tmp_path / "a", DEFAULT_CHANNELS, split_by="example", size=5, seed=9, balance="brick")
    build(list(reversed(brick_files)), tmp_path / "b", DEFAULT_CHANNELS, split_by="example", size=5, seed=9,
          balance="brick")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def _bytes(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_out_of_core_gives_the_same_bytes_whatever_the_memory_budget(brick_files, tmp_path):
    # a few MB of cutouts: a 3 MB budget forces several scatter buckets, 2 GB keeps one
    kw = dict(split_by="example", size=4, balance="brick")
    small = build(brick_files, tmp_path / "small", DEFAULT_CHANNELS, seed=4, memory_mb=3, **kw)
    large = build(list(reversed(brick_files)), tmp_path / "large", DEFAULT_CHANNELS, seed=4, **kw)
    assert small["scatter_buckets"] > 2 and large["scatter_buckets"] == 1
    assert _bytes(tmp_path / "small").keys() == _bytes(tmp_path / "large").keys()
    for name, content in _bytes(tmp_path / "small").items():
        if name != "summary.json":
            assert content == _bytes(tmp_path / "large")[name], name
    assert not (tmp_path / "small" / ".shuffle").exists()
    other = build(brick_files, tmp_path / "seed5", DEFAULT_CHANNELS, seed=5, **kw)
    assert other["n_examples"] == small["n_examples"]
    assert (tmp_path / "seed5" / "manifest.csv").read_bytes() != (tmp_path / "small" / "manifest.csv").read_bytes()


def test_per_shard_class_counts_and_validation_split(brick_files, tmp_path):
    s = build(brick_files, tmp_path, DEFAULT_CHANNELS, split_by="example", size=8, test_fraction=0.2,
              validation_fraction=0.1, seed=2, balance="brick")
    n = s["n_examples"]
    counts = {sp: sum(len(np.load(y)) for _, y in shard_files(tmp_path, sp)) for sp in ("train", "valid", "test")}
    assert counts == {"test": round(0.2 * n), "valid": round(0.1 * n), "train": n - round(0.2 * n) - round(0.1 * n)}
    for row in s["per_shard"]:
        y = np.load(tmp_path / f"y{row['split']}_{row['shard']}.npy")
        assert (row["n_real"], row["n_fake"]) == ((y == 0).sum(), (y == 1).sum())
    man = pd.read_csv(tmp_path / "manifest.csv")
    assert len(man) == n and man.groupby("split").size().to_dict() == counts
    # no example is in two splits
    assert not man.duplicated(["brick", "rs", "id", "label"]).any()


@pytest.fixture(scope="module")
def many_examples(tmp_path_factory):
    """Four brick files of random 16x16 cutouts: 1200 reals (g 20.5-24.5), 800 fakes (g 21-24)."""
    from realfake.testing import mock_cutout_file

    d = tmp_path_factory.mktemp("many")
    files = []
    for k, brick in enumerate(("1000p100", "1001p100", "1002p100", "1003p100")):
        mock_cutout_file(d / f"{brick}.h5", brick, 300, 200, size=16, seed=k)
        files.append(d / f"{brick}.h5")
    return files


def test_undersampling_balances_the_classes_exactly(many_examples, tmp_path):
    s = build(many_examples, tmp_path, DEFAULT_CHANNELS, split_by="example", size=64, seed=2, balance="undersample")
    y = np.concatenate([np.load(y) for sp in ("train", "test") for _, y in shard_files(tmp_path, sp)])
    assert s["n_in"] == {"real": 1200, "fake": 800}
    assert (y == 0).sum() == (y == 1).sum() == 800
    assert s["splits"]["test"]["n_real"] + s["splits"]["test"]["n_fake"] == 320


def test_weights_balance_the_classes(many_examples, tmp_path):
    build(many_examples, tmp_path, DEFAULT_CHANNELS, split_by="example", size=64, seed=2, balance="weights")
    y = np.concatenate([np.load(y) for _, y in shard_files(tmp_path, "train")])
    w = np.concatenate([np.load(tmp_path / ("w" + x.name[1:])) for x, _ in shard_files(tmp_path, "train")])
    assert len(w) == len(y) and len(set(w[y == 0])) == len(set(w[y == 1])) == 1
    # weighted, each class counts the same in the whole set (split sampling aside)
    assert w[y == 0][0] == pytest.approx(2000 / 2400) and w[y == 1][0] == pytest.approx(2000 / 1600)
    assert w[y == 0].sum() / w[y == 1].sum() == pytest.approx(1.0, abs=0.1)


def test_magnitude_matching_follows_the_fakes_histogram(many_examples, tmp_path):
    bins = np.arange(20.0, 25.01, 0.5)
    s = build(many_examples, tmp_path, DEFAULT_CHANNELS, split_by="example", size=64, seed=2, match_magnitude=True, match_bins=bins,
              balance="brick")
    man = pd.read_csv(tmp_path / "manifest.csv")
    real = man.loc[man.label == 0, "mag_g"]
    # the fakes span g 21-24: reals outside are dropped, inside kept with equal probability (binomial thinning)
    assert real.between(21.0, 24.0).all() and len(real) == s["splits"]["train"]["n_real"] + s["splits"]["test"]["n_real"]
    assert 800 * 0.6 < len(real) < 1200 * 0.75 * 1.2
    h_real = np.histogram(real, bins)[0] / len(real)
    h_fake = np.histogram(man.loc[man.label == 1, "mag_g"], bins)[0] / (man.label == 1).sum()
    assert np.abs(h_real - h_fake).max() < 0.06


@pytest.fixture(scope="module")
def ten_bricks(tmp_path_factory):
    """Ten brick files of random 8x8 cutouts, 20 to 65 examples each."""
    from realfake.testing import mock_cutout_file

    d = tmp_path_factory.mktemp("ten")
    files = [d / f"{1000 + k}p100.h5" for k in range(10)]
    for k, f in enumerate(files):
        mock_cutout_file(f, f.stem, 10 + 3 * k, 10 + 2 * k, size=8, seed=k)
    return files


@pytest.mark.parametrize("split", [dict(split_by="example", validation_fraction=0.1), dict(folds=3)],
                         ids=["split by example", "folds of whole bricks"])
@pytest.mark.parametrize("batches, parts", [(3, 2), (4, 7), (10, 60)])
def test_the_same_bytes_whatever_the_number_of_scatter_and_gather_jobs(ten_bricks, tmp_path, split, batches, parts):
    # 0.2 MB: about 27 examples a bucket, shards of 16 across bucket and job boundaries; 60 jobs leave some idle
    kw = dict(size=16, seed=4, memory_mb=0.2, **split)
    one = build(ten_bricks, tmp_path / "one", DEFAULT_CHANNELS, **kw, balance="brick")
    build(ten_bricks, tmp_path / "many", DEFAULT_CHANNELS, batches=batches, parts=parts, **kw, balance="brick")
    assert one["scatter_buckets"] > 6
    assert _bytes(tmp_path / "one") == _bytes(tmp_path / "many")


def test_jobs_refuse_a_plan_they_were_not_made_with(ten_bricks, tmp_path):
    from realfake.shards.plan import ShardConfig, make_plan
    from realfake.shards.build import assemble, gather, scatter

    cfg = ShardConfig(size=16, memory_mb=0.2, folds=2, balance="brick")
    plan = make_plan(ten_bricks[:5], DEFAULT_CHANNELS, cfg)
    with pytest.raises(ValueError, match=f"{ten_bricks[7]}: brick file not in the shard plan"):
        scatter(plan, ten_bricks[7:8], tmp_path / "s")
    scatter(plan, ten_bricks[:3], tmp_path / "s")
    with pytest.raises(ValueError, match="a scatter job is missing or out of date"):
        gather(plan, [tmp_path / "s"], 0, 2, tmp_path / "g")
    scatter(plan, ten_bricks[3:5], tmp_path / "s2")
    other = make_plan(ten_bricks, DEFAULT_CHANNELS, cfg)
    with pytest.raises(ValueError, match=f"{tmp_path / 's'}: scattered by another shard plan"):
        gather(other, [tmp_path / "s", tmp_path / "s2"], 0, 2, tmp_path / "g")
    gather(plan, [tmp_path / "s", tmp_path / "s2"], 0, 1, tmp_path / "g")
    with pytest.raises(ValueError, match=f"{tmp_path / 'g'}: gathered by another shard plan"):
        assemble(other, [tmp_path / "g"], tmp_path / "out")
    assert assemble(plan, [tmp_path / "g"], tmp_path / "out")["n_examples"] == plan.n_examples


def test_split_by_brick_puts_each_brick_in_one_split(ten_bricks, tmp_path):
    s = build(ten_bricks, tmp_path / "a", DEFAULT_CHANNELS, size=16, test_fraction=0.2, validation_fraction=0.1,
              memory_mb=1, seed=3, balance="brick")  # a tiny budget: several buckets per split
    man = pd.read_csv(tmp_path / "a" / "manifest.csv")
    assert man.groupby("brick")["split"].nunique().max() == 1  # no brick's sky in two splits
    assert {sp: sorted(g) for sp, g in man.groupby("split")["brick"].unique().items()} == \
        {sp: b for sp, b in s["bricks"].items() if b}
    n = len(man)
    frac = man["split"].value_counts() / n
    assert abs(frac["test"] - 0.2) < 0.08 and abs(frac["valid"] - 0.1) < 0.08  # as near as whole bricks allow
    assert s["scatter_buckets"] > 3
    # every split is shuffled within: bricks interleave in the training shards
    assert man[man.split == "train"]["brick"].iloc[:20].nunique() > 3
    # the same split and bytes whatever the order of the inputs and the memory budget; another seed, other bricks
    build(list(reversed(ten_bricks)), tmp_path / "b", DEFAULT_CHANNELS, size=16, test_fraction=0.2,
          validation_fraction=0.1, seed=3, balance="brick")
    assert pd.read_csv(tmp_path / "b" / "manifest.csv").equals(man)
    for x in (tmp_path / "a").glob("x*.npy"):
        assert x.read_bytes() == (tmp_path / "b" / x.name).read_bytes()
    other = build(ten_bricks, tmp_path / "c", DEFAULT_CHANNELS, size=16, test_fraction=0.2, seed=4, balance="brick")
    assert other["bricks"]["test"] != s["bricks"]["test"]


def test_folds_of_whole_bricks_balanced_within_each_brick(ten_bricks, tmp_path):
    from realfake.testing import mock_cutout_file

    # an eleventh brick holding fakes only: it must drop out, named
    lone = tmp_path / "1099p100.h5"
    mock_cutout_file(lone, lone.stem, 0, 25, size=8, seed=99)
    files = [*ten_bricks, lone]
    s = build(files, tmp_path / "a", DEFAULT_CHANNELS, size=16, folds=5, balance="brick", memory_mb=1, seed=3)
    man = pd.read_csv(tmp_path / "a" / "manifest.csv")
    assert s["groups"] == [f"fold{k}" for k in range(5)] and set(man["split"]) == set(s["groups"])
    assert man.groupby("brick")["split"].nunique().max() == 1  # each brick in one fold
    counts = man.groupby(["brick", "label"]).size().unstack()
    assert (counts[0] == counts[1]).all()  # as many reals as fakes in every brick: min(10 + 3k, 10 + 2k)
    assert sorted(counts[0]) == sorted(10 + 2 * k for k in range(10))
    assert s["one_class_bricks"] == {"1099p100": {"real": 0, "fake": 25}} and "1099p100" not in set(man["brick"])
    sizes = man["split"].value_counts()
    assert sizes.max() - sizes.min() <= 2 * (10 + 2 * 9)  # near-equal folds: at most one brick apart
    # the same bytes whatever the input order and memory budget
    build(list(reversed(files)), tmp_path / "b", DEFAULT_CHANNELS, size=16, folds=5, balance="brick", seed=3)
    assert pd.read_csv(tmp_path / "b" / "manifest.csv").equals(man)
    for x in (tmp_path / "a").glob("x*.npy"):
        assert x.read_bytes() == (tmp_path / "b" / x.name).read_bytes()
    with pytest.raises(ValueError, match=r"10 brick\(s\) hold examples of both classes: too few for 12 folds"):
        build(files, tmp_path / "c", DEFAULT_CHANNELS, size=16, folds=12, balance="brick")


def test_fold_views_test_every_brick_once_and_copy_no_pixel(ten_bricks, tmp_path):
    from realfake.evaluation.folds import make_view, roles

    build(ten_bricks, tmp_path / "shards", DEFAULT_CHANNELS, size=16, folds=4, balance="brick", seed=3)
    man = pd.read_csv(tmp_path / "shards" / "manifest.csv", dtype={"brick": str, "rs": str})
    tested = []
    for k in range(4):
        view = tmp_path / "views" / str(k)
        s = make_view(tmp_path / "shards", view, k)
        assert s["groups"] == roles([f"fold{j}" for j in range(4)], k)
        assert s["groups"]["test"] == [f"fold{k}"] and s["groups"]["valid"] == [f"fold{(k + 1) % 4}"]
        assert not set(s["bricks"]["test"]) & set(s["bricks"]["train"])
        assert not set(s["bricks"]["valid"]) & set(s["bricks"]["train"])
        vm = pd.read_csv(view / "manifest.csv", dtype={"brick": str, "rs": str})
        for row in vm.sample(5, random_state=k).itertuples():  # each row points at the pixels it names
            x = np.load(view / f"x{row.split}_{row.shard}.npy")[row.index]
            assert np.array_equal(x, np.load(tmp_path / "shards" / f"x{row.group}_{row.group_shard}.npy")[row.index])
        assert all(p.is_symlink() for p in view.glob("*.npy"))
        tested.append(vm[vm["split"] == "test"])
    tested = pd.concat(tested)
    assert len(tested) == len(man) and not tested.duplicated(["brick", "rs", "id", "label"]).any()
    assert roles(["fold0", "fold1"], 1) == {"test": ["fold1"], "valid": [], "train": ["fold0"]}


def test_too_few_bricks_to_split_by_brick_is_refused(brick_files, tmp_path):
    with pytest.raises(ValueError, match=r"2 brick\(s\) are too few to split by brick into test and validation and "
                                         r"training splits: .*split_by: example"):
        build(brick_files, tmp_path, DEFAULT_CHANNELS, test_fraction=0.2, validation_fraction=0.1, balance="brick")


def test_bad_shard_config_is_refused(brick_files, tmp_path):
    with pytest.raises(ValueError, match="test_fraction"):
        build(brick_files, tmp_path, DEFAULT_CHANNELS, split_by="example", test_fraction=0.7, validation_fraction=0.4,
              balance="brick")
    with pytest.raises(ValueError, match="memory_mb"):
        build(brick_files, tmp_path, DEFAULT_CHANNELS, split_by="example", size=512, memory_mb=64, balance="brick")


KILLABLE = """
import sys
from realfake.atomic import atomic_path
from realfake.cutouts.brickfile import DEFAULT_CHANNELS
from realfake.shards.build import build
with atomic_path(sys.argv[1], directory=True) as tmp:  # as the rule's script does
    build(sys.argv[3:], tmp, DEFAULT_CHANNELS, split_by="example", size=4, seed=6, memory_mb=float(sys.argv[2]),
          balance="brick")
"""


def test_killed_at_any_point_leaves_nothing_that_looks_complete_and_rerun_is_identical(brick_files, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-c", KILLABLE, str(tmp_path / "out"), "3", *map(str, brick_files)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    build_time = time.perf_counter() - t0
    reference = _bytes(tmp_path / "out")
    rng = np.random.default_rng(0)
    killed_mid_write = 0
    for fraction in rng.uniform(0, 1, 4):
        subprocess.run(["rm", "-rf", str(tmp_path / "out")], check=True)
        p = subprocess.Popen(cmd)
        while p.poll() is None and not any(tmp_path.glob(".out.*.tmp")):  # writing has started
            time.sleep(0.005)
        time.sleep(fraction * build_time / 3)  # a random point of the writing (imports are most of build_time)
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed_mid_write += p.returncode == -signal.SIGKILL and any(tmp_path.glob(".out.*.tmp"))
        # killed: no output folder at all; finished: the complete one
        if (tmp_path / "out").exists():
            assert _bytes(tmp_path / "out") == reference
        subprocess.run(cmd, check=True)
        assert _bytes(tmp_path / "out") == reference
    assert killed_mid_write, "no kill landed while the shards were being written"
    # the hidden temporaries of the killed runs were removed by the reruns
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_matched_pairs_go_into_the_shards_together_and_are_named_in_the_manifest(brick_files, tmp_path):
    from realfake.cutouts.brickfile import read_sources

    calipers = {"mag_g": 0.3, "mag_r": 0.3, "mag_z": 0.3, "size": 0.3}
    s = build(brick_files, tmp_path, DEFAULT_CHANNELS, size=8, seed=2, balance="matched", match=calipers, folds=2)
    man = pd.read_csv(tmp_path / "manifest.csv", dtype={"rs": str}, keep_default_na=False)
    assert len(man) == s["n_examples"] > 0 and (man["pair"] > 0).all()
    pairs = man.groupby("pair")
    assert (pairs.size() == 2).all() and (pairs["label"].sum() == 1).all()
    assert (pairs["brick"].nunique() == 1).all() and (pairs["split"].nunique() == 1).all()
    for col, cal in calipers.items():
        assert (pairs[col].agg(lambda v: v.max() - v.min()) <= cal + 1e-5).all(), col
    # fewer examples than the brick files hold: the fakes without a real of their catalogue values are left out
    assert len(man) < sum(len(read_sources(p)) for p in brick_files)
