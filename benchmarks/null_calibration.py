"""Null calibration: the null test repeated over independent seeds; is the verdict calibrated end to end?

Each replicate is the whole pipeline on its own synthetic release (``synthetic.seed``, and the shuffle and
training seeds, set to the replicate's number) with the null preset's fakes, drawn like the real galaxies. A
sound verdict says ``distinguishable`` in at most alpha of them, and ``no_difference_detected`` (with the bound
its planted defects show) in most of the rest. Prints a table per replicate, the rates of both with their exact
95% intervals, the smallest planted defects found, and a Kolmogorov-Smirnov test of the network test's p-values
against the uniform distribution. Not part of ``make test`` (about a minute and a half a replicate at the tests'
scale on 2 cores): ``make null-calibration`` (SEEDS=40 by default).

    python benchmarks/null_calibration.py --seeds 20 [--scale tests|default] [--out runs/null-calibration]
    python benchmarks/null_calibration.py --reevaluate --out runs/null-calibration   (today's evaluation, same runs)
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
    # the tests' scale: 16 bricks of 400x400 pixels at four times the default density of real galaxies
    # (tests/test_controls.py), matched pairs, 2 folds
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
    t0 = time.time()
    verdict_of(work, scale, cores)
    row = outcome(seed, work, t0)
    shutil.rmtree(work / "resources", ignore_errors=True)  # the release: the largest part, and rebuilt per seed
    return row


def verdict_of(work: Path, scale: str, cores: int, *extra: str) -> None:
    """Run the pipeline in a replicate's directory up to its verdict (the figures do not enter it)."""
    configs = [*SCALES[scale], ROOT / "config" / "presets" / "null-test.yaml", work / "seed.yaml"]
    r = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"),
                        "--directory", str(work), "--cores", str(cores), "--configfile", *map(str, configs),
                        *extra, "--", "results/evaluation/metrics.json"],
                       cwd=work, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"replicate {work.name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")


def reevaluated(seed: int, scale: str, out: Path, cores: int) -> dict:
    """A replicate's verdict again with today's evaluation code: its capacity check and evaluation rerun on its
    cutouts, planted statistics, shards and networks as they are (nothing upstream rebuilt)."""
    t0 = time.time()
    work = out / f"seed{seed:03d}"
    verdict_of(work, scale, cores, "-R", "capacity", "evaluate_cnn", "--allowed-rules", "capacity", "evaluate_cnn",
               "--rerun-triggers", "mtime")
    return outcome(seed, work, t0)


def outcome(seed: int, work: Path, t0: float) -> dict:
    """One replicate's row: its verdict, network test, power, bound and the statistics' own p-values."""
    m = json.loads((work / "results" / "evaluation" / "metrics.json").read_text())
    from realfake.evaluation.capacity import bounds

    found = {k: v["found"]["size"] for k, v in bounds(m["capacity"]).items() if v["found"]} if "capacity" in m else {}
    return {"seed": seed, "n": m["n"], "bricks": m["bricks"], "auc": m["auc"], "ci": m["ci95"]["auc"],
            "p": m["p_value"], "p_family": m.get("p_holm", m["p_value"]), "verdict": m["verdict_class"],
            "mda": m["power"]["min_detectable_auc"], "found": found, "reasons": m["verdict_reasons"],
            "naive_p": m["naive"]["mann_whitney_p"], **spread(m), "seconds": time.time() - t0}


def spread(m: dict) -> dict:
    """What says whether a seed's tests keep their level: the network test's z and each image statistic's own
    p-value within pairs (before Holm's correction), N(0, 1) and uniform under a true null."""
    return {"z": m["test"].get("z"),
            "statistics_p": {k: v["p_value"] for k, v in m.get("image_statistics", {}).items()
                             if isinstance(v, dict) and "p_value" in v}}


def read_back(out: Path) -> list[dict]:
    """A calibration's replicates as its calibration.jsonl holds them; :func:`spread` from each seed's metrics where
    a row predates it."""
    rows = [json.loads(line) for line in (out / "calibration.jsonl").read_text().splitlines() if line.strip()]
    for r in rows:
        path = out / f"seed{r['seed']:03d}" / "results" / "evaluation" / "metrics.json"
        if "statistics_p" not in r and path.exists():
            r.update(spread(json.loads(path.read_text())))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=40, help="replicates (seeds 1..N) [40]")
    p.add_argument("--first", type=int, default=1, help="first seed [1]: a calibration continued in parts")
    p.add_argument("--scale", choices=sorted(SCALES), default="tests", help="config scale [tests]")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "null-calibration", help="working directories")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--summarise", action="store_true", help="no new replicate: the summary of those in --out")
    p.add_argument("--reevaluate", action="store_true",
                   help="no new replicate: those in --out evaluated again with today's evaluation code (capacity check "
                        "and verdict; cutouts, shards and networks kept), into reevaluated.jsonl, and summarised")
    a = p.parse_args(argv)
    if a.summarise:
        summarise(read_back(a.out), a.alpha)
        return 0
    if a.reevaluate:
        rows = []
        for r in read_back(a.out):
            rows.append(reevaluated(r["seed"], a.scale, a.out, a.cores))
            with (a.out / "reevaluated.jsonl").open("a") as f:
                f.write(json.dumps(rows[-1], default=float) + "\n")
            print(f"seed {r['seed']}: {r['verdict']} -> {rows[-1]['verdict']} ({rows[-1]['seconds']:.0f} s)", flush=True)
        summarise(rows, a.alpha)
        return 0
    rows = []
    print(f"{'seed':>4} {'examples':>8} {'bricks':>6} {'AUC':>6} {'95% CI':>13} {'p':>7} {'naive p':>8} "
          f"{'min. det. AUC':>13} {'verdict':<24} {'smallest found':<40} {'s':>5}", flush=True)
    log = a.out / "calibration.jsonl"
    for seed in range(a.first, a.first + a.seeds):
        r = replicate(seed, a.scale, a.out, a.cores)
        rows.append(r)
        with log.open("a") as f:  # each replicate as it ends: a calibration stopped halfway keeps what it did
            f.write(json.dumps(r, default=float) + "\n")
        found = ", ".join(f"{k} {v:g}" for k, v in r["found"].items()) or "-"
        print(f"{r['seed']:>4} {r['n']:>8} {r['bricks']:>6} {r['auc']:6.3f} {r['ci'][0]:6.3f}-{r['ci'][1]:.3f} "
              f"{r['p']:7.3f} {r['naive_p']:8.3f} {r['mda']:13.3f} {r['verdict']:<24} {found:<40} "
              f"{r['seconds']:5.0f}", flush=True)
    summarise(rows, a.alpha)
    print(f"wall time: {sum(r['seconds'] for r in rows):.0f} s for {len(rows)} replicates ({a.scale} scale)")
    (a.out / "calibration.json").write_text(json.dumps(rows, indent=1, default=float))
    return 0


def rate(k: int, n: int) -> str:
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    return f"{k}/{n} = {k / n:.3f} (exact 95% CI {ci.low:.3f}-{ci.high:.3f})"


def summarise(rows: list[dict], alpha: float) -> None:
    """The calibration's answer: how often the verdict was wrong, how often it gave its bound, and which bound."""
    n = len(rows)
    verdicts = Counter(r["verdict"] for r in rows)
    p_values = np.array([r["p"] for r in rows])
    naive = int(np.sum(np.array([r["naive_p"] for r in rows]) < alpha))
    print(f"\nfalse 'distinguishable' (the verdict): {rate(verdicts['distinguishable'], n)}; the network's own test "
          f"rejecting at alpha = {alpha}: {rate(int(np.sum(p_values < alpha)), n)}; an independent-examples "
          f"Mann-Whitney: {naive}/{n}")
    print(f"'no_difference_detected', with its bound: {rate(verdicts['no_difference_detected'], n)}")
    print(f"verdicts: {dict(verdicts)}")
    bounds = Counter(f"{k} {v:g}" for r in rows if r["verdict"] == "no_difference_detected"
                     for k, v in r["found"].items())
    print("smallest planted defect found, over the no-difference seeds: "
          + (", ".join(f"{k}: {c}" for k, c in sorted(bounds.items())) or "none"))
    ks = kstest(p_values, "uniform")
    print(f"network p-values against the uniform distribution: KS D = {ks.statistic:.3f}, p = {ks.pvalue:.3f}")
    z = np.array([r["z"] for r in rows if r.get("z") is not None], float)
    if len(z):  # N(0, 1) where the pairs are exchangeable: a wider spread is a difference the networks pick at random
        print(f"the network test's z (AUC - 0.5 over the permutations' SD): mean {z.mean():+.2f}, SD {z.std(ddof=1):.2f} "
              f"(1 on a true null); |z| > 1.96 in {rate(int(np.sum(np.abs(z) > 1.96)), len(z))} (0.05 on a true null), "
              f"z < -1.96 in {int(np.sum(z < -1.96))}")
    names = sorted({k for r in rows for k in r.get("statistics_p", {})})
    if names:  # each statistic alone, before Holm's correction: rejects in alpha of the seeds, uniform p-values
        print(f"\nthe image statistics' own tests (within pairs, before Holm): rejections at alpha = {alpha}, "
              "and their p-values against the uniform distribution")
        for name in names:
            ps = np.array([r["statistics_p"][name] for r in rows if name in r.get("statistics_p", {})])
            ks = kstest(ps, "uniform")
            print(f"  {name:<16} {rate(int(np.sum(ps < alpha)), len(ps))}; KS D = {ks.statistic:.3f}, "
                  f"p = {ks.pvalue:.3f}")


if __name__ == "__main__":
    sys.exit(main())
