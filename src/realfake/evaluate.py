"""Evaluation: can the network tell fakes from reals, how sure are we, and what could it have seen?

The verdict is a classifier two-sample test, cross-fitted by brick: every
brick's examples are scored by the model of the fold that left that brick out
(:mod:`realfake.folds`), so the pooled test set is every brick with both
classes. Its statistics respect the bricks (:mod:`realfake.stats`): the
brick-stratified AUC, tested by permuting labels within bricks, with an
interval from resampling bricks, and the power of that test stated as the
smallest AUC it would have detected. A run ends in one of three verdicts:

- ``distinguishable``: the test rejects "no difference" at ``alpha`` and the AUC's interval lies above 0.5;
- ``no_difference_detected``: it does not, the network was trained to capacity (:func:`training_gate`) and
  the folds were independent; worded as a bound, never as "the populations are the same";
- ``inconclusive``: anything else (the network did not learn, did not converge, memorised its bricks; the AUC
  lies below 0.5; the test and the interval disagree; the split shares bricks), with what to change.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats
from .baseline import FEATURES

VERDICTS = ("distinguishable", "no_difference_detected", "inconclusive")


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


# --------------------------------------------------------------------------- the statistics of one set


def clustered(y, p, bricks, n_boot: int, n_perm: int, seed: int, alpha: float = 0.05, power: float = 0.8,
              pooled: bool = True) -> dict:
    """The brick-aware statistics of scores ``p`` (P(fake)) of examples ``y`` grouped by ``bricks`` (the pooled
    AUC's interval only if ``pooled``)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, float)
    test = stats.permutation_test(y, p, bricks, n_perm, seed)
    g = test["bricks_with_both_classes"]
    boot = stats.brick_bootstrap(y, p, bricks, n_boot, seed, pooled=pooled)
    auc_pooled = roc_auc(y, p)
    pred = p >= 0.5
    bacc = balanced_accuracy(y, pred)
    n_bricks = test["bricks"]
    out = {
        "n": int(len(y)), "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()), "bricks": n_bricks,
        "bricks_with_both_classes": g,
        "auc": test["auc"],
        "auc_pooled": auc_pooled,
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": bacc,
        "log_loss": log_loss(y, p),
        "ci95": {"auc": stats.interval(test["auc"], boot["auc"], g, bounds=(0, 1)),
                 "auc_pooled": stats.interval(auc_pooled, boot["pooled_auc"], n_bricks, bounds=(0, 1)),
                 "balanced_accuracy": stats.interval(bacc, boot["balanced_accuracy"], n_bricks, bounds=(0, 1))},
        "p_value": test["p_value"],
        "test": {k: v for k, v in test.items() if k != "auc"},
        # TPR - FPR of any fixed classifier bounds the total-variation distance from below
        "tv_lower_limit95": max(0.0, stats.lower_limit(2 * bacc - 1, 2 * boot["balanced_accuracy"] - 1, n_bricks)),
    }
    alt_sd = stats.brick_se(boot["auc"], g)
    mda = stats.min_detectable_auc(test["null_sd"], alt_sd, alpha, power) if np.isfinite(test["null_sd"]) else np.nan
    out["power"] = {
        "alpha": alpha, "power": power, "min_detectable_auc": mda,
        "min_detectable_tv_binormal": float(stats.tv_from_auc_binormal(mda)) if np.isfinite(mda) else float("nan"),
        "null_sd": test["null_sd"], "alternative_sd": alt_sd,
        # one-sided 95% upper limit of the AUC: what a run without a detection excludes
        "auc_upper_limit95": float(2 * test["auc"] - stats.lower_limit(test["auc"], boot["auc"], g)),
    }
    return out


# --------------------------------------------------------------------------- where: bins, folds, bricks

# The columns the metrics are binned by: fixed edges from the config, or test-set quantiles (observing conditions,
# whose units differ between surveys)
BINNED = {"mag_g": "g magnitude", "rz": "r - z colour", "size": "half-light radius (arcsec)",
          "ivar_g": "g depth (median inverse variance)", "ivar_r": "r depth (median inverse variance)",
          "ivar_z": "z depth (median inverse variance)", "psfsize_r": "r PSF FWHM (arcsec)",
          "nobs_r": "r exposures", "ebv": "E(B-V)"}


def binned(df: pd.DataFrame, column: str, edges, n_boot: int, n_perm: int = 0, seed: int = 1) -> list[dict]:
    """Stratified AUC with its brick interval and permutation p-value, and accuracy, in bins of ``column``.

    The bins' p-values default to the normal approximation of the within-brick permutation distribution (its
    mean and variance exact): Monte Carlo p-values cannot go below 1 / (draws + 1), which Holm's correction
    multiplies by the number of bins."""
    rows = []
    cut = pd.cut(df[column], edges, include_lowest=True)
    for k, (interval, grp) in enumerate(df.groupby(cut, observed=True)):
        y, p = grp["label"].to_numpy(int), grp["p_fake"].to_numpy(float)
        both = 0 < y.sum() < len(y)
        c = clustered(y, p, grp["brick"].to_numpy(), n_boot, n_perm, seed + k, pooled=False) if both else None
        rows.append({
            "lo": float(interval.left), "hi": float(interval.right),
            "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()),
            "accuracy": float(np.mean((p >= 0.5) == y)),
            "accuracy_ci95": [float("nan")] * 2,
            "auc": c["auc"] if c else float("nan"),
            "auc_ci95": c["ci95"]["auc"] if c else [float("nan")] * 2,
            "p_value": c["p_value"] if c else float("nan"),
        })
    return rows


def bin_edges(df: pd.DataFrame, column: str, configured: dict, n_quantiles: int = 4):
    if column in configured:
        return configured[column]
    v = df[column].to_numpy(float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) < 2 * n_quantiles:
        return None
    edges = np.unique(np.quantile(v, np.linspace(0, 1, n_quantiles + 1)))
    return edges.tolist() if len(edges) > 2 else None


def holm_bins(m: dict, alpha: float) -> dict:
    """Holm's correction over every bin of every binned column (one family); marks ``p_holm`` and
    ``significant`` in each bin and returns, per column, the bins that survive."""
    cells = [(k, b) for k in BINNED for b in m.get(f"by_{k}", [])]
    adjusted = stats.holm([b["p_value"] for _, b in cells])
    survivors = {}
    for (k, b), ph in zip(cells, adjusted):
        b["p_holm"] = float(ph)
        b["significant"] = bool(np.isfinite(ph) and ph < alpha and b["auc"] > 0.5)
        if b["significant"]:
            survivors.setdefault(k, []).append(f"{b['lo']:.3g}-{b['hi']:.3g} (AUC {b['auc']:.2f}, Holm p = {ph:.2g})")
    return survivors


def where_statement(m: dict) -> str:
    """Per binned column, how many of its bins survive Holm's correction, and which when not all do."""
    parts = []
    for k, names in m.get("where", {}).items():
        n = len(m[f"by_{k}"])
        parts.append(f"{BINNED[k]}: all {n} bins" if len(names) == n else f"{BINNED[k]}: {', '.join(names)}")
    return ("Bins where the network separates the classes (Holm-corrected over all bins): " + "; ".join(parts) + "."
            if parts else "No bin of magnitude, colour, size or observing conditions separates the classes after Holm's "
            "correction.")


# More bricks than this: the per-brick p-values are the normal approximation of each brick's permutation
# distribution (exact mean and variance), computed for all bricks at once
MANY_BRICKS = 1000


def by_group(pred: pd.DataFrame, column: str, n_perm: int, seed: int) -> list[dict]:
    """Per fold or per brick: counts, stratified AUC and its permutation p-value."""
    if column == "brick" and pred["brick"].nunique() > MANY_BRICKS:
        return _by_brick_at_once(pred)
    rows = []
    for name, grp in pred.groupby(column, sort=True):
        y, p = grp["label"].to_numpy(int), grp["p_fake"].to_numpy(float)
        both = 0 < y.sum() < len(y)
        t = stats.permutation_test(y, p, grp["brick"].to_numpy(), n_perm, seed) if both else {}
        rows.append({column: name if isinstance(name, str) else int(name), "n_real": int((y == 0).sum()),
                     "n_fake": int((y == 1).sum()), "bricks": int(grp["brick"].nunique()),
                     "auc": t.get("auc", float("nan")), "p_value": t.get("p_value", float("nan"))})
    return rows


def _by_brick_at_once(pred: pd.DataFrame) -> list[dict]:
    """by_group(pred, "brick") for many bricks: every brick's U statistic and its permutation variance in one pass."""
    names, codes = stats.brick_codes(pred["brick"].to_numpy())
    s = stats.per_brick(pred["label"].to_numpy(int), pred["p_fake"].to_numpy(float), codes, len(names))
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(s["pairs"] > 0, s["u"] / s["pairs"], np.nan)
    p = np.where(s["pairs"] > 0, stats.normal_test(s["u"], s["pairs"], s["var_u"])[1], np.nan)
    return [{"brick": str(b), "n_real": int(n0), "n_fake": int(n1), "bricks": 1, "auc": float(a), "p_value": float(q)}
            for b, n0, n1, a, q in zip(names, s["n0"], s["n1"], auc, p)]


def magnitude_statement(bins: list[dict]) -> str:
    """Where in g magnitude the network separates the populations (bins whose Holm-corrected test rejects)."""
    if not bins:
        return ""
    sep = [b for b in bins if b.get("significant")]
    if not sep:
        return "In no g-magnitude bin does the AUC differ from 0.5 after Holm's correction."
    if len(sep) == len(bins):
        return "The AUC exceeds 0.5 in every g-magnitude bin (Holm-corrected)."
    hi_sep, lo_not = max(b["hi"] for b in sep), min(b["lo"] for b in bins if not b.get("significant"))
    best = max(sep, key=lambda b: b["auc"])
    if hi_sep <= lo_not:
        return (f"Separable brighter than g = {hi_sep:.1f} (AUC up to {best['auc']:.2f} at g {best['lo']:.1f}-"
                f"{best['hi']:.1f}); no difference detected fainter.")
    ranges = ", ".join(f"{b['lo']:.1f}-{b['hi']:.1f}" for b in sep)
    return f"Separable in the g-magnitude bins {ranges} (AUC up to {best['auc']:.2f}); no difference detected elsewhere."


# --------------------------------------------------------------------------- was the network trained to capacity?


def training_gate(histories: dict, epochs: int, gate: dict, monitor: str = "val_loss") -> dict:
    """Did each fold's network learn, converge and generalise? From its ``history.csv`` (one row per epoch).

    - learned: over the last ``gate.last_epochs`` epochs, training loss below ln 2 - ``gate.min_loss_drop`` or
      training AUC above ``gate.min_train_auc``;
    - converged: early stopping fired (fewer epochs than ``epochs``) at a best epoch other than the first, or the
      training loss changed by less than ``gate.max_loss_change`` (relative) over the last epochs;
    - generalises: at the kept epoch (best ``monitor``, as early stopping chose it), training AUC minus validation
      AUC at most ``gate.max_auc_gap``, and the validation loss did not rise from the first epoch while the
      training loss fell (memorised bricks).
    """
    folds, reasons = [], []
    k = int(gate["last_epochs"])
    for fold, h in sorted(histories.items()):
        h = h.reset_index(drop=True)
        last = h.tail(k)
        loss, auc = float(last["loss"].mean()), float(last["auc"].mean()) if "auc" in h else float("nan")
        learned = bool(loss < math.log(2) - gate["min_loss_drop"] or auc > gate["min_train_auc"])
        has_val = "val_loss" in h and h["val_loss"].notna().any()
        if has_val and monitor in h and h[monitor].notna().any():
            best = int(h[monitor].idxmax() if monitor == "val_auc" else h[monitor].idxmin())
        else:
            best = len(h) - 1
        stopped_early = len(h) < epochs
        ref = h["loss"].iloc[max(0, len(h) - 1 - k)]
        change = float(abs(h["loss"].iloc[-1] - ref) / ref) if ref else float("nan")
        memorised = bool(has_val and len(h) > 2 and int(h["val_loss"].idxmin()) == 0
                         and h["val_loss"].iloc[-1] > h["val_loss"].iloc[0] and h["loss"].iloc[-1] < h["loss"].iloc[0])
        converged = bool((stopped_early and best > 0) or (len(h) > k and change < gate["max_loss_change"]))
        gap = float(h["auc"].iloc[best] - h["val_auc"].iloc[best]) if has_val and "val_auc" in h else float("nan")
        generalises = bool(has_val and np.isfinite(gap) and gap <= gate["max_auc_gap"] and not memorised)
        row = {"fold": fold, "epochs_run": len(h), "stopped_early": stopped_early, "best_epoch": best + 1,
               "train_loss": loss, "train_auc": auc, "loss_change": change,
               "val_auc_at_best": float(h["val_auc"].iloc[best]) if has_val and "val_auc" in h else float("nan"),
               "auc_gap": gap, "learned": learned, "converged": converged, "generalises": generalises,
               "memorised": memorised}
        folds.append(row)
        name = f"fold {fold}"
        if not learned:
            reasons.append(f"{name}: the network did not learn (training loss {loss:.4f} against ln 2 = 0.6931, "
                           f"training AUC {auc:.3f} over the last {k} epochs)")
        if memorised:
            reasons.append(f"{name}: the validation loss rose from the first epoch while the training loss fell: "
                           "the network memorised its training bricks")
        elif not has_val:
            reasons.append(f"{name}: no validation split, so generalisation cannot be checked")
        elif not generalises:
            reasons.append(f"{name}: training AUC exceeds validation AUC by {gap:.3f} (> {gate['max_auc_gap']})")
        if not converged and len(h) <= k:
            reasons.append(f"{name}: only {len(h)} epoch(s), too few to tell whether training converged")
        elif not converged:
            reasons.append(f"{name}: not converged (training loss still changing by {change:.1%} over the last "
                           f"{k} epochs, and early stopping did not fire)")
    passed = bool(folds) and all(f["learned"] and f["converged"] and f["generalises"] for f in folds)
    return {"passed": passed, "folds": folds, "reasons": reasons, "thresholds": dict(gate)}


# --------------------------------------------------------------------------- the verdict


def classify(m: dict, alpha: float) -> tuple[str, list[str]]:
    """The verdict class and its reasons (plain sentences), from the metrics."""
    lo, hi = m["ci95"]["auc"]
    p, mda = m["p_value"], m["power"]["min_detectable_auc"]
    gate, folds = m.get("training"), m.get("folds", {})
    reasons = []
    if folds.get("note"):
        reasons.append(folds["note"])
    if not np.isfinite(m["auc"]) or m["bricks_with_both_classes"] < 2:
        reasons.append(f"only {m['bricks_with_both_classes']} brick(s) of the test examples hold both classes: "
                       "no brick-level inference is possible; select more bricks")
        return "inconclusive", reasons
    if p < alpha and lo > 0.5:
        reasons.append(f"labels permuted within bricks reject 'no difference' (p = {p:.2g} < {alpha}) and the AUC's "
                       "interval lies above 0.5")
        if m["tv_lower_limit95"] > 0:
            reasons.append(f"the two populations differ by a total-variation distance of at least "
                           f"{m['tv_lower_limit95']:.3f} (one-sided 95% lower limit)")
        if gate is not None and not gate["passed"]:
            reasons.append("the network was not trained to capacity (" + "; ".join(gate["reasons"]) +
                           "): the true difference may be larger than this run shows")
        return "distinguishable", reasons
    if hi < 0.5:
        reasons.append(f"the AUC lies below 0.5 (95% CI {lo:.3f}-{hi:.3f}): no real difference makes a classifier "
                       "anti-correlated with the truth on bricks it never saw; suspect a fluctuation of few bricks, "
                       "or a network that learned brick-level features (class shares) that reverse between folds")
        return "inconclusive", reasons
    if p < alpha or lo > 0.5:
        reasons.append(f"the test and the interval disagree (p = {p:.2g}, AUC 95% CI {lo:.3f}-{hi:.3f}): "
                       "marginal; more bricks are needed to decide")
        return "inconclusive", reasons
    blockers = []
    if folds.get("split_by") == "example":
        blockers.append("the examples were split by example, not by brick: the test and training examples share "
                        "sky, depth and PSF; set shards.split_by: brick")
    if gate is None:
        blockers.append("no training history was given: whether the network learned is unknown")
    elif not gate["passed"]:
        blockers.extend(gate["reasons"])
        blockers.append("to change: more bricks (examples), more epochs (train.epochs, early_stopping_patience), "
                        "another learning rate or model (model.name), as the failing check suggests")
    if not np.isfinite(mda):
        blockers.append("the power of the test could not be computed")
    base = m.get("baseline")
    if base and base["p_value"] < alpha and m["excess_over_baseline"]["ci95"][1] < 0:
        blockers.append(f"a classifier of catalogue quantities alone separates the classes (AUC {base['auc']:.3f}, "
                        f"p = {base['p_value']:.2g}) better than the network: the network has not learned what its "
                        "pixels show (magnitudes and sizes are in them), so it was not trained to capacity")
    if blockers:
        reasons.append(f"no difference detected (p = {p:.2g}), but that cannot be read as a bound: " +
                       "; ".join(blockers))
        return "inconclusive", reasons
    reasons.append(f"no difference detected: p = {p:.2g}; the AUC is below {m['power']['auc_upper_limit95']:.3f} "
                   "at 95% (one-sided)")
    reasons.append(f"this run would have found a difference of AUC >= {mda:.3f} (80% power at alpha = {alpha}), "
                   f"i.e. a total-variation distance of about {m['power']['min_detectable_tv_binormal']:.2f} "
                   "(binormal scores); smaller differences may exist")
    return "no_difference_detected", reasons


def verdict(m: dict) -> str:
    """One paragraph written from the numbers and the verdict class."""
    lo, hi = m["ci95"]["auc"]
    head = (f"{m['verdict_class'].upper().replace('_', ' ')}. On {m['n']} test examples ({m['n_real']} real, "
            f"{m['n_fake']} fake) in {m['bricks']} bricks, each scored by a model that never saw its brick "
            f"({m.get('folds', {}).get('k', 1)} folds), the brick-stratified ROC AUC is {m['auc']:.3f} "
            f"(95% CI {lo:.3f}-{hi:.3f}; p = {m['p_value']:.2g}, labels permuted within bricks). ")
    if "baseline" in m:
        b = m["baseline"]
        d, (dlo, dhi) = m["excess_over_baseline"]["difference"], m["excess_over_baseline"]["ci95"]
        head += (f"A classifier of catalogue quantities alone (magnitudes, colours, size, depth, PSF, exposures, "
                 f"E(B-V)) reaches AUC "
                 f"{b['auc']:.3f} (95% CI {b['ci95']['auc'][0]:.3f}-{b['ci95']['auc'][1]:.3f}, p = {b['p_value']:.2g}): "
                 + (f"the pixels add {d:+.3f} (95% CI {dlo:+.3f} to {dhi:+.3f}). " if dlo > 0 else
                    f"the network does {'worse' if dhi < 0 else 'no better'} than that ({d:+.3f}, 95% CI {dlo:+.3f} to "
                    f"{dhi:+.3f}){': it has not learned what the catalogue already shows' if dhi < 0 else ''}. "))
    body = " ".join(r[0].upper() + r[1:] + "." for r in m["verdict_reasons"])
    where = ""
    if m["verdict_class"] == "distinguishable":
        where = " " + magnitude_statement(m.get("by_mag_g", [])) + " " + where_statement(m)
    grid = m.get("sensitivity", {}).get("sentence", "")  # what this run could have found (the sensitivity grid)
    return head + body + where + (" " + grid if grid else "")


def evaluate(pred: pd.DataFrame, ecfg: dict, histories: dict | None = None, epochs: int | None = None,
             baseline: pd.DataFrame | None = None, folds: dict | None = None, monitor: str = "val_loss") -> dict:
    """All metrics of a predictions table (``label``, ``p_fake``, ``brick``, ``fold`` and the binned columns).

    ``ecfg``: the ``evaluate:`` block (bootstrap, permutations, seed, alpha, power, bins, training_gate).
    ``histories``: fold -> its training history; ``baseline``: the same examples' ``p_fake`` from the
    nuisance baseline; ``folds``: how the run was folded (k, requested, split_by, note).
    """
    n_boot, n_perm, seed = ecfg["bootstrap"], ecfg["permutations"], ecfg["seed"]
    alpha, power = ecfg["alpha"], ecfg["power"]
    pred = pred.copy()
    if "brick" not in pred:
        pred["brick"] = "all"
    if "rz" not in pred and {"mag_r", "mag_z"} <= set(pred):
        pred["rz"] = pred["mag_r"] - pred["mag_z"]
    y, p = pred["label"].to_numpy(int), pred["p_fake"].to_numpy(float)
    m = clustered(y, p, pred["brick"].to_numpy(), n_boot, n_perm, seed, alpha, power)
    m["folds"] = folds or {"k": 1}
    m["naive"] = {**stats.naive_tests(y, p),
                  "note": "tests that treat the examples as independent, for comparison only: not valid when "
                          "examples cluster by brick"}
    if histories is not None:
        m["training"] = training_gate(histories, epochs or 0, ecfg["training_gate"], monitor)
    if baseline is not None:
        b = clustered(y, baseline.to_numpy(float), pred["brick"].to_numpy(), n_boot, n_perm, seed, alpha, power)
        m["baseline"] = {k: b[k] for k in ("auc", "ci95", "p_value", "auc_pooled")}
        m["baseline"]["features"] = list(FEATURES)
        m["excess_over_baseline"] = stats.paired_difference(y, p, baseline.to_numpy(float), pred["brick"].to_numpy(),
                                                            n_boot, seed)
    if "fold" in pred:
        m["by_fold"] = by_group(pred, "fold", n_perm, seed)
    m["by_brick"] = by_group(pred, "brick", max(99, n_perm // 10), seed)
    for column in BINNED:
        if column in pred:
            edges = bin_edges(pred, column, ecfg.get("bins", {}))
            if edges is not None:
                m[f"by_{column}"] = binned(pred, column, edges, max(100, n_boot // 5), 0, seed)
    m["where"] = holm_bins(m, alpha)
    m["verdict_class"], m["verdict_reasons"] = classify(m, alpha)
    m["verdict"] = verdict(m)
    return m


# The built-in controls (config/presets/<name>.yaml) and what their metrics must show
CONTROLS = {
    # one run at alpha = 0.05 rejects a true null once in twenty: the null calibration measures that rate
    "null-test": "the verdict is not 'distinguishable'",
    "positive-control": "the verdict is 'distinguishable' with the AUC's 95% interval above 0.8",
}


def control_outcome(m: dict, control: str) -> tuple[bool, str]:
    """Whether a control run's metrics (``metrics.json``) came out as they must (:data:`CONTROLS`), and a line
    saying so with the numbers."""
    if control not in CONTROLS:
        raise ValueError(f"control must be one of {sorted(CONTROLS)}, not {control!r}")
    (lo, hi), p, kind = m["ci95"]["auc"], m["p_value"], m["verdict_class"]
    ok = kind != "distinguishable" if control == "null-test" else kind == "distinguishable" and lo > 0.8
    numbers = (f"{kind}: AUC {m['auc']:.3f} (95% CI {lo:.3f}-{hi:.3f}), permutation p = {p:.2g}, {m['n']} test "
               f"examples in {m['bricks']} bricks")
    return ok, f"{control} {'passed' if ok else 'FAILED'}: {numbers}; required: {CONTROLS[control]}"


def predict(model, shard_dir, manifest_path, batch_size: int = 256) -> pd.DataFrame:
    """The test manifest with the network's fake probability ``p_fake`` per example (a Keras model or its path)."""
    from .data import dataset
    from .model import load_model
    from .shardset import ShardSet

    if isinstance(model, (str, Path)):
        model = load_model(model)
    # one reader (cycle_length=1): the examples come shard after shard, in the manifest's order; interleaved
    # readers would alternate between shards and pair each prediction with another example's row
    ds = dataset(ShardSet.read(shard_dir, "test"), batch_size, cycle_length=1)
    probs = model.predict(ds.map(lambda x, y: x), verbose=0)
    man = pd.read_csv(manifest_path)
    test = man[man["split"] == "test"].sort_values(["shard", "index"]).reset_index(drop=True)
    if len(test) != len(probs):
        raise ValueError(f"{manifest_path}: {len(test)} test rows but {len(probs)} predictions from {shard_dir}")
    test["p_fake"] = probs[:, 1]
    test["rz"] = test["mag_r"] - test["mag_z"]
    return test
