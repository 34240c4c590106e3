"""Population and appearance answered apart: matched pairs (census.match_pairs), the paired test, the population
answer (realfake.evaluation.population), on simulated catalogues and scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from realfake.shards.census import example_keys, match_pairs
from realfake.evaluation.evaluate import evaluate
from realfake.evaluation.scores import clustered
from realfake.evaluation.population import population

CALIPERS = {"mag_g": 0.05, "mag_r": 0.05, "mag_z": 0.05, "size": 0.1}
ECFG = {"bootstrap": 300, "permutations": 500, "seed": 1, "alpha": 0.05, "power": 0.8, "power_simulations": 30, "bins": {},
        "training_gate": {"last_epochs": 3, "min_loss_drop": 0.02, "min_train_auc": 0.6, "max_loss_change": 0.02,
                          "max_auc_gap": 0.15}}


def _catalogue(rng, n_bricks=12, n_real=120, n_fake=60, fake_shift=0.0):
    """Source tables of ``n_bricks`` bricks: reals and fakes of the same population, the fakes' magnitudes shifted
    by ``fake_shift`` (negative: brighter)."""
    rows = []
    for b in range(n_bricks):
        for label, n in ((0, n_real), (1, n_fake)):
            g = rng.uniform(21.5, 24.0, n) + (fake_shift if label else 0.0)
            rows.append(pd.DataFrame({"brick": f"{1200 + b:04d}p060", "rs": "rs0" if label else "", "label": label,
                                      "id": np.arange(n) + 10_000 * label, "mag_g": g, "mag_r": g - 0.4,
                                      "mag_z": g - 0.9 + rng.normal(0, 0.02, n), "size": rng.uniform(0.2, 1.2, n),
                                      "psfsize_g": rng.normal(1.3, 0.05, n)}))
    return pd.concat(rows, ignore_index=True)


def test_pairs_are_within_bricks_and_calipers_one_real_per_fake_and_found_again_from_the_pairs():
    rng = np.random.default_rng(3)
    src = _catalogue(rng)
    keys = example_keys(src, seed=1)
    pair = match_pairs(src, CALIPERS, keys)
    matched = src[pair > 0].assign(pair=pair[pair > 0])
    groups = matched.groupby("pair")
    assert (groups.size() == 2).all() and (groups["label"].sum() == 1).all() and (groups["brick"].nunique() == 1).all()
    for col, cal in CALIPERS.items():
        assert (groups[col].agg(lambda v: v.max() - v.min()) <= cal + 1e-12).all(), col
    assert 0.3 < (pair[src["label"] == 1] > 0).mean() <= 1
    # the same pairs from the matched rows alone, in any order (the evaluation finds them from the manifest)
    shuffled = matched.sample(frac=1, random_state=2)
    again = match_pairs(shuffled, CALIPERS, example_keys(shuffled, seed=1))
    assert (again == shuffled["pair"].to_numpy()).all()


def test_a_missing_value_matches_nothing():
    src = _catalogue(np.random.default_rng(4), n_bricks=1, n_real=5, n_fake=5)
    src.loc[src["label"] == 1, "size"] = np.nan
    assert (match_pairs(src, CALIPERS, example_keys(src, 1)) == 0).all()


def _paired_scores(rng, n_bricks, effect, spread):
    """Matched pairs in bricks of lognormal sizes whose scores carry a brick offset; the fake's shifted by
    ``effect`` varying between bricks by ``spread``."""
    rows = []
    for b in range(n_bricks):
        n = max(2, int(rng.lognormal(3, 0.7)))
        shift, e = rng.normal(0, 1), effect + rng.normal(0, spread)
        for i in range(n):
            pid = b * 10_000 + i + 1
            rows += [(f"b{b}", 0, pid, shift + rng.normal()), (f"b{b}", 1, pid, shift + e + rng.normal())]
    return pd.DataFrame(rows, columns=["brick", "label", "pair", "p_fake"])


def test_the_paired_test_keeps_its_level_and_finds_an_effect():
    rejections = 0
    for seed in range(60):
        d = _paired_scores(np.random.default_rng(seed), 10, 0.0, 0.0)
        c = clustered(d["label"], d["p_fake"], d["brick"], 200, 200, seed, strata=d["pair"])
        rejections += c["p_value"] < 0.05
        assert c["bricks"] == 10 and c["test"]["pairs_matched"] == len(d) // 2
    assert rejections <= 8  # 60 nulls at alpha 0.05: 3 expected; 8 or more has probability < 0.02
    d = _paired_scores(np.random.default_rng(99), 10, 0.5, 0.1)
    c = clustered(d["label"], d["p_fake"], d["brick"], 300, 300, 1, strata=d["pair"])
    assert c["p_value"] < 0.01 and c["ci95"]["auc"][0] > 0.5
    assert "within matched pairs" in c["test"]["method"]


def test_evaluate_answers_appearance_on_pairs_and_states_the_population_apart():
    rng = np.random.default_rng(5)
    d = _paired_scores(rng, 8, 0.0, 0.0)
    d["p_fake"] = 1 / (1 + np.exp(-d["p_fake"]))
    src = _catalogue(rng, fake_shift=-0.5)
    pop = population(src, ECFG, folds=4, pairs=len(d) // 2)
    m = evaluate(d, ECFG, population=pop)
    assert m["matched"] and m["verdict_class"] != "distinguishable"
    assert pop["differs"] and pop["carried_by"][0] in ("mag_g", "mag_r", "mag_z")
    assert pop["common_support"]["pairs"] == len(d) // 2
    assert "matched pairs" in m["verdict"] and "Population:" in m["verdict"] and "another population" in m["verdict"]


def test_the_population_of_a_faithful_injection_does_not_differ():
    pop = population(_catalogue(np.random.default_rng(6)), ECFG, folds=4)
    assert not pop["differs"] and pop["p_value"] > 0.01


@pytest.mark.parametrize("pairs", [None, [1, 1, 2]])
def test_incomplete_pairs_fall_back_to_bricks(pairs):
    from realfake.evaluation.scores import matched_pairs

    d = pd.DataFrame({"label": [0, 1, 0], "p_fake": [0.1, 0.9, 0.5], "brick": "a"})
    if pairs is not None:
        d["pair"] = pairs
    assert matched_pairs(d) is None


def test_a_log_quantity_matches_on_ratios():
    from realfake.shards.census import matched_values

    src = pd.DataFrame({"size": [0.2, 0.22, 1.0, 1.1, 0.0], "label": [0, 1, 0, 1, 1], "brick": "b", "rs": "",
                        "id": range(5)})
    assert np.allclose(matched_values(src, "log_size")[:4], np.log10(src["size"][:4])) and np.isnan(
        matched_values(src, "log_size")[4])
    # 10% apart at both sizes: a 0.05-dex caliper pairs both, a 0.05-arcsec one only the small
    assert (match_pairs(src, {"log_size": 0.05}, example_keys(src, 1)) > 0).sum() == 4
    assert (match_pairs(src, {"size": 0.05}, example_keys(src, 1)) > 0).sum() == 2


def test_no_pair_anywhere_is_a_clear_error(brick_files, tmp_path):
    from realfake.cutouts.brickfile import DEFAULT_CHANNELS
    from realfake.shards.build import build

    with pytest.raises(ValueError, match=r"no fake has a real galaxy of its brick within the calipers of shards.match"):
        build(brick_files, tmp_path, DEFAULT_CHANNELS, balance="matched", match={"mag_g": 1e-6}, split_by="example")


def test_image_statistics_are_tested_within_pairs_and_named_where_they_differ():
    from realfake.evaluation.diagnostics import differs_statement, tested_within

    rng = np.random.default_rng(8)
    d = _paired_scores(rng, 10, 0.0, 0.0)
    stats = pd.DataFrame({"concentration": 0.36 - 0.05 * d["label"] + rng.normal(0, 0.03, len(d)),
                          "asymmetry": rng.normal(0.2, 0.05, len(d)), "noise_chi": rng.normal(1, 0.02, len(d)),
                          "neighbours": rng.uniform(0, 0.01, len(d))}, index=d.index).join(d[["label"]])
    tested = tested_within(stats, d)
    assert tested["concentration"]["within"] == "pairs" and tested["concentration"]["differs"]
    assert tested["concentration"]["auc"] < 0.3 and not tested["asymmetry"]["differs"]
    line = differs_statement(tested)
    assert "concentration (fakes 0.3" in line and "asymmetry" not in line


def test_an_image_statistic_that_finds_the_difference_within_pairs_makes_the_appearance_distinguishable():
    from realfake.evaluation.diagnostics import tested_within

    rng = np.random.default_rng(9)
    d = _paired_scores(rng, 10, 0.0, 0.0)  # a network that sees nothing
    d["p_fake"] = 1 / (1 + np.exp(-d["p_fake"]))
    stats = pd.DataFrame({"concentration": 0.36 - 0.05 * d["label"] + rng.normal(0, 0.03, len(d)),
                          "asymmetry": rng.normal(0.2, 0.05, len(d)), "noise_chi": rng.normal(1, 0.02, len(d)),
                          "neighbours": rng.uniform(0, 0.01, len(d))}, index=d.index).join(d[["label"]])
    m = evaluate(d, ECFG, image_statistics=tested_within(stats, d))
    assert m["verdict_class"] == "distinguishable" and m["image_statistics"]["concentration"]["found"]
    assert "concentration" in m["verdict"] and m["p_holm"] >= m["p_value"]
    # the same statistics on a null: nothing found, and the network's p is Holm-corrected with them
    stats["concentration"] = rng.normal(0.36, 0.03, len(d))
    m = evaluate(d, ECFG, image_statistics=tested_within(stats, d))
    assert m["verdict_class"] != "distinguishable" and not any(v["found"] for v in m["image_statistics"].values())


def test_a_statistic_found_beside_a_network_that_finds_the_difference_is_named_too():
    from realfake.evaluation.diagnostics import tested_within

    rng = np.random.default_rng(10)
    d = _paired_scores(rng, 10, 0.8, 0.1)  # a network that sees the difference
    d["p_fake"] = 1 / (1 + np.exp(-d["p_fake"]))
    stats = pd.DataFrame({"concentration": 0.36 - 0.05 * d["label"] + rng.normal(0, 0.03, len(d)),
                          "asymmetry": rng.normal(0.2, 0.05, len(d)), "noise_chi": rng.normal(1, 0.02, len(d)),
                          "neighbours": rng.uniform(0, 0.01, len(d))}, index=d.index).join(d[["label"]])
    m = evaluate(d, ECFG, image_statistics=tested_within(stats, d))
    assert m["verdict_class"] == "distinguishable" and "within matched pairs reject" in m["verdict"]
    assert "What differs in the pixels" in m["verdict"] and "concentration (fakes" in m["verdict"]
