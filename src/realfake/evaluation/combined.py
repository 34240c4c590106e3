"""The image statistics combined: a classifier of all of them, cross-fitted, tested by permutations that refit it.

A statistic made for one defect (the second moment for a PSF too wide) finds that defect at a smaller size than the
network does on a few hundred pairs (docs/benchmarks.md, "What the verdict's classifiers see"), and a defect that
moves several statistics a little each is found by none of them alone. The classifier here weighs every statistic
of :data:`realfake.evaluation.diagnostics.STATISTICS` by what tells the fake of a matched pair from its real one: a
logistic regression on the pairs' differences of the statistics, with no intercept (conditional logistic regression,
the model of 1:1 matched pairs: what the two galaxies of a pair share cancels), ridge-penalised (:data:`RIDGE`). The
statistics are put on one scale by their median and interquartile range among the training examples and clipped at
:data:`CLIP` (a few stamps with a bright neighbour do not set the weights).

It is cross-fitted as the network is: each pair is scored by a classifier trained on the pairs of the other folds
(the network's folds of whole bricks where the examples carry them, else the bricks dealt into :data:`FOLDS`), and
its AUC is the share of pairs whose fake scores higher. **Its test refits the classifier under every permutation.**
Permuting the labels within pairs and keeping the cross-fitted scores is *not* a valid test here: every fold's
weights are learned from the other folds' labels, the folds' AUCs are correlated through them, and on reals against
reals (the default run's, 200 random halvings) that test's z has a standard deviation of 1.46, not 1, and rejects 18%
of the time at 0.05. Flipping the labels of whole pairs and refitting every fold's classifier to each flip draws from
the exact null distribution of the whole procedure (labels exchangeable within pairs): 12 of the same 200 at 0.05
(benchmarks/family_level.py). Flips of one pair's labels are sign flips of its difference, so the refits are one
batched Newton solve (:func:`fit_flipped`), a second or so for a thousand permutations of a few hundred pairs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NAME = "statistics_classifier"
DEFINITION = ("the image statistics combined: a logistic regression on the pairs' differences, trained on the "
              "other folds")
CLIP = 5.0  # robust z beyond which a statistic counts no more
FOLDS = 5  # folds where the examples carry none: bricks dealt into this many
RIDGE = 1.0  # L2 penalty on the weights (robust-z scale): sum of log losses + RIDGE / 2 |w|^2
NEWTON_STEPS = 25
CHUNK = 250  # permutations refitted at once (memory: CHUNK x pairs x statistics doubles)


def fold_codes(df: pd.DataFrame, k: int = FOLDS) -> np.ndarray:
    """The fold of each example: its ``fold`` where the examples carry two or more, else its brick's place among the
    sorted bricks modulo ``k``; with a single brick, its pair's place modulo ``k``."""
    if "fold" in df and df["fold"].nunique() >= 2:
        return pd.factorize(df["fold"], sort=True)[0]
    unit = df["brick"] if df["brick"].nunique() >= 2 else df["pair"]
    return pd.factorize(unit, sort=True)[0] % k


def robust_z(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """``x`` in robust z of the ``train`` rows (median, IQR / 1.349), clipped at :data:`CLIP`; missing values, and
    statistics the training rows lack, at 0."""
    z = np.zeros_like(x, dtype=float)
    for j in range(x.shape[1]):
        t = x[train, j]
        t = t[np.isfinite(t)]
        if len(t) < 2:
            continue
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        sd = (q3 - q1) / 1.349 or t.std() or 1.0
        z[:, j] = np.clip(np.nan_to_num((x[:, j] - med) / sd, nan=0.0), -CLIP, CLIP)
    return z


def fit_flipped(d: np.ndarray, flips: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """Weights (B, p) of the conditional logistic regression of the pairs' differences ``d`` (n, p), fake minus real,
    under each row of sign ``flips`` (B, n: -1 where a pair's labels are exchanged): minimising
    sum_i log(1 + exp(-f_i w.d_i)) + ridge / 2 |w|^2 by Newton's method, all rows at once (the loss is strictly
    convex; a step is halved until it lowers every row's loss)."""
    b, p = len(flips), d.shape[1]
    fd = flips[:, :, None] * d[None]  # (B, n, p)
    outer = np.einsum("ni,nj->nij", d, d)  # the Hessian's terms: flips square away
    w = np.zeros((b, p))

    def margins_and_loss(w):
        m = np.einsum("bnp,bp->bn", fd, w)
        return m, np.logaddexp(0, -m).sum(1) + ridge / 2 * (w**2).sum(1)

    m, current = margins_and_loss(w)
    for _ in range(NEWTON_STEPS):
        s = 1 / (1 + np.exp(-m))
        grad = np.einsum("bn,bnp->bp", s - 1, fd) + ridge * w
        hess = np.einsum("bn,nij->bij", s * (1 - s), outer) + ridge * np.eye(p)
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        scale = np.ones(b)
        for _ in range(30):
            m_new, new = margins_and_loss(w - scale[:, None] * step)
            worse = new > current + 1e-12
            if not worse.any():
                break
            scale[worse] /= 2
        else:  # (halvings exhausted: the margins of the step taken)
            m_new, new = margins_and_loss(w - scale[:, None] * step)
        w -= scale[:, None] * step
        m, current = m_new, new
        if np.abs(scale[:, None] * step).max() < 1e-8:
            break
    return w


def pair_rows(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in ``rows``) of the real and of the fake of every whole pair (``pair`` > 0, one of each label)."""
    r = pd.DataFrame({"pair": rows["pair"].to_numpy(), "label": rows["label"].to_numpy(int),
                      "i": np.arange(len(rows))})
    r = r[r["pair"] > 0]
    counts = r.groupby("pair")["label"].agg(["size", "sum"])
    whole = counts.index[(counts["size"] == 2) & (counts["sum"] == 1)]
    r = r[r["pair"].isin(whole)].sort_values(["pair", "label"])
    return r.loc[r["label"] == 0, "i"].to_numpy(), r.loc[r["label"] == 1, "i"].to_numpy()


def cross_fitted(x: np.ndarray, real: np.ndarray, fake: np.ndarray, fold: np.ndarray, flips: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every row of ``flips`` (B, pairs), the cross-fitted classifier's score difference (fake minus real) of
    every pair, each from the classifier fitted to the other folds' pairs under that row's flips (B, pairs); and, for
    the first row, every example's score and the mean weights over the folds. ``x``: examples x statistics;
    ``real``, ``fake``: each pair's rows of ``x``; ``fold``: each pair's fold."""
    diff = np.zeros(flips.shape, float)
    score = np.full(len(x), np.nan)
    weights = []
    for k in np.unique(fold):
        test, train = fold == k, fold != k
        if not train.any():
            continue
        examples = np.zeros(len(x), bool)
        examples[np.r_[real[train], fake[train]]] = True
        z = robust_z(x, examples)
        d = z[fake] - z[real]
        for lo in range(0, len(flips), CHUNK):
            w = fit_flipped(d[train], flips[lo:lo + CHUNK, train])
            diff[lo:lo + CHUNK, test] = flips[lo:lo + CHUNK, test] * (w @ d[test].T)
            if lo == 0:
                scored = np.r_[real[test], fake[test]]
                score[scored] = z[scored] @ w[0]
                weights.append(w[0])
    return diff, score, (np.mean(weights, 0) if weights else np.zeros(x.shape[1]))


def tested(stats: pd.DataFrame, rows: pd.DataFrame, n_perm: int = 1000, n_boot: int = 200,
           seed: int = 1) -> dict | None:
    """The classifier of the statistics ``stats`` (one column each: those of
    :data:`realfake.evaluation.diagnostics.STATISTICS` measured) tested as the verdict tests a statistic, on the matched
    pairs of ``rows`` (``label``, ``pair``, ``brick`` and, where present, ``fold``; the same index as ``stats``): its AUC
    within pairs, its brick-bootstrap interval (scores held fixed), and the one-sided p-value of ``n_perm`` flips of
    whole pairs with the classifier refitted to each (module docstring). None with fewer than 4 pairs in 2 folds."""
    from realfake.evaluation.scores import clustered

    rows = rows.loc[stats.index]
    real, fake = pair_rows(rows)
    fold = fold_codes(rows)[fake]
    if len(real) < 4 or len(np.unique(fold)) < 2:
        return None
    flips = np.vstack([np.ones(len(real)), np.random.default_rng(seed).choice([-1.0, 1.0], (n_perm, len(real)))])
    diff, score, weights = cross_fitted(stats.to_numpy(float), real, fake, fold, flips)
    auc = ((diff > 0).sum(1) + 0.5 * (diff == 0).sum(1)) / len(real)
    keep = np.r_[real, fake]
    sub = rows.iloc[keep]
    c = clustered(sub["label"].to_numpy(int), score[keep], sub["brick"].astype(str).to_numpy(), n_boot, 0, seed,
                  pooled=False, strata=sub["pair"].to_numpy())
    return {"auc": float(auc[0]), "ci95": c["ci95"]["auc"],
            "p_value": float((1 + np.count_nonzero(auc[1:] >= auc[0] - 1e-12)) / (1 + n_perm)),
            "within": "pairs", "definition": DEFINITION,
            "method": f"{n_perm} flips of whole pairs, the classifier refitted to each (one-sided)",
            "median_real": float(np.median(score[real])), "median_fake": float(np.median(score[fake])),
            "weights": {n: float(v) for n, v in zip(stats.columns, weights)}, "pairs": int(len(real))}


def leaning(weights: dict, n: int = 2) -> str:
    """The statistics the classifier weighs most, and the side the fakes lie on: "second moment +, concentration -"."""
    top = sorted(weights.items(), key=lambda kv: -abs(kv[1]))[:n]
    return ", ".join(f"{k.replace('_', ' ')} {'+' if v > 0 else '-'}" for k, v in top if v != 0)
