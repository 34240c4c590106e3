"""Statistics of the verdict when examples cluster by brick.

A brick has one sky, one depth, one PSF and its own share of fakes, so the
test examples are not independent: a classifier that only recognises bricks
(or the depth of a brick holding many fakes) scores above chance on a perfect
injection, and a p-value or an interval that treats the examples as independent
is too small. Everything here therefore works brick by brick:

- the primary statistic is the brick-stratified Mann-Whitney AUC (van Elteren
  1960): the share of (fake, real) pairs *of the same brick* in which the fake
  gets the higher P(fake), ties counting one half. A score offset shared by a
  brick's examples cannot move it; with both classes undersampled to equal
  numbers in each brick it equals the pooled ROC AUC but for the few pairs
  that straddle two bricks;
- its p-value comes from permuting the labels within bricks (each brick keeps
  its number of fakes): an exact conditional test of "within each brick, the
  scores carry no information on the labels", estimated by Monte Carlo;
- its interval comes from resampling whole bricks (the cluster bootstrap);
- the power is stated as the smallest AUC that the run would detect with 80%
  probability at the test's level, from the permutation null's exact spread
  and the bootstrap spread (normal approximation, one-sided).

Everything is vectorised: the ranks are computed once (O(N log N)); the
bootstrap of the stratified AUC reweights per-brick sums.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

# Examples x permutations (or resamples) held in memory at once
CHUNK = 4_000_000
# Beyond this many examples x permutations the permutation distribution is taken in its normal approximation (its
# mean and variance are exact): at 10^6 examples its Monte Carlo estimate would cost minutes and say the same
PERMUTATION_WORK = 100_000_000
# Beyond this many examples x resamples the pooled AUC's bootstrap works on scores binned into POOLED_BINS quantile
# bins (pairs in one bin count one half: the AUC moves by less than the share of such pairs, ~1 / POOLED_BINS)
BOOTSTRAP_WORK = 100_000_000
POOLED_BINS = 2048


def brick_codes(groups) -> tuple[np.ndarray, np.ndarray]:
    """(names, code of each example): the bricks as 0..B-1, in sorted order of their names (by hashing: O(N))."""
    import pandas as pd

    groups = np.asarray(groups)
    if groups.dtype.kind not in "iu":
        groups = groups.astype(str)
    codes, names = pd.factorize(groups, sort=True)
    return np.asarray(names), codes.astype(np.int64)


def ranks_within(codes: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mid-ranks (1-based, ties averaged) of ``score`` within each group of ``codes``."""
    codes, score = np.asarray(codes), np.asarray(score, float)
    n = len(score)
    order = np.lexsort((score, codes))
    gs, ss = codes[order], score[order]
    group_start = np.r_[0, np.flatnonzero(gs[1:] != gs[:-1]) + 1]
    start_of = np.repeat(group_start, np.diff(np.r_[group_start, n]))
    pos = np.arange(n) - start_of + 1.0
    new_run = np.r_[True, (gs[1:] != gs[:-1]) | (ss[1:] != ss[:-1])]
    run = np.cumsum(new_run) - 1
    mid = np.bincount(run, pos) / np.bincount(run)
    ranks = np.empty(n)
    ranks[order] = mid[run]
    return ranks


def per_brick(y, score, codes, n_bricks: int | None = None) -> dict:
    """Per-brick sums: fakes n1, reals n0, Mann-Whitney U of the brick (within-brick pairs), and the permutation
    variance of its rank sum (exact, ties included)."""
    y = np.asarray(y).astype(bool)
    nb = int(codes.max()) + 1 if n_bricks is None else n_bricks
    r = ranks_within(codes, score)
    n = np.bincount(codes, minlength=nb).astype(float)
    n1 = np.bincount(codes, weights=y, minlength=nb)
    n0 = n - n1
    r1 = np.bincount(codes, weights=r * y, minlength=nb)
    u = r1 - n1 * (n1 + 1) / 2
    # the rank sum of n1 draws without replacement from the brick's n ranks: n1 n0 / (n - 1) times their variance
    mean_r = np.bincount(codes, weights=r, minlength=nb) / np.maximum(n, 1)
    ss = np.bincount(codes, weights=(r - mean_r[codes]) ** 2, minlength=nb)
    var_r1 = np.where(n > 1, n1 * n0 / np.maximum(n - 1, 1) * ss / np.maximum(n, 1), 0.0)
    return {"n1": n1, "n0": n0, "u": u, "pairs": n1 * n0, "var_u": var_r1, "ranks": r}


def stratified_auc(y, score, groups) -> float:
    """Brick-stratified Mann-Whitney AUC: the share of same-brick (fake, real) pairs ordered right (ties 1/2)."""
    _, codes = brick_codes(groups)
    s = per_brick(y, score, codes)
    pairs = s["pairs"].sum()
    return float(s["u"].sum() / pairs) if pairs else float("nan")


def pooled_auc(y, score) -> float:
    """ROC AUC over all (fake, real) pairs: Mann-Whitney U with mid-ranks, O(N log N)."""
    y = np.asarray(y).astype(bool)
    return stratified_auc(y, score, np.zeros(len(y), int))


def permutation_test(y, score, groups, n_perm: int = 2000, seed: int = 1,
                     max_work: int = PERMUTATION_WORK) -> dict:
    """One-sided test of "within each brick, P(fake) is unrelated to the label" on the stratified AUC.

    Labels are permuted within bricks (every brick keeps its number of fakes), so
    whatever a brick's examples share, and however the share of fakes differs
    between bricks, the test keeps its level. The p-value is the Monte Carlo
    estimate ``(1 + #{AUC_perm >= AUC}) / (1 + n_perm)``, valid at any ``n_perm``;
    beyond ``max_work`` examples x permutations (or with ``n_perm = 0``) the normal
    approximation of the same permutation distribution, whose mean and variance
    are known exactly, is used instead. Both are returned where both are computed.
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, float)
    _, codes = brick_codes(groups)
    s = per_brick(y, score, codes)
    pairs = s["pairs"].sum()
    out = {"n": int(len(y)), "bricks": int(len(s["n1"])), "bricks_with_both_classes": int((s["pairs"] > 0).sum()),
           "pairs": float(pairs)}
    if pairs == 0:
        return {**out, "auc": float("nan"), "p_value": float("nan"), "null_sd": float("nan"), "method": "none"}
    auc = float(s["u"].sum() / pairs)
    null_sd = float(np.sqrt(s["var_u"].sum()) / pairs)
    z, p_normal = normal_test(s["u"].sum(), pairs, s["var_u"].sum())
    out.update(auc=auc, null_sd=null_sd, z=float(z), p_normal=float(p_normal))
    if n_perm <= 0 or len(y) * n_perm > max_work:
        return {**out, "p_value": out["p_normal"], "method": "normal approximation of the permutation distribution"}
    null = permutation_null(y, s["ranks"], codes, n_perm, seed) / pairs
    # U of each permutation minus the same constant: compare rank sums; a tolerance absorbs float rounding
    exceed = int(np.count_nonzero(null >= auc - 1e-12))
    return {**out, "p_value": (1 + exceed) / (1 + n_perm), "n_perm": int(n_perm),
            "method": "labels permuted within bricks (Monte Carlo)"}


def normal_test(u, pairs, var_u):
    """(z, one-sided p) of the stratified U against the normal approximation of its within-brick permutation
    distribution, whose mean (pairs / 2) and variance (``var_u``) are exact; elementwise over arrays. z is 0 where
    the variance is 0 (every score tied); p is floored at 1e-300 (beyond, a double underflows to 0, and "p = 0" is
    no probability)."""
    u, pairs, var_u = (np.asarray(a, float) for a in (u, pairs, var_u))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(var_u > 0, (u - pairs / 2) / np.sqrt(np.where(var_u > 0, var_u, 1)), 0.0)
    return z, np.maximum(norm.sf(z), 1e-300)


def permutation_null(y, ranks, codes, n_perm: int, seed: int) -> np.ndarray:
    """Stratified U of ``n_perm`` within-brick label permutations (the constant of each brick subtracted)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(codes, kind="stable")
    cs, rs = codes[order], ranks[order]
    n1 = np.bincount(codes, weights=y).astype(int)
    n = np.bincount(codes)
    start = np.r_[0, np.cumsum(n)[:-1]]
    # in brick-sorted order, the first n1_b positions of each brick's segment are "fakes" after a random shuffle
    fake_slot = (np.arange(len(cs)) - start[cs]) < n1[cs]
    const = float(np.sum(n1 * (n1 + 1) / 2))
    out = np.empty(n_perm)
    step = max(1, CHUNK // max(1, len(cs)))
    for i in range(0, n_perm, step):
        k = min(step, n_perm - i)
        # adding twice the brick code keeps every key inside its brick's segment when sorted
        perm = np.argsort(rng.random((k, len(cs))) + 2.0 * cs, axis=1)
        out[i : i + k] = (rs[perm] * fake_slot).sum(axis=1) - const
    return out


def stratum_sums(y, score, codes, strata=None) -> dict:
    """:func:`per_brick`'s sums per brick (``codes``); with ``strata`` (matched pairs, nested in the bricks) the
    Mann-Whitney U and pairs counted within each stratum and summed per brick: the stratified AUC of the strata,
    resampled by brick."""
    nb = int(codes.max()) + 1
    s = per_brick(y, score, codes, nb)
    if strata is None:
        return s
    _, sc = brick_codes(strata)
    inner = per_brick(y, score, sc)
    brick_of = np.zeros(len(inner["u"]), np.int64)
    brick_of[sc] = codes
    return {**s, "u": np.bincount(brick_of, inner["u"], minlength=nb),
            "pairs": np.bincount(brick_of, inner["pairs"], minlength=nb)}


def brick_bootstrap(y, score, groups, n_boot: int = 1000, seed: int = 1, threshold: float = 0.5,
                    pooled: bool = True, strata=None) -> dict:
    """Resamples of whole bricks: draws of the stratified AUC (within ``strata`` nested in the bricks, where
    given: matched pairs), the pooled AUC (unless not ``pooled``) and the balanced accuracy.

    The stratified AUC and the balanced accuracy are sums over bricks, so a
    resample is a reweighting of per-brick sums (no sort); the pooled AUC is
    recomputed from the resampled examples.
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, float)
    _, codes = brick_codes(groups)
    nb = int(codes.max()) + 1
    s = stratum_sums(y, score, codes, strata)
    pred = score >= threshold
    tp = np.bincount(codes, weights=pred & y, minlength=nb)
    tn = np.bincount(codes, weights=~pred & ~y, minlength=nb)
    rng = np.random.default_rng(seed)
    w = rng.multinomial(nb, np.full(nb, 1.0 / nb), size=n_boot).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        strat = (w @ s["u"]) / (w @ s["pairs"])
        bacc = 0.5 * ((w @ tp) / (w @ s["n1"]) + (w @ tn) / (w @ s["n0"]))
    if not pooled:
        pooled = np.full(n_boot, np.nan)
    elif len(y) * n_boot > BOOTSTRAP_WORK:
        pooled = _binned_pooled_auc(y, score, codes, w)
    else:
        pooled = _reweighted_pooled_auc(y, score, codes, w)
    return {"auc": strat, "pooled_auc": pooled, "balanced_accuracy": bacc}


def _binned_pooled_auc(y, score, codes, w, n_bins: int = POOLED_BINS) -> np.ndarray:
    """The pooled AUC of each resample (brick multiplicities ``w``) from per-brick histograms of the scores in
    ``n_bins`` quantile bins: two (resamples x bricks) @ (bricks x bins) products, whatever the number of examples.
    Pairs within one bin count one half, as ties do."""
    edges = np.unique(np.quantile(score, np.linspace(0, 1, n_bins + 1)[1:-1]))
    k = len(edges) + 1
    b = np.searchsorted(edges, score, side="right")
    nb = w.shape[1]
    fake = np.bincount(codes * k + b, weights=y, minlength=nb * k).reshape(nb, k)
    real = np.bincount(codes * k + b, weights=~y, minlength=nb * k).reshape(nb, k)
    out = np.empty(len(w))
    step = max(1, CHUNK // k)
    for i in range(0, len(w), step):
        f, r = w[i : i + step] @ fake, w[i : i + step] @ real
        below = np.cumsum(r, axis=1) - r
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i : i + step] = (f * (below + r / 2)).sum(axis=1) / (f.sum(axis=1) * r.sum(axis=1))
    return out


def _reweighted_pooled_auc(y, score, codes, w) -> np.ndarray:
    """Pooled AUC of each resample, given as brick multiplicities ``w`` (resamples x bricks): one sort, then
    per resample cumulative sums of the weights over the tie runs of the sorted scores, O(N) each."""
    order = np.argsort(score, kind="stable")
    ss, ys, cs = score[order], y[order], codes[order]
    run_start = np.r_[0, np.flatnonzero(ss[1:] != ss[:-1]) + 1]
    out = np.empty(len(w))
    step = max(1, CHUNK // max(1, len(ss)))
    for i in range(0, len(w), step):
        we = w[i : i + step][:, cs]
        fake = np.add.reduceat(we * ys, run_start, axis=1)
        real = np.add.reduceat(we * ~ys, run_start, axis=1)
        below = np.cumsum(real, axis=1) - real
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i : i + step] = (fake * (below + real / 2)).sum(axis=1) / (fake.sum(axis=1) * real.sum(axis=1))
    return out


def brick_se(draws, n_bricks: int) -> float:
    """Standard error from cluster-bootstrap draws, with the small-sample factor G / (G - 1) on the variance
    (as for cluster-robust variances: Cameron & Miller 2015); NaN draws (a resample with one class) left out."""
    d = np.asarray(draws, float)
    d = d[np.isfinite(d)]
    if len(d) < 2 or n_bricks < 2:
        return float("nan")
    return float(np.std(d, ddof=1) * np.sqrt(n_bricks / (n_bricks - 1)))


def interval(estimate: float, draws, n_bricks: int, level: float = 0.95, bounds=None) -> list[float]:
    """Two-sided interval: estimate -+ t(G - 1) x the bricks' bootstrap standard error (G bricks).

    With few bricks the bootstrap's percentile interval covers less than it says
    (0.88 for 95% at 8 bricks in tests/test_stats.py); the t quantile and the
    G / (G - 1) factor bring it to nominal (0.95 at 8, 16 and 40 bricks). ``bounds``: the values the
    quantity can take (an AUC's [0, 1]); the interval is cut to them (an AUC of 0.998 +- 0.004 is 0.994-1)."""
    from scipy.stats import t

    se = brick_se(draws, n_bricks)
    if not np.isfinite(se):
        return [float("nan"), float("nan")]
    q = t.ppf(0.5 + level / 2, n_bricks - 1)
    lo, hi = estimate - q * se, estimate + q * se
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return [float(lo), float(hi)]


def lower_limit(estimate: float, draws, n_bricks: int, level: float = 0.95) -> float:
    """One-sided lower confidence limit, estimate - t(G - 1) x the bricks' bootstrap standard error."""
    from scipy.stats import t

    se = brick_se(draws, n_bricks)
    return float(estimate - t.ppf(level, n_bricks - 1) * se) if np.isfinite(se) else float("nan")


def tv_from_auc_binormal(auc):
    """Total-variation distance between two unit-variance normals whose AUC is ``auc`` (the binormal model):
    AUC = Phi(d / sqrt 2), TV = 2 Phi(d / 2) - 1."""
    d = np.sqrt(2.0) * norm.ppf(np.clip(auc, 0.5, 1 - 1e-12))
    return 2 * norm.cdf(d / 2) - 1


def min_detectable_auc(null_sd: float, alt_sd: float | None = None, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest stratified AUC the one-sided test at ``alpha`` detects with probability ``power``.

    Normal approximation: reject when AUC > 0.5 + z(1-alpha) null_sd; an AUC A is
    detected with probability ``power`` when A - z(power) alt_sd lies above that.
    ``null_sd`` is the permutation null's exact spread, ``alt_sd`` the spread under
    the alternative (the brick bootstrap's; it carries the bricks' heterogeneity).
    """
    alt_sd = null_sd if alt_sd is None or not np.isfinite(alt_sd) else max(alt_sd, null_sd)
    return float(min(1.0, 0.5 + norm.ppf(1 - alpha) * null_sd + norm.ppf(power) * alt_sd))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error controlled at any level); NaN stays NaN."""
    p = np.asarray(p_values, float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not len(ok):
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def naive_tests(y, score) -> dict:
    """What a test that treats the examples as independent says (for comparison only): the one-sided
    Mann-Whitney p-value of the pooled AUC and the binomial test of the accuracy against the majority class."""
    from scipy.stats import binomtest, mannwhitneyu

    y = np.asarray(y).astype(bool)
    score = np.asarray(score, float)
    mw = mannwhitneyu(score[y], score[~y], alternative="greater")
    k = int(np.sum((score >= 0.5) == y))
    base = max(y.mean(), 1 - y.mean())
    return {"mann_whitney_p": float(mw.pvalue),
            "binomial_p": float(binomtest(k, len(y), base, alternative="greater").pvalue)}


def paired_difference(y, score_a, score_b, groups, n_boot: int = 1000, seed: int = 1) -> dict:
    """Stratified AUC of ``score_a`` minus that of ``score_b`` on the same examples, with its brick-bootstrap
    interval (both reweighted by the same resamples of bricks)."""
    y = np.asarray(y).astype(bool)
    _, codes = brick_codes(groups)
    nb = int(codes.max()) + 1
    a, b = per_brick(y, score_a, codes, nb), per_brick(y, score_b, codes, nb)
    pairs = a["pairs"].sum()
    if not pairs:
        return {"difference": float("nan"), "ci95": [float("nan")] * 2}
    rng = np.random.default_rng(seed)
    w = rng.multinomial(nb, np.full(nb, 1.0 / nb), size=n_boot).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = (w @ (a["u"] - b["u"])) / (w @ a["pairs"])
    est = float((a["u"].sum() - b["u"].sum()) / pairs)
    return {"difference": est, "ci95": interval(est, draws, int((a["pairs"] > 0).sum()))}
