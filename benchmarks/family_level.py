"""The level of the verdict's family of image statistics on reals against reals, with bricks that differ.

On a run's own real galaxies (the default run's unless told), each brick's reals are split into random halves and
paired by the run's calipers, as the capacity check plants its null row (realfake.evaluation.capacity), ``--nulls``
times; nothing differs between the halves. Each null is tested as the verdict tests its pairs: every image statistic
within pairs (two-sided), the statistics classifier (realfake.evaluation.combined: its cross-fitted score, tested by
refitting it under flips of whole pairs), and the family of them all Holm-corrected with the network's test counted
as not rejecting. Beside them, the classifier's cross-fitted scores tested as if they were fixed (labels permuted
within pairs, scores kept): the test the classifier must not use. Prints each test's rejection rate at ``--alpha``
with its exact 95% interval, and the z-scores' spread where there is one.

    python benchmarks/family_level.py [--run .] [--nulls 200] [--permutations 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.stats import beta

from realfake.cutouts.batches import brick_files
from realfake.evaluation import combined
from realfake.evaluation.capacity import planted_statistics
from realfake.evaluation.diagnostics import STATISTICS, holm_family, tested_within
from realfake.evaluation.scores import clustered

ROOT = Path(__file__).resolve().parents[1]


def exact_interval(k: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson 95% interval of k rejections in n tests."""
    return (float(beta.ppf(0.025, k, n - k + 1)) if k else 0.0, float(beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0)


def fixed_score_z(g: pd.DataFrame) -> float:
    """z of the classifier's cross-fitted scores tested as fixed scores (labels permuted within pairs)."""
    real, fake = combined.pair_rows(g)
    _, score, _ = combined.cross_fitted(g[list(STATISTICS)].to_numpy(float), real, fake,
                                        combined.fold_codes(g)[fake], np.ones((1, len(real))))
    keep = np.r_[real, fake]
    c = clustered(g["label"].to_numpy(int)[keep], score[keep], g["brick"].to_numpy()[keep], 0, 0, 1, pooled=False,
                  strata=g["pair"].to_numpy()[keep])
    return float(c["test"]["z"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=ROOT, help="the run's working directory (results/, config) [.]")
    p.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml", help="its config")
    p.add_argument("--nulls", type=int, default=200, help="random halvings of the reals [200]")
    p.add_argument("--permutations", type=int, default=500, help="the classifier's refitted permutations [500]")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1000)
    a = p.parse_args(argv)
    cfg = yaml.safe_load(a.config.read_text())
    files = brick_files(sorted((a.run / "results" / "cutouts").glob("*-*")))
    if not files:
        raise SystemExit(f"{a.run}/results/cutouts holds no brick files: run the pipeline first (make run)")
    t0 = time.time()
    table = pd.concat([planted_statistics(f, {}, a.nulls, a.seed, cfg["shards"]["match"]) for f in files],
                      ignore_index=True)
    planted = time.time() - t0
    rows = []
    for k, g in table.groupby("planting"):
        g = g.reset_index(drop=True)
        t = tested_within(g[list(STATISTICS) + ["label"]], g[["brick", "pair", "label"]], a.alpha, seed=a.seed + k,
                          classifier_permutations=a.permutations)
        without = {n: dict(v) for n, v in t.items() if n != combined.NAME}
        holm_family(t, a.alpha, network_p=1.0)
        holm_family(without, a.alpha, network_p=1.0)
        rows.append({"pairs": len(g) // 2, "bricks": g["brick"].nunique(),
                     **{f"p {n}": v["p_value"] for n, v in t.items()},
                     "family": any(v["found"] for v in t.values()),
                     "family without the classifier": any(v["found"] for v in without.values()),
                     "z fixed": fixed_score_z(g)})
    r = pd.DataFrame(rows)
    print(f"{len(files)} brick files; {a.nulls} random halvings of the reals, {int(r['pairs'].median())} pairs in "
          f"{int(r['bricks'].median())} bricks each (median); {a.permutations} refitted permutations; planting "
          f"{planted:.0f} s, tests {time.time() - t0 - planted:.0f} s\n")
    out = []
    tests = {f"{n.replace('_', ' ')} (alone)": r[f"p {n}"] < a.alpha for n in STATISTICS if f"p {n}" in r}
    tests["statistics classifier, refitted permutations"] = r[f"p {combined.NAME}"] < a.alpha
    z = r["z fixed"].to_numpy()
    tests["statistics classifier, scores held fixed (two-sided)"] = pd.Series(np.abs(z) > 1.96)
    tests["the family (Holm over the statistics and the classifier)"] = r["family"]
    tests["the family without the classifier (as before)"] = r["family without the classifier"]
    for name, rejected in tests.items():
        k, n = int(rejected.sum()), len(rejected)
        lo, hi = exact_interval(k, n)
        out.append({"test": name, "rejected": f"{k}/{n}", "rate": k / n, "95% CI": f"{lo:.3f}-{hi:.3f}"})
    print(pd.DataFrame(out).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nscores held fixed: z mean {z.mean():.2f}, SD {z.std(ddof=1):.2f} (a valid test: 0, 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
