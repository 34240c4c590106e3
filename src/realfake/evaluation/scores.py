"""A classifier's scores tested as the verdict tests them: the AUC and its companions, within bricks or within
matched pairs (the permutation test, the brick bootstrap and their interval: realfake.evaluation.stats)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from realfake.evaluation import stats


def roc_auc(y, score) -> float:
    """Area under the ROC curve over all (fake, real) pairs (Mann-Whitney U with mid-ranks for ties)."""
    y = np.asarray(y).astype(bool)
    return stats.pooled_auc(y, score) if y.any() and not y.all() else float("nan")


def log_loss(y, p, eps=1e-7) -> float:
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def balanced_accuracy(y, pred) -> float:
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    rates = [np.mean(pred[y] == y[y]) if y.any() else np.nan, np.mean(pred[~y] == y[~y]) if (~y).any() else np.nan]
    return float(np.nanmean(rates))


def clustered(y, p, bricks, n_boot: int, n_perm: int, seed: int, alpha: float = 0.05, power: float = 0.8,
              pooled: bool = True, strata=None, replicates=None) -> dict:
    """The brick-aware statistics of scores ``p`` (P(fake)) of examples ``y`` grouped by ``bricks`` (the pooled
    AUC's interval only if ``pooled``). ``strata`` (matched pairs, nested in the bricks): the AUC is the share of
    pairs whose fake scores higher, its test permutes the labels within pairs; the interval still resamples
    bricks. ``replicates`` (replicates x examples): the scores of networks trained with other seeds, of which
    ``p`` is the mean; the variance between their AUCs enters the interval (stats.training_variance)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, float)
    test = stats.permutation_test(y, p, bricks if strata is None else strata, n_perm, seed)
    boot = stats.brick_bootstrap(y, p, bricks, n_boot, seed, pooled=pooled, strata=strata)
    if strata is not None:  # the bricks, not the pairs, are the independent units
        test["pairs_matched"] = test["bricks_with_both_classes"]
        by_brick = stats.per_brick(y, p, stats.brick_codes(bricks)[1])
        test["bricks"], test["bricks_with_both_classes"] = len(by_brick["n1"]), int((by_brick["pairs"] > 0).sum())
        test["method"] = test["method"].replace("within bricks", "within matched pairs")
    g, eff = test["bricks_with_both_classes"], boot["effective_bricks"]
    auc_pooled = roc_auc(y, p)
    pred = p >= 0.5
    bacc = balanced_accuracy(y, pred)
    n_bricks = test["bricks"]
    groups = bricks if strata is None else strata
    rep_auc = ([stats.permutation_test(y, r, groups, 0)["auc"] for r in np.asarray(replicates, float)]
               if replicates is not None else [])
    train_var = stats.training_variance(rep_auc)
    auc_lo = stats.lower_limit(test["auc"], boot["auc"], g, effective=eff, extra_var=train_var)
    out = {
        "n": int(len(y)), "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()), "bricks": n_bricks,
        "bricks_with_both_classes": g, "effective_bricks": eff,
        "auc": test["auc"],
        "auc_pooled": auc_pooled,
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": bacc,
        "log_loss": log_loss(y, p),
        "ci95": {"auc": stats.interval(test["auc"], boot["auc"], g, bounds=(0, 1), effective=eff, extra_var=train_var),
                 "auc_pooled": stats.interval(auc_pooled, boot["pooled_auc"], n_bricks, bounds=(0, 1)),
                 "balanced_accuracy": stats.interval(bacc, boot["balanced_accuracy"], n_bricks, bounds=(0, 1))},
        "p_value": test["p_value"],
        "test": {k: v for k, v in test.items() if k != "auc"},
        # TPR - FPR of any fixed classifier bounds the total-variation distance from below
        "tv_lower_limit95": max(0.0, stats.lower_limit(2 * bacc - 1, 2 * boot["balanced_accuracy"] - 1, n_bricks)),
        # and so does the AUC of any score, with no model of the scores (stats.tv_lower_bound)
        "tv_lower_limit95_auc": stats.tv_lower_bound(auc_lo),
    }
    if len(rep_auc):
        out["replicates"] = {"n": len(rep_auc), "auc": [float(a) for a in rep_auc],
                             "training_sd": float(np.sqrt(train_var * len(rep_auc))) if len(rep_auc) > 1 else None,
                             "training_variance_of_mean": train_var}
    out["power"] = {
        "alpha": alpha, "power": power, "null_sd": test["null_sd"], "training_variance": train_var,
        # one-sided 95% upper limit of the AUC: what a run without a detection excludes
        "auc_upper_limit95": float(2 * test["auc"] - auc_lo),
    }
    return out


def matched_pairs(pred: pd.DataFrame):
    """The matched pairs of the examples (the manifest's ``pair``, shards.balance: matched), or None where the
    examples are not all in complete pairs (another balance, or a manifest from before pairs were recorded)."""
    if "pair" not in pred:
        return None
    pair = pred["pair"].to_numpy()
    if not len(pair) or (pair <= 0).any():
        return None
    sizes = pd.Series(pair).map(pd.Series(pair).value_counts()).to_numpy()
    return pair if (sizes == 2).all() else None
