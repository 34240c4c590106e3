"""Null calibration: the null test repeated over independent seeds; does the verdict's test keep its level?

Each replicate is the whole pipeline on its own synthetic release (``synthetic.seed``, and the shuffle and
training seeds, set to the replicate's number) with the null preset's fakes, drawn like the real galaxies: a
sound test rejects "no difference" in about 5% of them at alpha = 0.05, and its p-values are uniform. Prints a
table per replicate, the false-positive rate with its exact 95% interval, and a Kolmogorov-Smirnov test of the
p-values against the uniform distribution. Not part of ``make test`` (about a minute and a half a replicate at
the tests' scale on 2 cores): ``make null-calibration`` (SEEDS=20 by default).

    python benchmarks/null_calibration.py --seeds 20 [--scale tests|default] [--out runs/null-calibration]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import binomtest, kstest

ROOT = Path(__file__).resolve().parents[1]
SCALES = {
    # the tests' scale: 16 bricks of 400x400 pixels (tests/test_controls.py)
    "tests": [ROOT / ".test" / "config" / "config.yaml", ROOT / ".test" / "config" / "controls.yaml"],
    "default": [ROOT / "config" / "config.yaml"],
}


def replicate(seed: int, scale: str, out: Path, cores: int) -> dict:
    work = out / f"seed{seed:03d}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    overlay = {"synthetic": {"seed": 1000 + seed}, "shards": {"seed": seed}, "train": {"seed": seed},
               "evaluate": {"seed": seed}}
    (work / "seed.yaml").write_text(yaml.safe_dump(overlay))
    configs = [*SCALES[scale], ROOT / "config" / "presets" / "null-test.yaml", work / "seed.yaml"]
    t0 = time.time()
    r = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"),
                        "--directory", str(work), "--cores", str(cores), "--configfile", *map(str, configs)],
                       cwd=work, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"replicate {seed} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    m = json.loads((work / "results" / "evaluation" / "metrics.json").read_text())
    row = {"seed": seed, "n": m["n"], "bricks": m["bricks"], "auc": m["auc"], "ci": m["ci95"]["auc"],
           "p": m["p_value"], "verdict": m["verdict_class"], "mda": m["power"]["min_detectable_auc"],
           "naive_p": m["naive"]["mann_whitney_p"], "seconds": time.time() - t0}
    shutil.rmtree(work / "resources", ignore_errors=True)  # the release: the largest part, and rebuilt per seed
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=20, help="replicates (seeds 1..N) [20]")
    p.add_argument("--scale", choices=sorted(SCALES), default="tests", help="config scale [tests]")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "null-calibration", help="working directories")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--alpha", type=float, default=0.05)
    a = p.parse_args(argv)
    rows = []
    print(f"{'seed':>4} {'examples':>8} {'bricks':>6} {'AUC':>6} {'95% CI':>13} {'p':>7} {'naive p':>8} "
          f"{'min. det. AUC':>13} {'verdict':<24} {'s':>5}", flush=True)
    for seed in range(1, a.seeds + 1):
        r = replicate(seed, a.scale, a.out, a.cores)
        rows.append(r)
        print(f"{r['seed']:>4} {r['n']:>8} {r['bricks']:>6} {r['auc']:6.3f} {r['ci'][0]:6.3f}-{r['ci'][1]:.3f} "
              f"{r['p']:7.3f} {r['naive_p']:8.3f} {r['mda']:13.3f} {r['verdict']:<24} {r['seconds']:5.0f}", flush=True)
    p_values = np.array([r["p"] for r in rows])
    k = int(np.sum(p_values < a.alpha))
    ci = binomtest(k, len(rows)).proportion_ci(0.95, method="exact")
    naive = int(np.sum(np.array([r["naive_p"] for r in rows]) < a.alpha))
    print(f"\nfalse-positive rate at alpha = {a.alpha}: {k}/{len(rows)} = {k / len(rows):.3f} "
          f"(exact 95% CI {ci.low:.3f}-{ci.high:.3f}); independent-examples Mann-Whitney: {naive}/{len(rows)}")
    print(f"p-values against the uniform distribution: KS D = {kstest(p_values, 'uniform').statistic:.3f}, "
          f"p = {kstest(p_values, 'uniform').pvalue:.3f}")
    print(f"verdicts: {dict(Counter(r['verdict'] for r in rows))}")
    print(f"wall time: {sum(r['seconds'] for r in rows):.0f} s for {len(rows)} replicates ({a.scale} scale)")
    (a.out / "calibration.json").write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
