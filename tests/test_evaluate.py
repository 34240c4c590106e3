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
    m = evaluate(_pred(y, rng.random(600)), n_boot=200, seed=1, mag_edges=[20.5, 22.5, 24.5])
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
