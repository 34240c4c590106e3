"""The power of the verdict's own rule, by simulation on this run's bricks and pairs.

The verdict says ``distinguishable`` when the network's test, Holm-corrected with the other tests of its family,
rejects at ``alpha`` *and* the AUC's interval lies above 0.5. No formula gives the power of that rule where the
bricks differ in size and in effect, so it is simulated on the run's own layout (which examples, in which
bricks and pairs): the scores of the reals are drawn N(0, 1), those of the fakes N(delta_b, 1), and the run's
own test, bootstrap and interval are applied, with the Holm factor at its worst (the network's p-value times
the family's size: Holm's adjusted p-value can be no larger). The effect per brick follows three scenarios:

- ``same``: one delta in every brick;
- ``varying``: delta_b = delta x a lognormal factor of mean 1 and log-sd 0.7, drawn anew in every simulated run;
- ``shrinking``: delta_b proportional to 1 / sqrt(n_b): large bricks show less (a defect that shows most where
  the sky is sparse).

On matched pairs a simulated run is exact and cheap: each pair's fake scores higher with probability
Phi(delta_b / sqrt 2), so a brick's count is binomial, and the test's permutation distribution a binomial of all
pairs at 1/2. The effect a run states is the AUC of its estimand (each brick's AUC, Phi(delta_b / sqrt 2), weighted as the
statistic weighs the bricks), and the minimum detectable AUC is the smallest at which the rule says
``distinguishable`` in at least ``power`` of the simulated runs in *every* scenario. Where no AUC below
:data:`MAX_AUC` reaches it (two bricks: the interval's t quantile on one degree of freedom is 12.7), there is
none: the run is too small to detect anything, and the verdict says so.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from realfake.evaluation import stats

SCENARIOS = ("same", "varying", "shrinking")
VARYING_LOG_SD = 0.7
MAX_AUC = 0.99
# Beyond this many test examples a simulated run is drawn brick by brick, not score by score: each brick's weighted
# U statistic from its normal approximation (its mean the brick's AUC times its pairs, its variance the permutation
# variance of untied scores), then the same test, bootstrap and interval on the bricks' sums. Exact enough where
# bricks hold many examples, and O(bricks) a run instead of O(examples log examples)
EXACT_MAX = 20_000


def brick_effects(scenario: str, delta: float, sizes: np.ndarray, rng) -> np.ndarray:
    """Each brick's shift of the fakes' scores in a simulated run (module docstring)."""
    if scenario == "same":
        return np.full(len(sizes), delta)
    if scenario == "varying":
        return delta * np.exp(rng.normal(0.0, VARYING_LOG_SD, len(sizes)) - VARYING_LOG_SD**2 / 2)
    if scenario == "shrinking":
        f = 1.0 / np.sqrt(np.maximum(sizes, 1))
        return delta * f / np.average(f, weights=sizes)
    raise ValueError(f"power scenario must be one of {SCENARIOS}, not {scenario!r}")


class Layout:
    """A run's test examples as the statistics see them: labels, bricks and (matched pairs) strata."""

    def __init__(self, y, bricks, strata=None):
        self.y = np.asarray(y).astype(bool)
        self.bricks = np.asarray(bricks)
        self.strata = strata
        _, self.codes = stats.brick_codes(self.bricks)
        s = stats.stratum_sums(self.y, np.zeros(len(self.y)), self.codes, strata)
        self.weights = s["pairs"]  # each brick's weight in the statistic
        self.sizes = np.bincount(self.codes).astype(float)
        # per brick, the permutation variance of its weighted U for untied scores: w^2 n1 n0 (n + 1) / 12 per stratum
        # (w = 1 / (n + 1)), summed over the brick's strata (itself, or its matched pairs)
        strata_codes = self.codes if strata is None else stats.brick_codes(strata)[1]
        n1 = np.bincount(strata_codes, weights=self.y).astype(float)
        n = np.bincount(strata_codes).astype(float)
        brick_of = np.zeros(len(n), np.int64)
        brick_of[strata_codes] = self.codes
        self.null_var = np.bincount(brick_of, n1 * (n - n1) / (12.0 * (n + 1.0)), minlength=len(self.sizes))
        # matched pairs: each pair's U is 1 where its fake scores higher (untied scores), so a brick's U is a
        # binomial draw of its pairs; the run's test, labels permuted within pairs, a binomial of all pairs at 1/2
        self.pairs = (np.bincount(brick_of, minlength=len(self.sizes)).astype(float)
                      if strata is not None and (n == 2).all() and (n1 == 1).all() else None)
        # a pair's weight in the weighted U (van Elteren's 1 / (n + 1) of a stratum of two)
        self.pair_weight = self.weights.sum() / self.pairs.sum() if self.pairs is not None else None

    def run(self, scores, *, alpha: float, family: int, n_perm: int, n_boot: int, seed: int,
            extra_var: float = 0.0) -> bool:
        """The verdict's rule on one set of scores: Holm-corrected (worst case) p < alpha and interval above 0.5."""
        groups = self.bricks if self.strata is None else self.strata
        test = stats.permutation_test(self.y, scores, groups, 0)
        p = test["p_value"]
        if n_perm and len(self.y) * n_perm <= stats.PERMUTATION_WORK:
            p = max(p, 1.0 / (n_perm + 1))  # a Monte Carlo p-value can go no lower
        if min(1.0, family * p) >= alpha:
            return False
        boot = stats.brick_bootstrap(self.y, scores, self.bricks, n_boot, seed, pooled=False, strata=self.strata)
        g = int((self.weights > 0).sum())
        lo = stats.interval(test["auc"], boot["auc"], g, effective=boot["effective_bricks"], extra_var=extra_var)[0]
        return bool(lo > 0.5)

    def run_bricks(self, u, *, alpha: float, family: int, n_perm: int, n_boot: int, seed: int,
                   extra_var: float = 0.0) -> np.ndarray:
        """The verdict's rule on simulated runs given as their bricks' weighted U statistics (runs x bricks)."""
        from scipy.stats import binom
        from scipy.stats import norm as normal

        pairs, var = self.weights, self.null_var
        if self.pairs is not None:  # the within-pair permutation test's exact distribution
            k = np.rint(u.sum(1) / self.pair_weight).astype(np.int64)
            p = binom.sf(k - 1, int(self.pairs.sum()), 0.5)
        else:
            p = normal.sf((u.sum(1) - pairs.sum() / 2) / np.sqrt(var.sum()))
        if n_perm and len(self.y) * n_perm <= stats.PERMUTATION_WORK:
            p = np.maximum(p, 1.0 / (n_perm + 1))
        auc = u.sum(1) / pairs.sum()
        nb = len(pairs)
        w = np.random.default_rng(seed).multinomial(nb, np.full(nb, 1.0 / nb), size=n_boot).astype(float)
        draws = (u @ w.T) / (w @ pairs)  # runs x resamples, as stats.brick_bootstrap reweights the bricks' sums
        g, eff = int((pairs > 0).sum()), stats.effective_bricks(pairs)
        lo = np.array([stats.interval(a, d, g, effective=eff, extra_var=extra_var)[0] for a, d in zip(auc, draws)])
        return (np.minimum(1.0, family * p) < alpha) & (lo > 0.5)

    def simulate(self, scenario: str, delta: float, n_sim: int, seed: int, **rule) -> tuple[float, float]:
        """(the estimand's AUC, averaged over the simulated runs; the share of runs the rule calls distinguishable)."""
        rng = np.random.default_rng(seed)
        if self.pairs is not None or len(self.y) > EXACT_MAX:
            d = np.stack([brick_effects(scenario, delta, self.sizes, rng) for _ in range(n_sim)])
            a = norm.cdf(d / np.sqrt(2))
            if self.pairs is not None:  # exact: each pair's fake higher with probability a_b
                u = rng.binomial(self.pairs.astype(np.int64), a) * self.pair_weight
            else:
                u = rng.normal(a * self.weights, np.sqrt(self.null_var))
            truth = float(np.mean(a @ self.weights / self.weights.sum()))
            return truth, float(np.mean(self.run_bricks(u, seed=seed, **rule)))
        hits, truth = 0, 0.0
        for k in range(n_sim):
            d = brick_effects(scenario, delta, self.sizes, rng)
            scores = rng.standard_normal(len(self.y)) + self.y * d[self.codes]
            truth += np.average(norm.cdf(d / np.sqrt(2)), weights=np.maximum(self.weights, 1e-300))
            hits += self.run(scores, seed=seed + k, **rule)
        return truth / n_sim, hits / n_sim


def min_detectable_auc(y, bricks, strata=None, *, alpha: float = 0.05, power: float = 0.8, family: int = 1,
                       n_perm: int = 2000, n_boot: int = 200, n_sim: int = 200, seed: int = 1,
                       extra_var: float = 0.0, scenarios=SCENARIOS) -> dict:
    """The smallest AUC at which the verdict's rule says ``distinguishable`` in at least ``power`` of simulated
    runs of this layout, in every scenario (module docstring); NaN where none below :data:`MAX_AUC` does.

    Per scenario, the effect is bisected on a probit scale (the same random numbers at every step, so the power
    rises with the effect but for the bisection's own noise). A step counts as reaching ``power`` when its
    simulated share, less one binomial standard error, does: a bisection that stops at the first noisy share above
    the target states an effect that reaches it less often than it says."""
    lay = Layout(y, bricks, strata)
    rule = dict(alpha=alpha, family=family, n_perm=n_perm, n_boot=n_boot, extra_var=extra_var)
    d_max = np.sqrt(2) * norm.ppf(MAX_AUC)
    out = {"alpha": alpha, "power": power, "family": family, "simulated_runs": n_sim, "scenarios": {}}
    for i, sc in enumerate(scenarios):
        s = seed + 7919 * i
        def reaches(pw):
            return pw - np.sqrt(pw * (1 - pw) / n_sim) >= power

        auc_max, pw_max = lay.simulate(sc, d_max, n_sim, s, **rule)
        if not reaches(pw_max):
            out["scenarios"][sc] = {"auc": float("nan"), "power_at_max": pw_max, "max_auc": auc_max}
            continue
        lo, hi = 0.0, d_max
        found = (auc_max, pw_max)
        for _ in range(8):
            mid = (lo + hi) / 2
            a, pw = lay.simulate(sc, mid, n_sim, s, **rule)
            if reaches(pw):
                hi, found = mid, (a, pw)
            else:
                lo = mid
        out["scenarios"][sc] = {"auc": float(found[0]), "power": float(found[1])}
    aucs = [v["auc"] for v in out["scenarios"].values()]
    out["min_detectable_auc"] = float(max(aucs)) if all(np.isfinite(aucs)) else float("nan")
    out["worst_scenario"] = (max(out["scenarios"], key=lambda k: out["scenarios"][k]["auc"])
                             if np.isfinite(out["min_detectable_auc"]) else
                             next(k for k, v in out["scenarios"].items() if not np.isfinite(v["auc"])))
    return out


def rule_power_at(y, bricks, auc: float, strata=None, *, scenario: str = "same", n_sim: int = 400, seed: int = 2,
                  alpha: float = 0.05, family: int = 1, n_perm: int = 2000, n_boot: int = 200,
                  extra_var: float = 0.0) -> float:
    """The share of simulated runs of this layout that the verdict's rule calls distinguishable when the fakes'
    scores are shifted by the ``auc`` of one brick (Phi(delta / sqrt 2) = auc) times the scenario's factors."""
    lay = Layout(y, bricks, strata)
    delta = np.sqrt(2) * norm.ppf(auc)
    return lay.simulate(scenario, delta, n_sim, seed, alpha=alpha, family=family, n_perm=n_perm, n_boot=n_boot,
                        extra_var=extra_var)[1]
