"""Why the network separates fakes from reals: simple image statistics and attribution maps.

The statistics are measured on the test cutouts, in one band, around the
centre: the radial light profile, concentration, asymmetry, the noise level
against the inverse variance, and the light of off-centre neighbours. A
two-sample Kolmogorov-Smirnov test says which of them differ between the real
and injected populations (for the figure); :func:`tested_within` tests them as
the verdict tests the network, within pairs or bricks, for the verdict's "what
differs"; they point at what the injection gets wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from realfake.shards.shardset import load_shard

RADII = np.arange(0, 17)  # annulus edges of the radial profile (pixels)
STATISTICS = {
    "concentration": "flux(r < 3 px) / flux(r < 8 px)",
    "asymmetry": "sum |I - I rotated 180 deg| / sum |I|, r < 8 px",
    "noise_chi": "robust std of image x sqrt(invvar), r > 24 px (1 = noise as the invvar says)",
    "neighbours": "fraction of pixels at r > 10 px above 5 sigma",
    # one statistic made for each kind of planted defect (realfake.evaluation.plant), on the sum of the bands' images
    "second_moment": "sqrt of the light's second moment about the centre, Gaussian weight of sigma 3 px (PSF, size)",
    "flux_ratio": "flux(r < 6 px) / the catalogue's flux (extinction-corrected), g + r + z (a flux scale)",
    "centroid_offset": "distance of the light's centroid from the centre, Gaussian weight of sigma 2 px (position)",
}
# the radius of the aperture of flux_ratio and the sigmas of the weights (pixels)
APERTURE_PX, MOMENT_SIGMA_PX, CENTROID_SIGMA_PX = 6.0, 3.0, 2.0


def _radius(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = size // 2
    return np.hypot(yy - c, xx - c)


def _centred(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    c = size // 2
    return yy - c, xx - c


def defect_statistics(x: np.ndarray, channels, mags: np.ndarray | None = None) -> pd.DataFrame:
    """Per cutout of ``x`` (N, S, S, C) the statistics made for the planted defects (:data:`STATISTICS`), measured on
    the sum of the bands' images; ``mags`` (N, bands): the catalogue's magnitudes of those bands (flux_ratio)."""
    bands = [b for b in ("g", "r", "z") if b in channels]
    img = sum(x[..., channels.index(b)].astype(np.float64) for b in bands)
    dy, dx = _centred(x.shape[1])
    r2 = dy**2 + dx**2
    wm, wc = np.exp(-r2 / (2 * MOMENT_SIGMA_PX**2)), np.exp(-r2 / (2 * CENTROID_SIGMA_PX**2))
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (img * wm).sum((1, 2))
        moment = np.sqrt(np.clip((img * wm * r2).sum((1, 2)) / f, 0, None))
        fc = (img * wc).sum((1, 2))
        offset = np.hypot((img * wc * dy).sum((1, 2)) / fc, (img * wc * dx).sum((1, 2)) / fc)
        ratio = np.full(len(x), np.nan)
        if mags is not None:
            cat = (10.0 ** (-0.4 * (np.asarray(mags, float) - 22.5))).sum(1)
            ratio = img[:, r2 < APERTURE_PX**2].sum(1) / cat
    out = pd.DataFrame({"second_moment": moment, "flux_ratio": ratio, "centroid_offset": offset})
    return out.replace([np.inf, -np.inf], np.nan)


def cutout_statistics(x: np.ndarray, channels, band: str = "r", mags: np.ndarray | None = None
                      ) -> tuple[pd.DataFrame, np.ndarray]:
    """Per cutout of ``x`` (N, S, S, C): the statistics of :data:`STATISTICS` and the normalised radial profile;
    ``mags``: the catalogue's magnitudes per band (:func:`defect_statistics`)."""
    img, ivar = x[..., channels.index(band)].astype(np.float64), x[..., channels.index(f"ivar_{band}")]
    r = _radius(x.shape[1])
    inner, core, outer, far = r < 8, r < 3, r > 10, r > 24
    f8 = img[:, inner].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        conc = img[:, core].sum(1) / f8
        rot = img[:, ::-1, ::-1]
        asym = np.abs(img - rot)[:, inner].sum(1) / np.abs(img)[:, inner].sum(1)
        chi = img * np.sqrt(np.clip(ivar, 0, None))
        good = ivar > 0
        noise = np.array([1.4826 * np.median(np.abs(c[m & far] - np.median(c[m & far]))) if (m & far).any() else np.nan
                          for c, m in zip(chi, good)])
        neigh = ((chi > 5) & outer & good).sum((1, 2)) / np.maximum((outer & good).sum((1, 2)), 1)
        prof = np.stack([img[:, (r >= lo) & (r < hi)].mean(1) for lo, hi in zip(RADII[:-1], RADII[1:])], 1)
        prof = prof / prof[:, :1]
    stats = pd.DataFrame({"concentration": conc, "asymmetry": asym, "noise_chi": noise, "neighbours": neigh})
    stats = pd.concat([stats, defect_statistics(x, channels, mags)], axis=1)
    return stats.replace([np.inf, -np.inf], np.nan), prof


def catalogue_mags(rows: pd.DataFrame, channels) -> np.ndarray | None:
    """The rows' catalogue magnitudes in the bands of ``channels`` (None where the table has none)."""
    cols = [f"mag_{b}" for b in ("g", "r", "z") if b in channels]
    return rows[cols].to_numpy(float) if set(cols) <= set(rows) else None


def compare(pred: pd.DataFrame, shard_dir, channels, max_examples: int = 4000, band: str = "r"):
    """Statistics of the test cutouts, real against fake: (per-example table, per-statistic summary, profiles)."""
    from scipy.stats import ks_2samp

    rows = pred.sort_values(["shard", "index"]).head(max_examples)  # the first shards of each fold
    tables, profiles = [], []
    if "split" not in rows:
        rows = rows.assign(split="test")
    for (split, shard), grp in rows.groupby(["split", "shard"], sort=True):
        x = load_shard(Path(shard_dir) / f"x{split}_{int(shard)}.npy", mmap_mode="r")
        st, prof = cutout_statistics(np.asarray(x[grp["index"].to_numpy()]), list(channels), band,
                                     catalogue_mags(grp, channels))
        st.index = grp.index
        tables.append(st)
        profiles.append(pd.DataFrame(prof, index=grp.index))
    stats = pd.concat(tables).join(rows[["label", "mag_g", "p_fake"]])
    prof = pd.concat(profiles)
    summary = {}
    for name, what in STATISTICS.items():
        real = stats.loc[stats["label"] == 0, name].dropna()
        fake = stats.loc[stats["label"] == 1, name].dropna()
        ks = ks_2samp(real, fake) if len(real) and len(fake) else None
        summary[name] = {
            "definition": what,
            "median_real": float(real.median()) if len(real) else None,
            "median_fake": float(fake.median()) if len(fake) else None,
            "ks_statistic": float(ks.statistic) if ks else None,
            "ks_p_value": float(ks.pvalue) if ks else None,
        }
    return stats, summary, prof


def tested_within(stats: pd.DataFrame, pred: pd.DataFrame, alpha: float = 0.05, n_boot: int = 200,
                  seed: int = 1, classifier_permutations: int | None = 1000) -> dict:
    """Each image statistic of :data:`STATISTICS` tested as the verdict tests the network's score: its AUC within
    matched pairs (``pred["pair"]``) or else within bricks (fakes higher), its brick-bootstrap interval, the
    two-sided p-value of the normal approximation of its permutation distribution (exact moments); on matched
    pairs, the statistics combined by a classifier too (realfake.evaluation.combined, its test refitting it under
    ``classifier_permutations`` permutations; None: not tested); Holm-corrected over all of them, ``differs`` where
    Holm's p < ``alpha``. Unlike the pooled KS tests beside it, this respects the bricks, and the pairs' shared
    catalogue values: it is evidence of the kind the verdict uses."""
    from scipy.stats import norm

    from realfake.evaluation import combined
    from realfake.evaluation.scores import clustered, matched_pairs
    from realfake.evaluation.stats import holm

    d = stats.join(pred[["brick"] + (["pair"] if "pair" in pred else [])], how="left")
    out = {}
    for name in [n for n in STATISTICS if n in stats]:  # (those the table measured)
        ok = d[name].notna().to_numpy()
        sub = d[ok]
        pairs = matched_pairs(pred.loc[sub.index]) if "pair" in sub else None
        if pairs is None and "pair" in sub and (sub["pair"] > 0).all():  # pairs cut by the sample: whole ones only
            whole = sub.groupby("pair")["label"].transform("size") == 2
            sub = sub[whole]
            pairs = sub["pair"].to_numpy()
        y = sub["label"].to_numpy(int)
        if len(sub) < 4 or not 0 < y.sum() < len(y):
            continue
        c = clustered(y, sub[name].to_numpy(float), sub["brick"].astype(str).to_numpy(), n_boot, 0, seed,
                      pooled=False, strata=pairs)
        z = c["test"].get("z", 0.0)
        out[name] = {"auc": c["auc"], "ci95": c["ci95"]["auc"], "p_value": float(2 * norm.sf(abs(z))),
                     "within": "pairs" if pairs is not None else "bricks",
                     "median_real": float(sub.loc[sub["label"] == 0, name].median()),
                     "median_fake": float(sub.loc[sub["label"] == 1, name].median())}
    if classifier_permutations and "pair" in d:
        rows = pred.loc[stats.index, [c for c in ("label", "brick", "pair", "fold") if c in pred]]
        entry = combined.tested(stats[list(out)], rows, classifier_permutations, n_boot, seed)
        if entry is not None:
            out[combined.NAME] = entry
    for name, ph in zip(out, holm([v["p_value"] for v in out.values()])):
        out[name]["p_holm"] = float(ph)
        out[name]["differs"] = bool(ph < alpha)
    return out


def holm_family(tested: dict, alpha: float, network_p: float | None = None) -> float | None:
    """Holm's correction over one family of tests: the network's (``network_p``, where it is one of them) and the
    image statistics' of ``tested`` (:func:`tested_within`). Marks each statistic's ``p_holm_family`` and ``found``
    (Holm's p < alpha and its interval off 0.5, either way) and returns the network's adjusted p (None without it)."""
    from realfake.evaluation.stats import holm

    head = [] if network_p is None else [network_p]
    adjusted = holm(head + [v["p_value"] for v in tested.values()])
    for v, ph in zip(tested.values(), adjusted[len(head):]):
        lo, hi = v["ci95"]
        v["p_holm_family"] = float(ph)
        v["found"] = bool(ph < alpha and (lo > 0.5 or hi < 0.5))
    return float(adjusted[0]) if head else None


def medians(v: dict, versus: str = "against") -> str:
    """"fakes 0.3 against reals 0.33" for a statistic of :func:`tested_within`; for the statistics classifier, whose
    score has no unit, the statistics it weighs most (realfake.evaluation.combined.leaning)."""
    from realfake.evaluation.combined import leaning

    if "weights" in v:
        return f"weighing most {leaning(v['weights'])}"
    return f"fakes {v['median_fake']:.3g} {versus} reals {v['median_real']:.3g}"


def differs_statement(tested: dict) -> str:
    """The image statistics that differ, in one sentence ("" where none was tested)."""
    if not tested:
        return ""
    within = next(iter(tested.values()))["within"]
    # (Holm's p with the network's test where the statistics joined it: evaluate.appearance_family)
    names = [f"{name.replace('_', ' ')} ({medians(v)}, AUC {v['auc']:.2f}, Holm p = "
             f"{v.get('p_holm_family', v['p_holm']):.2g})" for name, v in tested.items()
             if v.get("found", v["differs"])]
    if not names:
        return (f"No image statistic ({', '.join(n.replace('_', ' ') for n in tested)}) differs within {within} after "
                "Holm's correction.")
    return f"What differs in the pixels, tested within {within} (Holm-corrected): " + "; ".join(names) + "."


def statistics_figure(stats: pd.DataFrame, summary: dict, profiles: pd.DataFrame, path, band: str = "r",
                      tested: dict | None = None) -> None:
    """Radial profiles in two magnitude ranges; each statistic's AUC within pairs (or bricks) with its interval,
    Holm-corrected (``tested``: metrics.json's ``image_statistics``, the verdict's evidence); and the distributions
    of each statistic, real against fake, titled with that test (the pooled KS test where none was made)."""
    import textwrap

    import matplotlib.pyplot as plt

    from realfake.evaluation import combined
    from realfake.figures import save

    names = [n for n in STATISTICS if n in stats]
    fig, axes = plt.subplots(3, 4, figsize=(16, 10.5))
    mid = (RADII[:-1] + RADII[1:]) / 2 * 0.262
    med = stats["mag_g"].median()
    for ax, (label, sel) in zip(axes[0, :2], ((f"g < {med:.1f}", stats["mag_g"] < med),
                                              (f"g >= {med:.1f}", stats["mag_g"] >= med))):
        for lab, name, color in ((0, "real", "C0"), (1, "fake", "C3")):
            p = profiles[sel & (stats["label"] == lab)]
            if len(p):
                # median and its standard error (1.2533 sigma / sqrt(N) for a normal population)
                m, e = p.median(), 1.2533 * p.std() / np.sqrt(len(p))
                ax.plot(mid, m, "o-", ms=3, color=color, label=f"{name} (N={len(p)})")
                ax.fill_between(mid, np.clip(m - e, 1e-3, None), m + e, color=color, alpha=0.2, lw=0)
        ax.set(yscale="log", ylim=(1e-3, 1.5), xlabel="radius (arcsec)", ylabel="surface brightness / centre",
               title=f"Median radial profile, {band} band, {label}")
        ax.legend(fontsize=8)
    forest = axes[0, 2]
    tested = tested or {}
    shown = [n for n in names if n in tested] + [n for n in tested if n not in names]  # (the classifier last)
    for i, n in enumerate(shown):
        v = tested[n]
        hit = v.get("found", v.get("differs"))
        forest.errorbar(v["auc"], i, xerr=[[v["auc"] - v["ci95"][0]], [v["ci95"][1] - v["auc"]]], fmt="o",
                        color="C3" if hit else "0.3", capsize=3)
    forest.axvline(0.5, color="0.6", ls=":")
    forest.set_yticks(range(len(shown)), [n.replace("_", " ") for n in shown], fontsize=8)
    forest.invert_yaxis()
    within = next(iter(tested.values()))["within"] if tested else "pairs"
    forest.set(xlabel=f"AUC within {within} (fakes higher), 95% CI",
               title="The verdict's test of each statistic\n(red: differs after Holm's correction)")
    forest.title.set_fontsize(9)
    weights = tested.get(combined.NAME, {}).get("weights")
    if weights:  # what the statistics classifier leans on
        lean = axes[0, 3]
        lean.barh(range(len(weights)), list(weights.values()), color=["C3" if v > 0 else "C0" for v in weights.values()])
        lean.axvline(0, color="0.6", lw=0.8)
        lean.set_yticks(range(len(weights)), [n.replace("_", " ") for n in weights], fontsize=8)
        lean.invert_yaxis()
        lean.set(xlabel="weight (robust z; mean over folds)",
                 title="What the statistics classifier weighs\n(red: higher in the fakes of their pairs)")
        lean.title.set_fontsize(9)
    else:
        axes[0, 3].axis("off")
    for ax, name in zip(axes[1:].flat, names):
        real = stats.loc[stats["label"] == 0, name].dropna()
        fake = stats.loc[stats["label"] == 1, name].dropna()
        both = pd.concat([real, fake])
        if both.empty:
            continue
        lo, hi = np.nanpercentile(both, [1, 99])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
        ax.hist(real.clip(lo, hi), bins, histtype="step", lw=2, color="C0", density=True, label="real")
        ax.hist(fake.clip(lo, hi), bins, histtype="step", lw=2, color="C3", density=True, label="fake")
        if name in tested:
            v = tested[name]
            title = (f"{name}: AUC {v['auc']:.2f} ({v['ci95'][0]:.2f}-{v['ci95'][1]:.2f}) within {v['within']}, "
                     f"Holm p = {v.get('p_holm_family', v['p_holm']):.2g}")
        else:
            s = summary[name]
            title = f"{name}: KS D = {s['ks_statistic']:.2f}, p = {s['ks_p_value']:.2g} (pooled)"
        ax.set(xlabel=textwrap.fill(STATISTICS[name], 55), ylabel="density", title=textwrap.fill(title, 50))
        ax.title.set_fontsize(8)
        ax.xaxis.label.set_fontsize(7)
        ax.legend(fontsize=8)
    for ax in list(axes[1:].flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("What differs between real and injected galaxies (test cutouts)", fontsize=11)
    fig.tight_layout()
    save(fig, path)


def integrated_gradients(model, x: np.ndarray, channels, steps: int = 32) -> np.ndarray:
    """Integrated gradients of P(fake) for cutouts ``x`` (N, S, S, C).

    The path runs from an empty sky (image channels 0, inverse variances as
    observed) to the cutout, so the attribution is that of the light.
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(np.asarray(x), tf.float32)
    light = tf.constant([0.0 if c.startswith("ivar") else 1.0 for c in channels], tf.float32)
    grads = []
    for a in np.linspace(0.0, 1.0, steps + 1, dtype=np.float32):
        xa = x * (1.0 - light + a * light)
        with tf.GradientTape() as tape:
            tape.watch(xa)
            p = model(xa, training=False)[:, 1]
        grads.append(tape.gradient(p, xa))
    avg = (tf.add_n(grads[:-1]) + tf.add_n(grads[1:])) / (2.0 * steps)  # trapezoid rule
    return (x * light * avg).numpy()


def attribution_figure(rows, cutouts: dict, attributions: dict, channels, path) -> None:
    """Per galaxy: the colour composite, then where the light pushed P(fake) up (red) or down (blue)."""
    import matplotlib.pyplot as plt

    from realfake.figures import image_grid_labels, rgb_composite, save

    bands = [c for c in channels if not c.startswith("ivar")]
    fig, axes = plt.subplots(len(rows), 1 + len(bands) + 1, figsize=(2.0 * (len(bands) + 2), 1.9 * len(rows) + 0.6),
                             squeeze=False)
    for ax, (row, tag, header) in zip(axes, rows):
        x, ig = cutouts[row.name], attributions[row.name]
        ax[0].imshow(rgb_composite({b: x[..., channels.index(b)] for b in "grz"}), origin="lower")
        ax[0].set_ylabel(f"{tag}\np={row['p_fake']:.2f}", rotation=0, labelpad=22, va="center",
                         color="C0" if tag == "R" else "C3")
        total = ig[..., [channels.index(b) for b in bands]].sum(-1)
        vmax = max(np.abs(total).max(), 1e-12)
        for k, b in enumerate(bands):
            ax[1 + k].imshow(ig[..., channels.index(b)], origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax[-1].imshow(total, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        if header:
            ax[0].set_title(header, fontsize=8, loc="left")
    image_grid_labels(axes, ["g r z"] + [f"IG {b}" for b in bands] + ["IG, all bands"])
    fig.suptitle("Integrated gradients of P(fake): red pixels push towards fake, blue towards real", fontsize=10)
    fig.tight_layout()
    save(fig, path, dpi=100)
