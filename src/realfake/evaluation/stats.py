"""Statistics of the verdict when examples cluster by brick.

A brick has one sky, one depth, one PSF and its own share of fakes, so the
test examples are not independent: a classifier that only recognises bricks
(or the depth of a brick holding many fakes) scores above chance on a perfect
injection, and a p-value or an interval that treats the examples as independent
is too small. Everything here therefore works brick by brick:

- the primary statistic is the brick-stratified Mann-Whitney AUC with van
  Elteren's (1960) weights: each brick's AUC (the share of its (fake, real)
  pairs in which the fake gets the higher P(fake), ties counting one half)
  weighted by n1 n0 / (n + 1), about a quarter of its examples. A score offset
  shared by a brick's examples cannot move it. Weights in proportion to the
  examples, not to the n1 n0 pairs (which grow with the square of a brick's
  size), make it the AUC of the survey's examples, brick by brick, and keep a
  few large bricks from deciding it alone; within matched pairs (``strata``)
  every pair weighs the same;
- its p-value comes from permuting the labels within bricks (each brick keeps
  its number of fakes): an exact conditional test of "within each brick, the
  scores carry no information on the labels", estimated by Monte Carlo;
- its interval comes from resampling whole bricks (the cluster bootstrap), with
  a t quantile on the bricks' *effective* number, (sum w)^2 / sum w^2 of the
  bricks' weights: bricks of unequal sizes carry less information than as many
  equal ones, and the interval covers at its nominal rate only if it says so
  (tests/test_stats.py: lognormal brick sizes, effects that vary between
  bricks and shrink with their size);
- the power is stated as the smallest AUC that the verdict's rule detects with
  80% probability, simulated on the run's own bricks (:mod:`realfake.evaluation.power`).

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
    """Per-brick sums: fakes n1, reals n0, the Mann-Whitney U of the brick (within-brick pairs) and its number of
    (fake, real) pairs, both times the brick's van Elteren weight 1 / (n + 1) (so that sum u / sum pairs weighs
    each brick's AUC by n1 n0 / (n + 1)), the permutation variance of that weighted U (exact, ties included), and
    the weights themselves."""
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
    w = 1.0 / (n + 1.0)
    return {"n1": n1, "n0": n0, "u": u * w, "pairs": n1 * n0 * w, "var_u": var_r1 * w**2, "ranks": r, "w": w,
            "n_pairs": n1 * n0}


def effective_bricks(pairs) -> float:
    """The bricks' effective number, (sum w)^2 / sum w^2 of their weights in the stratified AUC (``pairs``: the
    weighted pairs of :func:`per_brick`): as many as there are where the bricks weigh the same, fewer where some
    weigh more."""
    w = np.asarray(pairs, float)
    w = w[w > 0]
    return float(w.sum() ** 2 / (w**2).sum()) if len(w) else 0.0


def stratified_auc(y, score, groups) -> float:
    """Brick-stratified Mann-Whitney AUC: each brick's share of (fake, real) pairs ordered right (ties 1/2),
    weighted by van Elteren's n1 n0 / (n + 1)."""
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
           "pairs": float(s["n_pairs"].sum())}
    if pairs == 0:
        return {**out, "auc": float("nan"), "p_value": float("nan"), "null_sd": float("nan"), "method": "none"}
    auc = float(s["u"].sum() / pairs)
    null_sd = float(np.sqrt(s["var_u"].sum()) / pairs)
    z, p_normal = normal_test(s["u"].sum(), pairs, s["var_u"].sum())
    out.update(auc=auc, null_sd=null_sd, z=float(z), p_normal=float(p_normal))
    if n_perm <= 0 or len(y) * n_perm > max_work:
        return {**out, "p_value": out["p_normal"], "method": "normal approximation of the permutation distribution"}
    null = permutation_null(y, s["ranks"], codes, n_perm, seed, s["w"]) / pairs
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


def permutation_null(y, ranks, codes, n_perm: int, seed: int, weights=None) -> np.ndarray:
    """Stratified U of ``n_perm`` within-brick label permutations (the constant of each brick subtracted), each
    brick's times its weight (``weights``, per brick code; 1 where not given)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(codes, kind="stable")
    cs, rs = codes[order], ranks[order]
    n1 = np.bincount(codes, weights=y).astype(int)
    n = np.bincount(codes)
    start = np.r_[0, np.cumsum(n)[:-1]]
    # in brick-sorted order, the first n1_b positions of each brick's segment are "fakes" after a random shuffle
    fake_slot = (np.arange(len(cs)) - start[cs]) < n1[cs]
    w = np.ones(len(n)) if weights is None else np.asarray(weights, float)
    rs = rs * w[cs]
    const = float(np.sum(w * n1 * (n1 + 1) / 2))
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
    return {"auc": strat, "pooled_auc": pooled, "balanced_accuracy": bacc,
            "effective_bricks": effective_bricks(s["pairs"])}


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


def t_quantile(p: float, n_bricks: int, effective: float | None = None) -> float:
    """Student's t quantile on the degrees of freedom of ``n_bricks`` clusters: G - 1, or the bricks' effective
    number minus one where given (never more than G - 1, never fewer than 1)."""
    from scipy.stats import t

    df = n_bricks - 1 if effective is None else min(n_bricks - 1, effective - 1)
    return float(t.ppf(p, max(df, 1.0)))


def interval(estimate: float, draws, n_bricks: int, level: float = 0.95, bounds=None,
             effective: float | None = None, extra_var: float = 0.0) -> list[float]:
    """Two-sided interval: estimate -+ t x the bricks' bootstrap standard error (G bricks), t on G - 1 degrees of
    freedom or on the bricks' effective number (``effective``, :func:`effective_bricks`) minus one.

    With few bricks the bootstrap's percentile interval covers less than it says
    (0.88 for 95% at 8 bricks in tests/test_stats.py); the t quantile and the
    G / (G - 1) factor bring it to nominal (0.95 at 8, 16 and 40 bricks), and the effective number keeps it there
    where the bricks' sizes and effects differ. ``extra_var``: a variance the bricks' resampling does not see,
    added to theirs (the trainings': :func:`training_variance`). ``bounds``: the values the
    quantity can take (an AUC's [0, 1]); the interval is cut to them (an AUC of 0.998 +- 0.004 is 0.994-1)."""
    se = np.sqrt(brick_se(draws, n_bricks) ** 2 + extra_var)
    if not np.isfinite(se):
        return [float("nan"), float("nan")]
    q = t_quantile(0.5 + level / 2, n_bricks, effective)
    lo, hi = estimate - q * se, estimate + q * se
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return [float(lo), float(hi)]


def lower_limit(estimate: float, draws, n_bricks: int, level: float = 0.95, effective: float | None = None,
                extra_var: float = 0.0) -> float:
    """One-sided lower confidence limit, estimate - t x the bricks' bootstrap standard error (t and ``extra_var``
    as in :func:`interval`)."""
    se = np.sqrt(brick_se(draws, n_bricks) ** 2 + extra_var)
    return float(estimate - t_quantile(level, n_bricks, effective) * se) if np.isfinite(se) else float("nan")


def training_variance(replicate_aucs) -> float:
    """The variance the trainings add to the AUC of the replicates' averaged score: the variance of the
    replicates' AUCs between them over their number (one replicate: 0, and nothing is known of it). The bricks'
    bootstrap holds the trained networks fixed; another seed would have trained others."""
    a = np.asarray(replicate_aucs, float)
    a = a[np.isfinite(a)]
    return float(np.var(a, ddof=1) / len(a)) if len(a) > 1 else 0.0


def tv_lower_bound(auc) -> float:
    """A lower bound on the total-variation distance between the two classes' distributions from an AUC of any
    score, with no model of the scores: 1 - AUC >= (1 - TV)^2 / 2, so TV >= 1 - sqrt(2 (1 - AUC)) (0 below AUC
    0.5). Convex in the AUC, so it also bounds the mean over matched pairs' conditional distributions from the
    paired AUC."""
    a = np.clip(np.asarray(auc, float), 0.5, 1.0)
    return float(np.maximum(0.0, 1.0 - np.sqrt(2.0 * (1.0 - a))))


def tv_from_auc_binormal(auc):
    """Total-variation distance between two unit-variance normals whose AUC is ``auc`` (the binormal model):
    AUC = Phi(d / sqrt 2), TV = 2 Phi(d / 2) - 1."""
    d = np.sqrt(2.0) * norm.ppf(np.clip(auc, 0.5, 1 - 1e-12))
    return 2 * norm.cdf(d / 2) - 1


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


def p_text(p: float, test: dict | None) -> str:
    """"p = x", or "p <= x" where a Monte Carlo permutation test (``test``: the metrics' ``test``) gave the smallest
    value it can give, 1 / (permutations + 1): then the p-value is bounded by the number of permutations, not
    measured."""
    n = (test or {}).get("n_perm")
    if n and "Monte Carlo" in test.get("method", "") and p * (n + 1) <= 1 + 1e-9:
        return f"p <= {p:.2g}"
    return f"p = {p:.2g}"
