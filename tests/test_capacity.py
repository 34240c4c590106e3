"""The capacity check: defects planted on a run's own real galaxies, paired and tested as the verdict tests its fakes
(real brick files of the mock release; the tests of the verdict's use of it are in test_evaluate.py)."""

import numpy as np
import pandas as pd

from realfake import FAKE, REAL
from realfake.evaluation.capacity import bounds, capacity, planted_statistics, statement
from realfake.evaluation.diagnostics import STATISTICS
from realfake.evaluation.stats import holm

CALIPERS = {"mag_r": 3.0}  # wide: the mock bricks of the tests hold a few real galaxies each
GRID = {"psf": [1.0], "offset": [1.0]}


def test_planted_statistics_on_a_real_brick_file(brick_files):
    t = pd.concat([planted_statistics(f, GRID, plantings=2, seed=3, calipers=CALIPERS) for f in brick_files],
                  ignore_index=True)
    assert set(t["kind"]) == {"none", "psf", "offset"} and set(t["planting"]) == {0, 1}
    assert set(STATISTICS) <= set(t.columns)
    for _, g in t.groupby(["planting", "kind"]):
        # every row in a pair of one real and one perturbed galaxy of the brick, the same pairs in every scenario
        sizes = g.groupby(["brick", "pair"])["label"].agg(["size", "sum"])
        assert (sizes["size"] == 2).all() and (sizes["sum"] == FAKE).all()
        assert len(g) == len(t[(t["planting"] == g["planting"].iloc[0]) & (t["kind"] == "none")])
    p0 = t[t["planting"] == 0].set_index(["kind", "brick", "id"])
    none, psf = p0.loc["none"], p0.loc["psf"].loc[p0.loc["none"].index]
    real = none["label"] == REAL
    # the unperturbed half is the same stamp in every scenario (psf leaves it alone), the other half changed
    assert np.allclose(psf.loc[real, "second_moment"], none.loc[real, "second_moment"])
    assert psf.loc[~real, "second_moment"].mean() > none.loc[~real, "second_moment"].mean() + 0.1
    # another planting draws other halves
    a = t[(t["planting"] == 0) & (t["kind"] == "none")].set_index(["brick", "id"])["label"]
    b = t[(t["planting"] == 1) & (t["kind"] == "none")].set_index(["brick", "id"])["label"]
    common = a.index.intersection(b.index)
    assert (a[common] != b[common]).any()


def table(effect: dict, n_pairs=200, n_bricks=10, plantings=3, seed=0) -> pd.DataFrame:
    """Planted statistics of known effects: (kind, size) -> shift of flux_ratio of the fake half (in its noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(plantings):
        for (kind, size), shift in effect.items():
            pair = np.repeat(np.arange(n_pairs), 2)
            label = np.tile([REAL, FAKE], n_pairs)
            d = pd.DataFrame({"planting": k, "kind": kind, "size": size, "brick": [f"b{p % n_bricks}" for p in pair],
                              "id": np.arange(2 * n_pairs), "label": label, "pair": pair + 1})
            for name in STATISTICS:
                d[name] = rng.normal(0, 1, len(d)) + (shift * label if name == "flux_ratio" else 0)
            rows.append(d)
    return pd.concat(rows, ignore_index=True)


def test_capacity_finds_what_was_planted_and_not_the_null():
    t = table({("none", 0.0): 0.0, ("flux", 0.05): 0.0, ("flux", 0.1): 0.8, ("flux", 0.3): 1.5, ("offset", 0.5): 0.0})
    r = capacity(t, 0.05)
    sc = {(s["kind"], s["size"]): s for s in r["scenarios"]}
    assert sc[("flux", 0.1)]["found"] and sc[("flux", 0.1)]["found_in"] == 3
    assert sc[("flux", 0.1)]["statistic"] == "flux_ratio"
    assert not sc[("none", 0.0)]["found"] and not sc[("flux", 0.05)]["found"] and not sc[("offset", 0.5)]["found"]
    b = bounds(r)
    assert b["flux"]["found"]["size"] == 0.1 and b["flux"]["missed"]["size"] == 0.05
    assert b["offset"]["found"] is None
    assert r["statement"].startswith("This run found fluxes 10% too high (3 of 3 plantings, by the flux ratio)")
    assert "did not find fluxes 5% too high" in r["statement"] and "offsets: none found, so none is bounded" in \
        r["statement"]


def test_capacity_tests_as_many_pairs_as_the_run_at_most():
    t = table({("flux", 0.1): 0.3}, n_pairs=400)
    assert capacity(t, 0.05)["pairs"] == 400
    assert capacity(t, 0.05, n_pairs=100)["pairs"] == 100


def test_counting_the_network_as_not_rejecting_is_conservative():
    """Holm's adjusted p-values never fall when one p-value rises: what the statistics find with the network's p
    set to 1 (the capacity check) they find with any p the network could have had (the verdict)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0, 0.2, 8) ** 2
        with_network = holm(np.r_[rng.uniform(0, 1), p])[1:]
        assert np.all(holm(np.r_[1.0, p])[1:] >= with_network - 1e-15)


def test_statement_without_any_finding():
    t = table({("psf", 0.05): 0.0})
    assert statement(capacity(t, 0.05)["scenarios"]).startswith("This run found none of the planted")


def test_survey_scale_bounds_the_bricks_and_the_reals_planted(brick_files):
    from realfake.evaluation.capacity import brick_planted

    names = [f"{ra:04d}p{dec:03d}" for ra in range(0, 3600, 7) for dec in range(0, 300, 60)]
    share = np.mean([brick_planted(b, 0.25, 1) for b in names])
    assert 0.2 < share < 0.3 and all(brick_planted(b, 1.0, 1) for b in names[:50])
    assert [brick_planted(b, 0.25, 1) for b in names[:50]] == [brick_planted(b, 0.25, 1) for b in names[:50]]
    t = planted_statistics(brick_files[1], GRID, plantings=1, seed=3, calipers=CALIPERS, max_reals=4)
    assert t.groupby("kind").size().max() <= 4


def test_a_run_with_nothing_to_plant_still_draws_its_figure(tmp_path):
    from realfake.evaluation.capacity import KEYS, figure

    r = capacity(pd.DataFrame(columns=KEYS + list(STATISTICS)), 0.05)
    figure(r, tmp_path / "capacity.png")
    assert (tmp_path / "capacity.png").read_bytes()[:4] == b"\x89PNG"
