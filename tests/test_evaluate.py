"""Statistics of the verdict, checked against cases with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from realfake.evaluate import evaluate, roc_auc


def test_auc_known_values():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    assert abs(roc_auc(y, rng.random(4000)) - 0.5) < 0.03


def _pred(y, p):
    return pd.DataFrame({"label": y, "p_fake": p, "mag_g": np.linspace(20.5, 24.4, len(y))})


def test_chance_classifier_is_not_rejected():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 600)
    m = evaluate(_pred(y, rng.random(600)), n_boot=200, seed=1, bins={"mag_g": [20.5, 22.5, 24.5]})
    assert m["chance"]["p_value"] > 0.05
    assert m["ci95"]["auc"][0] < 0.5 < m["ci95"]["auc"][1]
    assert "no better than chance" in m["verdict"]
    assert len(m["by_mag_g"]) == 2


def test_good_classifier_is_detected_with_tv_bound():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 600)
    p = np.clip(y * 0.6 + rng.random(600) * 0.4, 0, 1)
    m = evaluate(_pred(y, p), n_boot=200, seed=1)
    assert m["chance"]["p_value"] < 1e-10 and m["auc"] > 0.95
    assert m["tv_lower_bound"] > 0.8
    assert "distinguishable" in m["verdict"]


def test_worse_than_chance_is_not_called_indistinguishable():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 600)
    p = np.clip(0.6 - 0.2 * y + rng.normal(0, 0.2, 600), 0, 1)  # anti-correlated with the truth
    m = evaluate(_pred(y, p), n_boot=200, seed=1)
    assert m["ci95"]["auc"][1] < 0.5
    assert "worse than chance" in m["verdict"] and "indistinguishable" not in m["verdict"]


def test_verdict_says_where_the_network_separates():
    rng = np.random.default_rng(3)
    n = 3000
    y = rng.integers(0, 2, n)
    mag = rng.uniform(20.5, 24.5, n)
    # informative brighter than g = 22.5, a coin flip fainter
    p = np.where(mag < 22.5, np.clip(0.25 + 0.5 * y + rng.normal(0, 0.15, n), 0, 1), rng.random(n))
    pred = pd.DataFrame({"label": y, "p_fake": p, "mag_g": mag})
    m = evaluate(pred, n_boot=200, seed=1, bins={"mag_g": [20.5, 21.5, 22.5, 23.5, 24.5]})
    lo = [b["auc_ci95"][0] for b in m["by_mag_g"]]
    assert lo[0] > 0.5 and lo[1] > 0.5 and lo[2] < 0.5 and lo[3] < 0.5
    assert "Separable brighter than g = 22.5" in m["verdict"] and "indistinguishable fainter" in m["verdict"]


def test_predictions_line_up_with_the_manifest_over_several_test_shards(tmp_path):
    """Each prediction belongs to the manifest row it is written to, however many test shards there are."""
    import keras

    from realfake.cutouts import DEFAULT_CHANNELS
    from realfake.evaluate import predict
    from realfake.mock import mock_cutout_file
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
