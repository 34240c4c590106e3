"""Evaluation on the test split: can the network tell fakes from reals, and how sure are we?

The verdict is a classifier two-sample test: if the injected and real
populations were identical, no classifier could beat the majority-class
baseline, so the test accuracy's binomial tail against that baseline is a
p-value for "no better than chance". A balanced accuracy ``a`` implies a lower
bound ``2a - 1`` on the total-variation distance between the two populations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n1, n0 = y.sum(), (~y).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def log_loss(y, p, eps=1e-7) -> float:
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def balanced_accuracy(y, pred) -> float:
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    rates = [np.mean(pred[y] == y[y]) if y.any() else np.nan, np.mean(pred[~y] == y[~y]) if (~y).any() else np.nan]
    return float(np.nanmean(rates))


def _metrics(y, p) -> dict:
    pred = p >= 0.5
    bacc = balanced_accuracy(y, pred)
    return {
        "accuracy": float(np.mean(pred == y)),
        "auc": roc_auc(y, p),
        "log_loss": log_loss(y, p),
        "balanced_accuracy": bacc,
        "tv_lower_bound": max(0.0, 2 * bacc - 1),
    }


def bootstrap(y, p, n_boot: int, seed: int) -> dict:
    """95% percentile intervals of each metric over ``n_boot`` resamples of the test set."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        draws.append(_metrics(y[i], p[i]))
    df = pd.DataFrame(draws)
    return {k: [float(np.nanpercentile(df[k], 2.5)), float(np.nanpercentile(df[k], 97.5))] for k in df.columns}


def chance_test(y, p) -> dict:
    """One-sided exact binomial test of the accuracy against the majority-class baseline."""
    from scipy.stats import binomtest

    n = len(y)
    k = int(np.sum((p >= 0.5) == y))
    baseline = max(np.mean(y), 1 - np.mean(y))
    res = binomtest(k, n, baseline, alternative="greater")
    return {"n": n, "correct": k, "baseline_accuracy": float(baseline), "p_value": float(res.pvalue)}


# The columns the metrics are binned by, and how the predictions table derives them
BINNED = {"mag_g": "g magnitude", "rz": "r - z colour", "size": "half-light radius (arcsec)"}


def binned(df: pd.DataFrame, column: str, edges, n_boot: int = 200, seed: int = 1) -> pd.DataFrame:
    """Accuracy and AUC, with counts and bootstrap 95% intervals, in bins of ``column``."""
    rows = []
    cut = pd.cut(df[column], edges)
    for k, (interval, grp) in enumerate(df.groupby(cut, observed=True)):
        y, p = grp["label"].to_numpy(int), grp["p_fake"].to_numpy(float)
        ci = bootstrap(y, p, n_boot, seed + k) if len(y) > 1 else {}
        rows.append(
            {
                "lo": float(interval.left),
                "hi": float(interval.right),
                "n_real": int((y == 0).sum()),
                "n_fake": int((y == 1).sum()),
                "accuracy": float(np.mean((p >= 0.5) == y)),
                "accuracy_ci95": ci.get("accuracy", [np.nan, np.nan]),
                "auc": roc_auc(y, p),
                "auc_ci95": ci.get("auc", [np.nan, np.nan]),
            }
        )
    return pd.DataFrame(rows)


def _separable(b: dict) -> bool:
    return bool(np.isfinite(b["auc_ci95"][0]) and b["auc_ci95"][0] > 0.5)


def magnitude_statement(bins: list[dict]) -> str:
    """Where in g magnitude the network separates the populations (AUC interval above 0.5)."""
    sep = [b for b in bins if _separable(b)]
    if not bins:
        return ""
    if not sep:
        return "In no g-magnitude bin does the AUC interval exclude 0.5."
    if len(sep) == len(bins):
        return "The AUC interval excludes 0.5 in every g-magnitude bin."
    hi_sep, lo_not = max(b["hi"] for b in sep), min(b["lo"] for b in bins if not _separable(b))
    best = max(sep, key=lambda b: b["auc"])
    if hi_sep <= lo_not:
        return (f"Separable brighter than g = {hi_sep:.1f} (AUC up to {best['auc']:.2f} at g {best['lo']:.1f}-"
                f"{best['hi']:.1f}); indistinguishable fainter.")
    ranges = ", ".join(f"{b['lo']:.1f}-{b['hi']:.1f}" for b in sep)
    return f"Separable in the g-magnitude bins {ranges} (AUC up to {best['auc']:.2f}); indistinguishable elsewhere."


def verdict(m: dict, alpha: float = 0.05) -> str:
    """One paragraph written from the numbers."""
    ci = m["ci95"]
    auc, (lo, hi) = m["auc"], ci["auc"]
    head = (
        f"On {m['chance']['n']} test examples ({m['n_real']} real, {m['n_fake']} fake) the network reaches accuracy "
        f"{m['accuracy']:.3f} (95% CI {ci['accuracy'][0]:.3f}-{ci['accuracy'][1]:.3f}) against a majority-class "
        f"baseline of {m['chance']['baseline_accuracy']:.3f}, and ROC AUC {auc:.3f} (95% CI {lo:.3f}-{hi:.3f}). "
    )
    p = m["chance"]["p_value"]
    if p < alpha and lo > 0.5:
        body = (
            f"It does better than chance (one-sided binomial p = {p:.2g}): the injected galaxies "
            f"are distinguishable from the real ones, and the two populations differ by a total-variation distance "
            f"of at least {m['tv_lower_bound']:.2f} (95% CI {ci['tv_lower_bound'][0]:.2f}-"
            f"{ci['tv_lower_bound'][1]:.2f}). "
        )
    elif hi < 0.5:
        body = (
            f"It does worse than chance (the AUC interval lies below 0.5; one-sided binomial p = {p:.2g}): no real "
            "difference can make a classifier anti-correlated with the truth, so what it learned from the training "
            "split is reversed in the test split. Suspect a split that is not independent (examples sharing sky or "
            "a brick's fixed class counts across the split) or a fluctuation of a small sample, before reading this "
            "as a statement about the injection. "
        )
    elif p >= alpha and lo <= 0.5:
        body = (
            f"It does no better than chance (one-sided binomial p = {p:.2g}; the AUC interval contains 0.5): at "
            "this sample size the injected galaxies are indistinguishable from the real ones. "
        )
    else:
        body = (
            f"The evidence is marginal: the binomial test {'rejects' if p < alpha else 'does not reject'} chance "
            f"(p = {p:.2g}) while the AUC interval {'contains' if lo <= 0.5 else 'excludes'} 0.5; more test "
            "examples are needed to decide. "
        )
    return head + body + magnitude_statement(m.get("by_mag_g", []))


# The built-in controls (config/presets/<name>.yaml) and what their metrics must show
CONTROLS = {
    "null-test": "the AUC's 95% interval contains 0.5 and the binomial test does not reject chance (p >= 0.05)",
    "positive-control": "the AUC's 95% interval lies above 0.8 and the binomial test rejects chance (p < 0.01)",
}


def control_outcome(m: dict, control: str) -> tuple[bool, str]:
    """Whether a control run's metrics (``metrics.json``) came out as they must (:data:`CONTROLS`), and a line
    saying so with the numbers."""
    if control not in CONTROLS:
        raise ValueError(f"control must be one of {sorted(CONTROLS)}, not {control!r}")
    (lo, hi), p = m["ci95"]["auc"], m["chance"]["p_value"]
    ok = lo <= 0.5 <= hi and p >= 0.05 if control == "null-test" else lo > 0.8 and p < 0.01
    numbers = f"AUC {m['auc']:.3f} (95% CI {lo:.3f}-{hi:.3f}), binomial p = {p:.2g}, {m['chance']['n']} test examples"
    return ok, f"{control} {'passed' if ok else 'FAILED'}: {numbers}; required: {CONTROLS[control]}"


def evaluate(pred: pd.DataFrame, n_boot: int = 1000, seed: int = 1, bins: dict | None = None) -> dict:
    """All metrics of a predictions table with columns ``label``, ``p_fake`` and those of ``bins``.

    ``bins`` maps a column of :data:`BINNED` to its bin edges.
    """
    y, p = pred["label"].to_numpy(int), pred["p_fake"].to_numpy(float)
    m = _metrics(y, p)
    m["n_real"], m["n_fake"] = int((y == 0).sum()), int((y == 1).sum())
    m["ci95"] = bootstrap(y, p, n_boot, seed)
    m["chance"] = chance_test(y, p)
    for column, edges in (bins or {}).items():
        m[f"by_{column}"] = binned(pred, column, edges, max(100, n_boot // 5), seed).to_dict(orient="records")
    m["verdict"] = verdict(m)
    return m


def predict(model, shard_dir, manifest_path, batch_size: int = 256) -> pd.DataFrame:
    """The test manifest with the network's fake probability ``p_fake`` per example (a Keras model or its path)."""
    from .data import dataset, example_shape
    from .model import load_model

    if isinstance(model, (str, Path)):
        model = load_model(model)
    # one reader (cycle_length=1): the examples come shard after shard, in the manifest's order; interleaved
    # readers would alternate between shards and pair each prediction with another example's row
    ds = dataset(shard_dir, "test", batch_size, example_shape(shard_dir, "test"), cycle_length=1)
    probs = model.predict(ds.map(lambda x, y: x), verbose=0)
    man = pd.read_csv(manifest_path)
    test = man[man["split"] == "test"].sort_values(["shard", "index"]).reset_index(drop=True)
    if len(test) != len(probs):
        raise ValueError(f"{manifest_path}: {len(test)} test rows but {len(probs)} predictions from {shard_dir}")
    test["p_fake"] = probs[:, 1]
    test["rz"] = test["mag_r"] - test["mag_z"]
    return test
