"""Statistics of the verdict, checked against cases with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from realfake.evaluate import evaluate, roc_auc


def test_auc_known_values():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    assert abs(roc_auc(y, rng.random(4000)) - 0.5) < 0.03


ECFG = {"bootstrap": 300, "permutations": 499, "seed": 1, "alpha": 0.05, "power": 0.8,
        "bins": {"mag_g": [20.5, 21.5, 22.5, 23.5, 24.5]},
        "training_gate": {"last_epochs": 3, "min_loss_drop": 0.02, "min_train_auc": 0.6, "max_loss_change": 0.02,
                          "max_auc_gap": 0.15}}


def _pred(y, p, n_bricks=12, rng=None):
    """Predictions of examples spread over bricks (in turn), with magnitudes."""
    n = len(y)
    return pd.DataFrame({"label": y, "p_fake": p, "brick": [f"b{k % n_bricks:02d}" for k in range(n)],
                         "fold": [k % n_bricks % 3 for k in range(n)], "mag_g": np.linspace(20.5, 24.4, n)})


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


def test_chance_classifier_trained_to_capacity_gives_a_bound_not_a_claim_of_sameness():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 1200)
    m = evaluate(_pred(y, rng.random(1200)), ECFG, {0: GOOD, 1: GOOD, 2: GOOD}, epochs=20, folds={"k": 3})
    assert m["verdict_class"] == "no_difference_detected", m["verdict_reasons"]
    assert m["p_value"] > 0.05 and m["ci95"]["auc"][0] < 0.5 < m["ci95"]["auc"][1]
    assert 0.5 < m["power"]["min_detectable_auc"] < 0.6
    assert "would have found a difference of AUC >=" in m["verdict"] and "indistinguishable" not in m["verdict"]
    assert "the same" not in m["verdict"].replace("cannot be read", "")
    assert len(m["by_mag_g"]) == 4 and {r["fold"] for r in m["by_fold"]} == {0, 1, 2}


@pytest.mark.parametrize("hist, reason", [(FLAT, "did not learn"), (MEMORISED, "memorised"), (None, "history")])
def test_no_difference_from_a_network_not_trained_to_capacity_is_inconclusive(hist, reason):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 1200)
    m = evaluate(_pred(y, rng.random(1200)), ECFG, None if hist is None else {0: hist}, epochs=20)
    assert m["verdict_class"] == "inconclusive" and reason in m["verdict"], m["verdict"]
    if hist is not None:
        assert not m["training"]["passed"]


def test_good_classifier_is_detected_with_tv_limit():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 600)
    p = np.clip(y * 0.6 + rng.random(600) * 0.4, 0, 1)
    m = evaluate(_pred(y, p), ECFG, {0: FLAT}, epochs=20)
    assert m["verdict_class"] == "distinguishable" and m["p_value"] < 0.01 and m["auc"] > 0.95
    assert m["tv_lower_limit95"] > 0.8
    assert "not trained to capacity" in m["verdict"]  # found all the same; the true difference may be larger


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

    from realfake.brickfile import DEFAULT_CHANNELS
    from realfake.evaluate import predict
    from realfake.testing import mock_cutout_file
    from realfake.shards import build

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
    from realfake.verdict import p_text

    monte_carlo = {"n_perm": 2000, "method": "labels permuted within bricks (Monte Carlo)"}
    assert p_text(1 / 2001, monte_carlo) == "p <= 0.0005"  # none of 2,000 permutations reached the observed AUC
    assert p_text(2 / 2001, monte_carlo) == "p = 0.001"
    normal = {"n_perm": 2000, "method": "normal approximation of the permutation distribution"}
    assert p_text(1 / 2001, normal) == "p = 0.0005"
    assert p_text(0.3, None) == "p = 0.3"
