"""Evaluation: can the network tell fakes from reals, how sure are we, and what could it have seen?

The verdict is a classifier two-sample test, cross-fitted by brick: every
brick's examples are scored by the model of the fold that left that brick out
(:mod:`realfake.evaluation.folds`), so the pooled test set is every brick with both
classes. Its statistics respect the bricks (:mod:`realfake.evaluation.stats`): the
brick-stratified AUC, tested by permuting labels within bricks, with an
interval from resampling bricks, and the power of that test stated as the
smallest AUC it would have detected. A run ends in one of three verdicts
(:mod:`realfake.evaluation.verdict`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from realfake import BINNED
from realfake.evaluation import stats
from realfake.evaluation.baseline import FEATURES
from realfake.evaluation.learning import training_gate
from realfake.evaluation.scores import clustered, matched_pairs
from realfake.evaluation.verdict import classify, verdict

REPLICATE_PREFIX = "p_fake_replicate_"  # a replicate training's score column; p_fake is their mean


def with_replicates(pred: pd.DataFrame, replicates: dict, keys: list) -> pd.DataFrame:
    """``pred`` (replicate 0's predictions) with every replicate's score as ``p_fake_replicate_<r>`` and ``p_fake``
    their mean; ``replicates``: r -> that replicate's predictions of the same examples (an example missing from one
    is an error: the replicates score the same test examples)."""
    out = pred.rename(columns={"p_fake": f"{REPLICATE_PREFIX}0"})
    for r, other in sorted(replicates.items()):
        scores = other[keys + ["p_fake"]].rename(columns={"p_fake": f"{REPLICATE_PREFIX}{r}"})
        out = out.merge(scores, on=keys, how="left", validate="one_to_one")
        if out[f"{REPLICATE_PREFIX}{r}"].isna().any():
            raise ValueError(f"replicate {r} did not score {int(out[f'{REPLICATE_PREFIX}{r}'].isna().sum())} of the "
                             "test examples of replicate 0: were its shards or folds another run's?")
    cols = [c for c in out if c.startswith(REPLICATE_PREFIX)]
    out["p_fake"] = out[cols].mean(axis=1)
    return out


# --------------------------------------------------------------------------- the statistics of one set


def rule_power(m: dict, y, bricks, strata, family: int, ecfg: dict) -> None:
    """The smallest AUC the verdict's rule detects (realfake.evaluation.power: simulated on this run's bricks and pairs, with
    effects that vary between bricks), into ``m["power"]``: NaN where the run is too small to detect anything."""
    from realfake.evaluation.power import min_detectable_auc

    pw = m["power"]
    sim = min_detectable_auc(y, bricks, strata, alpha=pw["alpha"], power=pw["power"], family=family,
                             n_perm=ecfg["permutations"], n_sim=int(ecfg.get("power_simulations", 200)),
                             seed=ecfg["seed"], extra_var=pw["training_variance"])
    mda = sim["min_detectable_auc"]
    pw.update(min_detectable_auc=mda, simulation=sim, family=family,
              min_detectable_tv_binormal=float(stats.tv_from_auc_binormal(mda)) if np.isfinite(mda) else float("nan"))


# --------------------------------------------------------------------------- where: bins, folds, bricks

# The columns the metrics are binned by: fixed edges from the config, or test-set quantiles (observing conditions,
# whose units differ between surveys)
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


def appearance_family(m: dict, alpha: float) -> None:
    """On matched pairs, the network's test and the image statistics' (diagnostics.tested_within) are one family of
    pre-specified tests of "within a pair, the pixels do not know which is the fake", Holm-corrected together, so
    that the appearance answer rejects at ``alpha`` overall whichever test finds the difference: a statistic made
    for a defect (concentration for a wrong profile) can see what a network trained on a few hundred pairs does
    not. Marks ``p_holm`` (the network's) and, per statistic, ``p_holm_family`` and ``found`` (Holm's p < alpha
    and its interval off 0.5)."""
    from realfake.evaluation.diagnostics import holm_family

    m["p_holm"] = holm_family(m["image_statistics"], alpha, m["p_value"])


def evaluate(pred: pd.DataFrame, ecfg: dict, histories: dict | None = None, epochs: int | None = None,
             baseline: pd.DataFrame | None = None, folds: dict | None = None, monitor: str = "val_loss",
             sensitivity: dict | None = None, processing: dict | None = None, population: dict | None = None,
             image_statistics: dict | None = None, capacity: dict | None = None) -> dict:
    """All metrics of a predictions table (``label``, ``p_fake``, ``brick``, ``fold`` and the binned columns).

    ``ecfg``: the ``evaluate:`` block (bootstrap, permutations, seed, alpha, power, bins, training_gate).
    ``histories``: fold -> its training history; ``baseline``: the same examples' ``p_fake`` from the
    nuisance baseline; ``folds``: how the run was folded (k, requested, split_by, note); ``sensitivity``: the
    run's sensitivity grid (``sensitivity.json``), quoted in the verdict; ``processing``: the processing check
    (realfake.cutouts.processing); ``population``: the population answer (realfake.evaluation.population); ``image_statistics``: the
    image statistics tested within pairs or bricks (diagnostics.tested_within); ``capacity``: the planted defects
    this run's recipe finds (realfake.evaluation.capacity), the bound a "no difference" states. Where the examples are
    matched pairs (``pair``), the headline is the appearance answer: the paired AUC, labels permuted within pairs.
    Columns ``p_fake_replicate_<r>``: the scores of replicate trainings (other seeds), ``p_fake`` their mean.
    """
    n_boot, n_perm, seed = ecfg["bootstrap"], ecfg["permutations"], ecfg["seed"]
    alpha, power = ecfg["alpha"], ecfg["power"]
    pred = pred.copy()
    if "brick" not in pred:
        pred["brick"] = "all"
    if "rz" not in pred and {"mag_r", "mag_z"} <= set(pred):
        pred["rz"] = pred["mag_r"] - pred["mag_z"]
    y, p = pred["label"].to_numpy(int), pred["p_fake"].to_numpy(float)
    pairs = matched_pairs(pred)
    reps = [c for c in pred if c.startswith(REPLICATE_PREFIX)]
    replicates = pred[reps].to_numpy(float).T if len(reps) > 1 else None
    m = clustered(y, p, pred["brick"].to_numpy(), n_boot, n_perm, seed, alpha, power, strata=pairs,
                  replicates=replicates)
    m["matched"] = pairs is not None
    m["folds"] = folds or {"k": 1}
    m["naive"] = {**stats.naive_tests(y, p),
                  "note": "tests that treat the examples as independent, for comparison only: not valid when "
                          "examples cluster by brick"}
    if histories is not None:
        m["training"] = training_gate(histories, epochs or 0, ecfg["training_gate"], monitor)
    if baseline is not None:
        b = clustered(y, baseline.to_numpy(float), pred["brick"].to_numpy(), n_boot, n_perm, seed, alpha, power,
                      strata=pairs)
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
    if sensitivity is not None:
        m["sensitivity"] = sensitivity
    if processing is not None:
        m["processing"] = processing
    if population is not None:
        m["population"] = population
    if image_statistics is not None:
        m["image_statistics"] = image_statistics
        if pairs is not None:
            appearance_family(m, alpha)
    family = 1 + len(image_statistics) if image_statistics is not None and pairs is not None else 1
    rule_power(m, y, pred["brick"].to_numpy(), pairs, family, ecfg)
    if capacity is not None:
        m["capacity"] = capacity
    m["verdict_class"], m["verdict_reasons"] = classify(m, alpha)
    # each question its own answer: the appearance (matched pairs) and the population (all selected examples)
    m["answers"] = {"appearance" if pairs is not None else "classes": m["verdict_class"]}
    if population is not None and np.isfinite(population.get("auc", np.nan)):
        m["answers"]["population"] = "distinguishable" if population.get("differs") else "no_difference_detected"
    m["verdict"] = verdict(m)
    return m


def predict(model, shard_dir, manifest_path, batch_size: int = 256) -> pd.DataFrame:
    """The test manifest with the network's fake probability ``p_fake`` per example (a Keras model or its path)."""
    from realfake.training.data import dataset
    from realfake.training.model import load_model
    from realfake.shards.shardset import ShardSet

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
