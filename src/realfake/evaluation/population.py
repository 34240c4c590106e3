"""The population answer: can the catalogue alone tell the fakes from the real galaxies?

No injection campaign draws exactly the selected reals' magnitudes, colours and sizes. Whether it did is a
question about the catalogues, and it is answered here apart from the appearance question of the network (do the
fakes *look* like real galaxies of the same catalogue values?, on matched pairs: census.match_pairs). Every
selected example of the brick files counts, matched or not: a classifier of catalogue quantities alone
(baseline.cross_fit: magnitudes, colours, size, observing conditions) is cross-fitted on folds of whole bricks and
tested like the network (brick-stratified AUC, labels permuted within bricks, bricks resampled); each quantity
alone says which carry the difference, Holm-corrected.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from realfake import FAKE, REAL
from realfake.evaluation import stats
from realfake.evaluation.baseline import cross_fit, features_of
from realfake.shards.census import _hash_strings

# The catalogue quantities of the population answer (the source tables' columns; colours derived)
QUANTITIES = ("mag_g", "mag_r", "mag_z", "g_r", "r_z", "size", "psfsize_g", "psfsize_r", "psfsize_z", "nobs_g",
              "nobs_r", "nobs_z", "ebv")
NAMES = {"mag_g": "g magnitude", "mag_r": "r magnitude", "mag_z": "z magnitude", "g_r": "g - r colour",
         "r_z": "r - z colour", "size": "half-light radius", "psfsize_g": "g PSF size", "psfsize_r": "r PSF size",
         "psfsize_z": "z PSF size", "nobs_g": "g exposures", "nobs_r": "r exposures", "nobs_z": "z exposures",
         "ebv": "E(B-V)"}


def brick_folds(bricks, k: int, seed: int) -> np.ndarray:
    """Fold of each example: its brick's, bricks dealt in an order drawn from their names and the seed."""
    names = np.unique(np.asarray(bricks, str))
    order = names[np.argsort(_hash_strings([f"{seed}:{b}" for b in names]), kind="stable")]
    fold_of = {b: i % k for i, b in enumerate(order)}
    return np.array([fold_of[b] for b in np.asarray(bricks, str)])


def population(src: pd.DataFrame, ecfg: dict, folds: int, pairs: int | None = None) -> dict:
    """The population answer from every selected example (``src``: the brick files' source tables): the catalogue
    classifier's AUC, interval and p-value, the quantities that carry the difference, the classes' medians, and
    the common support (``pairs``: the matched pairs the appearance answer uses)."""
    alpha, seed = ecfg["alpha"], ecfg["seed"]
    src = src.reset_index(drop=True)
    y, bricks = src["label"].to_numpy(int), src["brick"].astype(str).to_numpy()
    n_real, n_fake = int((y == REAL).sum()), int((y == FAKE).sum())
    out = {"n_real": n_real, "n_fake": n_fake, "bricks": int(len(np.unique(bricks)))}
    if pairs is not None:
        out["common_support"] = {
            "pairs": int(pairs), "share_of_fakes": pairs / n_fake if n_fake else float("nan"),
            "share_of_reals": pairs / n_real if n_real else float("nan"),
            "note": "pairs of a fake and a real galaxy of the same brick and catalogue values (shards.match): the "
                    "examples of the appearance answer"}
    k = max(2, min(folds, out["bricks"]))
    if out["bricks"] < 2 or not n_real or not n_fake:
        return {**out, "auc": float("nan"), "p_value": float("nan"), "differs": False,
                "sentence": "The population could not be compared: fewer than two bricks, or one class only."}
    man = features_of(src, QUANTITIES)
    man["split"] = [f"fold{f}" for f in brick_folds(bricks, k, seed)]
    man["label"], man["brick"], man["rs"], man["id"] = y, bricks, src["rs"].to_numpy(), src["id"].to_numpy()
    present = [c for c in QUANTITIES if man[c].notna().any()]  # (older brick files lack some)
    p = cross_fit(man, seed, features=present)["p_fake"].reindex(man.index).to_numpy()
    from realfake.evaluation.scores import clustered

    c = clustered(y, p, bricks, ecfg["bootstrap"], ecfg["permutations"], seed, alpha, ecfg["power"])
    out.update({key: c[key] for key in ("auc", "ci95", "p_value", "test", "tv_lower_limit95")})
    out["folds"], out["features"] = k, present
    out["by_quantity"] = by_quantity(man, y, bricks, alpha)
    carried = [q for q in out["by_quantity"] if q["significant"]]
    out["differs"] = bool(out["p_value"] < alpha and out["ci95"]["auc"][0] > 0.5)
    out["carried_by"] = [q["quantity"] for q in carried]
    out["sentence"] = sentence(out, carried)
    return out


def by_quantity(q: pd.DataFrame, y, bricks, alpha: float) -> list[dict]:
    """Each quantity alone: the classes' medians, its brick-stratified AUC (fakes higher) and the two-sided
    p-value of the normal approximation of its within-brick permutation distribution, Holm-corrected."""
    rows = []
    _, codes = stats.brick_codes(bricks)
    for name in QUANTITIES:
        v = q[name].to_numpy(float)
        ok = np.isfinite(v)
        if ok.sum() < 4 or len(np.unique(v[ok])) < 2:
            continue
        s = stats.per_brick(y[ok], v[ok], codes[ok])
        pairs = s["pairs"].sum()
        if not pairs:
            continue
        z, _ = stats.normal_test(s["u"].sum(), pairs, s["var_u"].sum())
        from scipy.stats import norm

        rows.append({"quantity": name, "name": NAMES[name], "auc": float(s["u"].sum() / pairs),
                     "p_value": float(max(2 * norm.sf(abs(float(z))), 1e-300)),
                     "median_real": float(np.median(v[ok & (y == REAL)])) if (ok & (y == REAL)).any() else None,
                     "median_fake": float(np.median(v[ok & (y == FAKE)])) if (ok & (y == FAKE)).any() else None})
    for r, ph in zip(rows, stats.holm([r["p_value"] for r in rows])):
        r["p_holm"] = float(ph)
        r["significant"] = bool(ph < alpha and abs(r["auc"] - 0.5) > 0.02)
    return sorted(rows, key=lambda r: -abs(r["auc"] - 0.5))


def sentence(m: dict, carried: list[dict]) -> str:
    """The population answer in one or two sentences."""
    from realfake.evaluation.stats import p_text

    (lo, hi) = m["ci95"]["auc"]
    head = (f"Population: a classifier of catalogue quantities alone, on all {m['n_real'] + m['n_fake']} selected "
            f"examples, reaches AUC {m['auc']:.3f} (95% CI {lo:.3f}-{hi:.3f}, {p_text(m['p_value'], m['test'])})")
    if not m["differs"]:
        return head + ": the fakes' catalogue values are not told from the real galaxies'."
    what = "; ".join(f"{r['name']} {r['median_fake']:.3g} against {r['median_real']:.3g} (median, fakes against "
                     f"reals)" if i == 0 else f"{r['name']} {r['median_fake']:.3g} against {r['median_real']:.3g}"
                     for i, r in enumerate(carried[:3]))
    return (head + ": the injection drew another population than the selected real galaxies"
            + (f" ({what})" if what else "") + ". This is a difference of the catalogues, not of the injected "
            "model's appearance, which the headline answers on matched pairs.")
