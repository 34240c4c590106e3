"""Evaluation at survey scale: the verdict's statistics on 10^5 to 10^7 test examples, on one core.

Every brick tested once means a test set the size of the whole sample (10^7 examples at 60 million planned
cutouts' scale, a fifth of it held out per fold). This times ``evaluate.evaluate`` (the brick-stratified AUC,
the permutation test, the brick bootstrap of three statistics, the catalogue baseline's paired difference, per
fold, per brick, nine binned columns) and the ROC curve of the figure on synthetic predictions with the shape of
a real run's: bricks of ~500 examples (half fakes), five folds, a small real effect plus a per-brick offset.

    .venv/bin/python benchmarks/evaluation.py [--sizes 100000 1000000 10000000] [--bound 600]

Run it with one BLAS thread (the script sets OMP_NUM_THREADS/OPENBLAS_NUM_THREADS=1 before numpy starts) for
"one core". Prints a table of wall times and their ratio to the bound.
"""

from __future__ import annotations

import argparse
import os
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def predictions(n: int, per_brick: int = 500, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """A predictions table of ``n`` examples in bricks of ``per_brick``, and a baseline's scores."""
    rng = np.random.default_rng(seed)
    n_bricks = max(2, n // per_brick)
    brick = rng.integers(0, n_bricks, n)
    label = rng.integers(0, 2, n)
    offset = rng.normal(0, 0.5, n_bricks)[brick]
    logit = 0.2 * label + offset + rng.normal(0, 1, n)
    pred = pd.DataFrame({
        "brick": pd.Series(brick).map(lambda b: f"{b % 3600:04d}p{b // 3600:03d}").astype(str),
        "label": label, "p_fake": 1 / (1 + np.exp(-logit)), "fold": brick % 5,
        "mag_g": rng.uniform(20.5, 24.5, n), "mag_r": rng.uniform(20, 24, n), "mag_z": rng.uniform(19.5, 23.5, n),
        "size": rng.uniform(0.13, 2.0, n),
        **{f"ivar_{b}": rng.gamma(4, 100, n) for b in "grz"},
        "psfsize_r": rng.uniform(1.0, 1.6, n), "nobs_r": rng.integers(1, 5, n).astype(float),
        "ebv": rng.uniform(0.01, 0.1, n),
    })
    baseline = pd.Series(1 / (1 + np.exp(-(0.1 * label + rng.normal(0, 1, n)))))
    return pred, baseline


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--bound", type=float, default=600.0, help="seconds allowed at the largest size [%(default)s]")
    args = ap.parse_args(argv)

    import yaml

    from realfake.evaluation.evaluate import evaluate
    from realfake.evaluation.plots import roc_curve

    ecfg = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "config", "config.yaml")))["evaluate"]
    rows = []
    for n in args.sizes:
        pred, baseline = predictions(n)
        t0 = time.perf_counter()
        m = evaluate(pred, ecfg, baseline=baseline, folds={"k": 5})
        t_eval = time.perf_counter() - t0
        t0 = time.perf_counter()
        roc_curve(pred["label"], pred["p_fake"])
        t_roc = time.perf_counter() - t0
        rows.append({"examples": n, "bricks": m["bricks"], "evaluate_s": t_eval, "roc_s": t_roc,
                     "auc": m["auc"], "p_value": m["p_value"], "method": m["test"]["method"],
                     "ratio_to_bound": (t_eval + t_roc) / args.bound})
        print(f"{n:>10,d} examples: evaluate {t_eval:7.1f} s, ROC {t_roc:5.1f} s", flush=True)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    largest = rows[-1]
    ok = largest["evaluate_s"] + largest["roc_s"] <= args.bound
    print(f"largest size within the bound of {args.bound:.0f} s on one core: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
