"""What the verdict's classifiers see: each planted defect on a ladder of sizes, a statistic made for it against the
statistics classifier, the verdict's family and (where its sensitivity grid was run) the network trained on it.

On a run's own real galaxies (the default run's unless told: its brick files, calipers and number of test pairs),
every defect of the ladder is planted ``--plantings`` times as the capacity check plants it (realfake.evaluation.capacity:
halves of each brick, one perturbed, paired by the run's calipers, at most as many pairs as the run's test), and
tested within pairs, brick-bootstrap interval and permutation p-value:

- by the one statistic made for that defect (second moment for the PSF, aperture flux over the catalogue's for a
  flux scale, the centroid's distance from the centre for an offset, the pixels' chi against the inverse variance for
  unrecorded noise), alone at alpha;
- by the statistics classifier alone (realfake.evaluation.combined: every statistic weighed by a logistic regression
  on the pairs' differences, trained on the other folds of bricks; its test refits it under flips of whole pairs);
- by the verdict's family: every image statistic and the classifier, Holm-corrected with the network's test counted
  as not rejecting;
- by the network, from a sensitivity grid over the same ladder (``--network``: its sensitivity.csv; ``make
  sensitivity`` with ``--configfile config/config.yaml benchmarks/reach.yaml``, about 3 minutes a scenario on 2
  cores), when given.

A size counts as found when every planting finds it. Prints one row per kind and size, then per kind the smallest
size each found and the ratios to the statistic's.

    python benchmarks/reach.py [--run .] [--plantings 3] [--network results/sensitivity/sensitivity.csv]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from realfake.cutouts.batches import brick_files
from realfake.evaluation.capacity import capacity, planted_statistics, subsample_pairs
from realfake.evaluation import combined
from realfake.evaluation.diagnostics import STATISTICS, holm_family, tested_within

ROOT = Path(__file__).resolve().parents[1]
LADDER = yaml.safe_load((ROOT / "benchmarks" / "reach.yaml").read_text())["sensitivity"]["grid"]
MADE_FOR = {"psf": "second_moment", "flux": "flux_ratio", "noise_unrecorded": "noise_chi", "noise": "noise_chi",
            "offset": "centroid_offset"}


def made_for(table: pd.DataFrame, alpha: float, n_pairs: int | None, seed: int) -> pd.DataFrame:
    """Each planting of each scenario tested by the statistic made for its kind, alone."""
    rows = []
    for (planting, kind, size), g in table[table["kind"] != "none"].groupby(["planting", "kind", "size"]):
        g = subsample_pairs(g.reset_index(drop=True), n_pairs, seed + int(planting))
        name = MADE_FOR[kind]
        tested = tested_within(g[[name, "label"]], g[["brick", "pair", "label"]], alpha, seed=seed,
                               classifier_permutations=None)
        holm_family(tested, alpha)  # (a family of one: its own p)
        t = tested[name]
        rows.append({"planting": planting, "kind": kind, "size": size, "statistic": name, "auc": t["auc"],
                     "p": t["p_value"], "found": t["found"]})
    return pd.DataFrame(rows)


def classifier_alone(table: pd.DataFrame, alpha: float, n_pairs: int | None, seed: int, n_perm: int) -> pd.DataFrame:
    """Each planting of each scenario tested by the statistics classifier alone (realfake.evaluation.combined: trained
    on the other folds of bricks, its test refitting it under ``n_perm`` flips of whole pairs)."""
    rows = []
    for (planting, kind, size), g in table[table["kind"] != "none"].groupby(["planting", "kind", "size"]):
        g = subsample_pairs(g.reset_index(drop=True), n_pairs, seed + int(planting)).reset_index(drop=True)
        v = combined.tested(g[list(STATISTICS)], g, n_perm, seed=seed)
        rows.append({"planting": planting, "kind": kind, "size": size, "auc": v["auc"], "p": v["p_value"],
                     "found": v["p_value"] < alpha and v["ci95"][0] > 0.5})
    return pd.DataFrame(rows)


def smallest(df: pd.DataFrame, found: str) -> dict:
    """Per kind, the smallest size found (NaN where none)."""
    return {k: float(g.loc[g[found], "size"].min()) if g[found].any() else float("nan") for k, g in df.groupby("kind")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=ROOT, help="the run's working directory (results/, config) [.]")
    p.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml", help="its config")
    p.add_argument("--plantings", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--permutations", type=int, default=1000, help="the statistics classifier's refitted permutations")
    p.add_argument("--network", type=Path, help="the sensitivity grid's sensitivity.csv over the same ladder")
    a = p.parse_args(argv)
    cfg = yaml.safe_load(a.config.read_text())
    files = brick_files(sorted((a.run / "results" / "cutouts").glob("*-*")))
    if not files:
        raise SystemExit(f"{a.run}/results/cutouts holds no brick files: run the pipeline first (make run)")
    man = pd.read_csv(a.run / "results" / "shards" / "manifest.csv", usecols=["pair"])
    n_pairs = int((man["pair"] > 0).sum() // 2) or None
    t0 = time.process_time()
    table = pd.concat([planted_statistics(f, LADDER, a.plantings, a.seed, cfg["shards"]["match"]) for f in files],
                      ignore_index=True)
    cpu = time.process_time() - t0
    alone = made_for(table, a.alpha, n_pairs, a.seed)
    learned = classifier_alone(table, a.alpha, n_pairs, a.seed, a.permutations)
    family = pd.DataFrame(capacity(table, a.alpha, n_pairs, a.seed)["rows"])
    rows = []
    for (kind, size), g in alone.groupby(["kind", "size"]):
        f = family[(family["kind"] == kind) & (family["size"] == size)]
        c = learned[(learned["kind"] == kind) & (learned["size"] == size)]
        rows.append({"kind": kind, "size": size, "statistic": g["statistic"].iloc[0],
                     "stat AUC": g["auc"].median(), "stat p": g["p"].median(),
                     "stat found": f"{int(g['found'].sum())}/{len(g)}", "stat_found": bool(g["found"].all()),
                     "classifier AUC": c["auc"].median(), "classifier found": f"{int(c['found'].sum())}/{len(c)}",
                     "classifier_found": bool(c["found"].all()),
                     "family found": f"{int(f['found'].sum())}/{len(f)}", "family_found": bool(f["found"].all())})
    out = pd.DataFrame(rows)
    if a.network is not None:
        # the network's own test (its p and its interval), not the scenario's verdict, which the statistics can carry
        net = pd.read_csv(a.network)
        net = net.assign(net_found=(net["p_value"] < a.alpha) & (net["auc_lo"] > 0.5))
        net = net[["kind", "size", "auc", "p_value", "net_found"]].rename(columns={"auc": "net AUC", "p_value": "net p"})
        out = out.merge(net, on=["kind", "size"], how="left")
    pairs = int(family["pairs"].median())
    print(f"{len(files)} brick files, {pairs} planted pairs a scenario (the run's test: {n_pairs}), "
          f"{a.plantings} plantings; planting and statistics {cpu:.0f} s of CPU\n")
    shown = [c for c in out.columns if not c.endswith("_found")]
    print(out[shown].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print("\nsmallest size found in every planting, per kind:")
    found = {"statistic made for it": smallest(out, "stat_found"),
             "the statistics classifier": smallest(out, "classifier_found"),
             "the verdict's family": smallest(out, "family_found")}
    if "net_found" in out:
        found["the network"] = smallest(out.assign(net_found=out["net_found"].fillna(False).astype(bool)),
                                        "net_found")
    summary = pd.DataFrame(found)
    ref = summary["statistic made for it"]
    for col in summary.columns[1:]:
        summary[f"{col} / statistic"] = summary[col] / ref
    print(summary.to_string(float_format=lambda v: f"{v:.3g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
