"""Statistics of the verdict, checked against cases with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from realfake.evaluation.evaluate import evaluate
from realfake.evaluation.scores import roc_auc


def test_auc_known_values():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    assert abs(roc_auc(y, rng.random(4000)) - 0.5) < 0.03


ECFG = {"bootstrap": 300, "permutations": 499, "seed": 1, "alpha": 0.05, "power": 0.8, "power_simulations": 30,
        "bins": {"mag_g": [20.5, 21.5, 22.5, 23.5, 24.5]},
        "training_gate": {"last_epochs": 3, "min_loss_drop": 0.02, "min_train_auc": 0.6, "max_loss_change": 0.02,
                          "max_auc_gap": 0.15}}


def _pred(y, p, n_bricks=12, rng=None):
    """Predictions of examples spread over bricks (in turn), with magnitudes."""
    n = len(y)
    return pd.DataFrame({"label": y, "p_fake": p, "brick": [f"b{k % n_bricks:02d}" for k in range(n)],
                         "fold": [k % n_bricks % 3 for k in range(n)], "mag_g": np.linspace(20.5, 24.4, n)})


def _paired(p, n_bricks=12):
    """Predictions of matched pairs (a real, then its fake) spread over bricks (in turn), with magnitudes."""
    n = len(p) // 2
    pair = np.repeat(np.arange(1, n + 1), 2)
    brick = pair % n_bricks
    return pd.DataFrame({"label": np.tile([0, 1], n), "p_fake": p[: 2 * n], "pair": pair,
                         "brick": [f"b{b:02d}" for b in brick], "fold": brick % 3,
                         "mag_g": np.repeat(np.linspace(20.5, 24.4, n), 2)})


def history(loss, val_loss, auc, val_auc):
    """A training log as Keras' CSVLogger writes it."""
    return pd.DataFrame({"epoch": range(len(loss)), "loss": loss, "val_loss": val_loss, "auc": auc, "val_auc": val_auc})


# learned (loss far below ln 2), converged (early stopping after a best epoch 5), generalises (small gap)
GOOD = history([0.69, 0.65, 0.6, 0.58, 0.57, 0.565, 0.564, 0.563], [0.69, 0.66, 0.63, 0.62, 0.61, 0.612, 0.613, 0.615],
               [0.52, 0.6, 0.7, 0.73, 0.75, 0.76, 0.76, 0.76], [0.5, 0.58, 0.66, 0.68, 0.7, 0.69, 0.69, 0.69])
# nothing learned: loss at ln 2, AUC 0.5
FLAT = history([0.6932] * 8, [0.6931] * 8, [0.5] * 8, [0.5] * 8)
# memorised bricks: training loss falls, validation loss rises from the first epoch
MEMORISED = history([0.69, 0.6, 0.5, 0.4, 0.3, 0.2], [0.69, 0.7, 0.72, 0.75, 0.8, 0.9], [0.55, 0.7, 0.8, 0.85, 0.9, 0.95],
                    [0.5, 0.5, 0.49, 0.5, 0.51, 0.5])


def planted(found: dict, plantings: int = 3, null_found: int = 0) -> dict:
    """A capacity check's result: kind -> {size: plantings that found it}, and the null row."""
    from realfake.evaluation.capacity import result

    rows = [{"planting": k, "kind": "none", "size": 0.0, "pairs": 300, "bricks": 12, "found": k < null_found,
             "statistic": "noise_chi", "p_holm": 0.5, "auc": 0.5} for k in range(plantings)]
    for kind, sizes in found.items():
        for size, n in sizes.items():
            rows += [{"planting": k, "kind": kind, "size": size, "pairs": 300, "bricks": 12, "found": k < n,
                      "statistic": "second_moment", "p_holm": 1e-4 if k < n else 0.3, "auc": 0.6}
                     for k in range(plantings)]
    return result(pd.DataFrame(rows), 0.05)


FOUND = planted({"psf": {0.05: 1, 0.15: 3, 0.3: 3}, "flux": {0.1: 3}, "offset": {0.5: 0, 1.0: 0}})


@pytest.mark.parametrize("hist", [GOOD, FLAT], ids=["trained", "at ln 2"])
def test_chance_classifier_with_planted_defects_found_gives_a_bound_in_physical_units(hist):
    """Two identical populations: a network at ln 2 may have learned nothing or had nothing to learn; what the run
    finds is shown by the planted defects, and the verdict is a bound in their units, whatever the loss says."""
    rng = np.random.default_rng(1)
    m = evaluate(_paired(rng.random(1200)), ECFG, {0: hist, 1: hist, 2: hist}, epochs=20, folds={"k": 3},
                 capacity=FOUND)
    assert m["verdict_class"] == "no_difference_detected", m["verdict_reasons"]
    assert m["p_value"] > 0.05 and m["ci95"]["auc"][0] < 0.5 < m["ci95"]["auc"][1]
    assert 0.5 < m["power"]["min_detectable_auc"] < 0.65
    v = m["verdict"]
    assert "found a PSF 15% too wide (3 of 3 plantings" in v and "fluxes 10% too high" in v
    assert "did not find a PSF 5% too wide (1 of 3)" in v and "offsets: none found, so none is bounded" in v
    assert "in 80% of simulated runs" in v and "indistinguishable" not in v
    assert ("training diagnostics: 3 of 3 folds did not learn" in v.lower()) == (hist is FLAT)
    assert "the same" not in v.replace("cannot be read", "").replace("the same brick", "")  # no claim of sameness
    assert len(m["by_mag_g"]) == 4 and {r["fold"] for r in m["by_fold"]} == {0, 1, 2}


@pytest.mark.parametrize("capacity, reason", [
    (None, "no capacity check was run"),
    (planted({"psf": {0.05: 0, 0.15: 2}, "flux": {0.1: 0}}), "found none of the defects planted"),
    (planted({"psf": {0.15: 3}}, null_found=3), "where nothing was planted"),
], ids=["no check", "nothing found", "null found"])
def test_no_difference_without_planted_defects_found_is_inconclusive(capacity, reason):
    rng = np.random.default_rng(1)
    m = evaluate(_paired(rng.random(1200)), ECFG, {0: GOOD}, epochs=20, capacity=capacity)
    assert m["verdict_class"] == "inconclusive" and reason in m["verdict"], m["verdict"]


def test_planted_defects_found_by_the_statistics_bound_nothing_without_matched_pairs():
    """Without pairs the image statistics do not join the verdict's family: what they find is not the run's reach."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 1200)
    m = evaluate(_pred(y, rng.random(1200)), ECFG, {0: GOOD}, epochs=20, capacity=FOUND)
    assert m["verdict_class"] == "inconclusive" and "without matched pairs" in m["verdict"], m["verdict"]


def test_a_run_too_small_to_detect_anything_says_so_not_auc_1():
    rng = np.random.default_rng(1)
    m = evaluate(_paired(rng.random(40), n_bricks=2), ECFG, {0: GOOD}, epochs=20, capacity=FOUND)
    assert not np.isfinite(m["power"]["min_detectable_auc"])
    assert m["verdict_class"] == "inconclusive" and "too small to detect any difference" in m["verdict"]
    assert ">= 1.000" not in m["verdict"] and "would have found" not in m["verdict"]


def test_a_catalogue_difference_with_an_untrained_network_is_never_no_difference():
    """The fakes fainter than the reals: the catalogue classifier finds it, a network at chance does not. The
    verdict may not call that 'no difference'."""
    rng = np.random.default_rng(6)
    pred = _paired(rng.random(1200))
    catalogue = np.clip(0.5 + 0.12 * (pred["label"] - 0.5) + rng.normal(0, 0.2, 1200), 0, 1)
    m = evaluate(pred, ECFG, {0: FLAT}, epochs=20, baseline=pd.Series(catalogue), capacity=FOUND)
    assert m["baseline"]["p_value"] < 0.05
    assert m["verdict_class"] == "inconclusive" and "catalogue quantities alone separates" in m["verdict"]


def test_good_classifier_is_detected_with_tv_limit():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 600)
    p = np.clip(y * 0.6 + rng.random(600) * 0.4, 0, 1)
    m = evaluate(_pred(y, p), ECFG, {0: FLAT}, epochs=20)
    assert m["verdict_class"] == "distinguishable" and m["p_value"] < 0.01 and m["auc"] > 0.95
    assert m["tv_lower_limit95"] > 0.8 and m["tv_lower_limit95_auc"] > 0.75
    assert "training diagnostics: 1 of 1 folds did not learn" in m["verdict"].lower()  # reported, found all the same


def test_worse_than_chance_is_inconclusive():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 600)
    p = np.clip(0.6 - 0.2 * y + rng.normal(0, 0.2, 600), 0, 1)  # anti-correlated with the truth
    m = evaluate(_pred(y, p), ECFG, {0: GOOD}, epochs=20)
    assert m["ci95"]["auc"][1] < 0.5 and m["verdict_class"] == "inconclusive"
    assert "below 0.5" in m["verdict"]


def test_bricks_of_one_class_and_brick_offsets_do_not_fool_the_verdict():
    """A network that learned bricks: bricks holding only fakes score high, bricks with many reals low. Pooled,
    the AUC is far above 0.5; within bricks there is nothing, and the verdict must say no difference."""
    rng = np.random.default_rng(5)
    rows = []
    for b in range(16):
        share = 1.0 if b < 3 else rng.uniform(0.2, 0.8)  # three bricks of fakes only
        n = 80
        y = (rng.random(n) < share).astype(int)
        offset = 2.0 * (share - 0.5)
        rows.append(pd.DataFrame({"label": y, "p_fake": 1 / (1 + np.exp(-(offset + rng.normal(0, 0.5, n)))),
                                  "brick": f"b{b:02d}", "fold": b % 4, "mag_g": rng.uniform(20.5, 24.4, n)}))
    pred = pd.concat(rows, ignore_index=True)
    assert roc_auc(pred["label"], pred["p_fake"]) > 0.65
    m = evaluate(pred, ECFG, {k: GOOD for k in range(4)}, epochs=20)
    assert m["verdict_class"] != "distinguishable" and m["p_value"] > 0.05, m["verdict"]
    assert m["bricks_with_both_classes"] == 13
    assert m["naive"]["mann_whitney_p"] < 1e-6  # what an independent-examples test would have claimed


def test_verdict_names_only_bins_that_survive_holm():
    rng = np.random.default_rng(3)
    n = 3000
    y = rng.integers(0, 2, n)
    mag = rng.uniform(20.5, 24.5, n)
    # informative brighter than g = 22.5, a coin flip fainter
    p = np.where(mag < 22.5, np.clip(0.25 + 0.5 * y + rng.normal(0, 0.15, n), 0, 1), rng.random(n))
    pred = _pred(y, p).assign(mag_g=mag)
    m = evaluate(pred, ECFG, {0: GOOD}, epochs=20)
    sig = [b["significant"] for b in m["by_mag_g"]]
    assert sig == [True, True, False, False] and all(b["p_holm"] >= b["p_value"] for b in m["by_mag_g"])
    assert "Separable brighter than g = 22.5" in m["verdict"] and "no difference detected fainter" in m["verdict"]


def test_predictions_line_up_with_the_manifest_over_several_test_shards(tmp_path):
    """Each prediction belongs to the manifest row it is written to, however many test shards there are."""
    import keras

    from realfake.cutouts.brickfile import DEFAULT_CHANNELS
    from realfake.evaluation.evaluate import predict
    from realfake.testing import mock_cutout_file
    from realfake.shards.build import build

    files = [tmp_path / f"{b}.h5" for b in ("1210p060", "1212p060")]
    for k, f in enumerate(files):
        mock_cutout_file(f, f.stem, 30, 30, size=8, seed=k)
    build(files, tmp_path / "shards", DEFAULT_CHANNELS, split_by="example", size=7, seed=1, test_fraction=0.5)
    assert len(list((tmp_path / "shards").glob("xtest_*.npy"))) > 2
    # a "network" whose P(fake) is a function of one pixel of its input: it names the example it saw
    x = keras.Input((8, 8, 6))
    s = keras.layers.Lambda(lambda t: keras.ops.sigmoid(t[:, :1, 0, 0]))(x)
    model = keras.Model(x, keras.layers.Concatenate()([1 - s, s]))
    pred = predict(model, tmp_path / "shards", tmp_path / "shards" / "manifest.csv", batch_size=4)
    pixel = [np.load(tmp_path / "shards" / f"xtest_{r.shard}.npy")[r.index, 0, 0, 0] for r in pred.itertuples()]
    assert np.allclose(pred["p_fake"], 1 / (1 + np.exp(-np.array(pixel))), atol=1e-6)


def test_a_permutation_p_value_at_its_floor_is_said_to_be_a_bound():
    from realfake.evaluation.stats import p_text

    monte_carlo = {"n_perm": 2000, "method": "labels permuted within bricks (Monte Carlo)"}
    assert p_text(1 / 2001, monte_carlo) == "p <= 0.0005"  # none of 2,000 permutations reached the observed AUC
    assert p_text(2 / 2001, monte_carlo) == "p = 0.001"
    normal = {"n_perm": 2000, "method": "normal approximation of the permutation distribution"}
    assert p_text(1 / 2001, normal) == "p = 0.0005"
    assert p_text(0.3, None) == "p = 0.3"


def test_the_verdict_at_a_glance_is_at_most_ten_lines(tmp_path):
    """What make run prints last: the answer, its number, the bound or what found it, where the rest is."""
    import json

    from realfake.cli import main
    from realfake.evaluation.verdict import GLANCE_WIDTH, at_a_glance

    rng = np.random.default_rng(1)
    null = evaluate(_paired(rng.random(1200)), ECFG, {0: FLAT}, epochs=20, capacity=FOUND)
    y = rng.integers(0, 2, 600)
    found = evaluate(_pred(y, np.clip(y * 0.6 + rng.random(600) * 0.4, 0, 1)), ECFG, {0: GOOD}, epochs=20)
    small = evaluate(_paired(rng.random(40), n_bricks=2), ECFG, {0: GOOD}, epochs=20, capacity=FOUND)
    for m, head in ((null, "NO DIFFERENCE DETECTED (appearance; 600 matched pairs in 12 bricks)"),
                    (found, "DISTINGUISHABLE (fakes against reals; 600 examples in 12 bricks)"),
                    (small, "INCONCLUSIVE")):
        lines = at_a_glance(m)
        assert lines[0].startswith(head) and len(lines) <= 10 and max(map(len, lines)) <= GLANCE_WIDTH, lines
        assert lines[-1].startswith("Full verdict: results/evaluation/metrics.json")
    assert "bound: This run found a PSF 15% too wide" in " ".join(at_a_glance(null))
    assert "total-variation distance >=" in " ".join(at_a_glance(found))
    assert "too small to detect any difference" in small["verdict"] and "  why: " in at_a_glance(small)[2]
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(null, default=float))
    assert main(["verdict", str(path), "--control", "null-test"]) == 0
    assert main(["verdict", str(path), "--control", "positive-control"]) == 1
