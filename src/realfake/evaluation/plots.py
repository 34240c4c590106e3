"""Figures: ROC and score distributions, and mosaics of real/fake pairs matched in g magnitude."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from realfake.figures import image_grid_labels, rgb_composite, save  # noqa: E402
from realfake.shards.shardset import load_shard  # noqa: E402


def roc_figure(pred: pd.DataFrame, metrics: dict, path: str | Path) -> None:
    """ROC curve (left) and the fake-probability histograms of reals and fakes (right)."""
    y, p = pred["label"].to_numpy(), pred["p_fake"].to_numpy()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.4))
    fpr, tpr = roc_curve(y, p)
    a.plot(fpr, tpr, color="C3", lw=2, label=f"CNN, pooled AUC = {metrics['auc_pooled']:.3f}")
    if "p_fake_baseline" in pred and pred["p_fake_baseline"].notna().all():
        fb, tb = roc_curve(y, pred["p_fake_baseline"].to_numpy())
        a.plot(fb, tb, color="C2", lw=1.5, ls="-.",
               label=f"catalogue baseline, AUC = {metrics.get('baseline', {}).get('auc_pooled', np.nan):.3f}")
    a.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    lo, hi = metrics["ci95"]["auc"]
    a.set(xlabel="false-positive rate (reals called fake)", ylabel="true-positive rate (fakes called fake)",
          title=f"ROC, every brick tested once\nbrick-stratified AUC {metrics['auc']:.3f} (95% CI {lo:.3f}-{hi:.3f})")
    a.legend(loc="lower right")
    bins = np.linspace(0, 1, 26)
    b.hist(p[y == 0], bins, histtype="step", lw=2, color="C0", label=f"real (N={np.sum(y == 0)})", density=True)
    b.hist(p[y == 1], bins, histtype="step", lw=2, color="C3", label=f"fake (N={np.sum(y == 1)})", density=True)
    b.axvline(0.5, color="k", ls=":", lw=1)
    b.set(xlabel="network's probability of fake", ylabel="density", title="Score distributions")
    b.legend()
    fig.tight_layout()
    save(fig, path)


def roc_curve(y, p):
    """(false-positive rates, true-positive rates) at every distinct threshold, O(N log N)."""
    y, p = np.asarray(y).astype(bool), np.asarray(p, float)
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(ps[1:] != ps[:-1]), len(ps) - 1]  # last index of each tie run
    tp, fp = np.cumsum(ys)[last], np.cumsum(~ys)[last]
    return np.r_[0, fp / max(fp[-1], 1)], np.r_[0, tp / max(tp[-1], 1)]


def matched_pairs(pred: pd.DataFrame, percentiles) -> list[tuple[pd.Series, str, str]]:
    """Mosaic rows: for each brightness percentile, a real galaxy near it and its matched pair's fake (the
    examples are matched pairs), or else the fake nearest in g magnitude.

    The 99th percentile of brightness is the 1st percentile of magnitude. Each
    fake is used once (matched pairs: a percentile's real may repeat where few pairs are).
    """
    real = pred[(pred["label"] == 0) & np.isfinite(pred["mag_g"])]
    fake = pred[(pred["label"] == 1) & np.isfinite(pred["mag_g"])]
    if "pair" in pred and (pred["pair"] > 0).all():  # matched pairs (shards.balance: matched): the pairs themselves
        partner = pd.Series(fake.index, index=fake["pair"].to_numpy())
        rows = []
        for pct in percentiles:
            target = np.percentile(real["mag_g"], 100 - pct)
            r = real.iloc[int(np.argmin(np.abs(real["mag_g"].to_numpy() - target)))]
            rows += [(r, "R", f"{ordinal(pct)} percentile of brightness"),
                     (fake.loc[partner[r["pair"]]], "F", "its pair")]
        return rows
    rows, used = [], np.zeros(len(fake), dtype=bool)
    for pct in percentiles:
        target = np.percentile(real["mag_g"], 100 - pct)
        r = real.iloc[int(np.argmin(np.abs(real["mag_g"].to_numpy() - target)))]
        dist = np.where(used, np.inf, np.abs(fake["mag_g"].to_numpy() - r["mag_g"]))
        k = int(np.argmin(dist))
        used[k] = True
        rows += [(r, "R", f"{ordinal(pct)} percentile of brightness"), (fake.iloc[k], "F", "")]
    return rows


def extremes(pred: pd.DataFrame, k: int = 5) -> list[tuple[pd.Series, str, str]]:
    """Mosaic rows: the ``k`` fakes the network is surest are fake, and the ``k`` most fake-looking reals."""
    fakes = pred[pred["label"] == 1].nlargest(k, "p_fake")
    reals = pred[pred["label"] == 0].nlargest(k, "p_fake")
    rows = [(r, "F", "fakes the network is surest about" if i == 0 else "") for i, (_, r) in enumerate(fakes.iterrows())]
    rows += [(r, "R", "reals the network finds most fake-looking" if i == 0 else "")
             for i, (_, r) in enumerate(reals.iterrows())]
    return rows


def ordinal(n: float) -> str:
    n = int(round(n))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def mosaic(rows, cutouts: dict, channels, path: str | Path, title: str = "") -> None:
    """One row per galaxy: the colour composite, then the channels; R/F on the left, g and P(fake) on the right.

    ``rows`` are (predictions row, "R" or "F", header or ""); ``cutouts`` maps a
    predictions row's index to its (S, S, C) array.
    """
    ncol = 1 + len(channels)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.45 * ncol + 1.2, 1.45 * len(rows) + 0.6), squeeze=False)
    for ax, (row, tag, header) in zip(axes, rows):
        x = cutouts[row.name]
        planes = {b: x[..., channels.index(b)] for b in "grz"}
        ax[0].imshow(rgb_composite(planes), origin="lower", interpolation="nearest")
        for c, name in enumerate(channels):
            img = x[..., c]
            if name.startswith("ivar"):
                ax[1 + c].imshow(img, origin="lower", cmap="gray", vmin=0, vmax=1.25 * max(img.max(), 1e-12),
                                 interpolation="nearest")
            else:
                s = max(np.percentile(np.abs(img), 50), 1e-4)
                ax[1 + c].imshow(np.arcsinh(img / s), origin="lower", cmap="gray", vmin=-2, interpolation="nearest")
        ax[0].set_ylabel(tag, rotation=0, fontsize=14, color="C0" if tag == "R" else "C3", labelpad=12, va="center")
        ax[-1].yaxis.set_label_position("right")
        ax[-1].set_ylabel(f"g={row['mag_g']:.2f}\np={row['p_fake']:.2f}", rotation=0, fontsize=9, labelpad=28,
                          va="center")
        if header:
            ax[0].set_title(header, fontsize=8, loc="left")
    image_grid_labels(axes, ["g r z"] + list(channels))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path, dpi=100)


def load_cutouts(pred: pd.DataFrame, rows, shard_dir) -> dict:
    """Read the cutouts of ``rows`` (predictions index) from the test shards (memory-mapped)."""
    out = {}
    for i in rows:
        if i in out:
            continue
        r = pred.loc[i]
        split = r["split"] if "split" in r else "test"  # pooled predictions name the fold their example lies in
        x = load_shard(Path(shard_dir) / f"x{split}_{int(r['shard'])}.npy", mmap_mode="r")
        out[i] = np.array(x[int(r["index"])])
    return out


def _band(ax, lo, hi, y, ylo, yhi, color, label):
    mid = (np.asarray(lo) + np.asarray(hi)) / 2
    ax.errorbar(mid, y, xerr=(np.asarray(hi) - np.asarray(lo)) / 2, fmt="o", color=color, ms=4, lw=1, label=label)
    ax.fill_between(np.ravel(np.column_stack([lo, hi])), np.repeat(ylo, 2), np.repeat(yhi, 2), color=color,
                    alpha=0.2, lw=0)


def binned_figure(metrics: dict, path: str | Path) -> None:
    """Brick-stratified AUC with 95% bands against g magnitude, r - z colour, size and depth; bins whose
    Holm-corrected test rejects are marked."""
    from realfake import BINNED

    keys = [k for k in BINNED if metrics.get(f"by_{k}")]
    ncol = min(3, max(1, len(keys)))
    nrow = -(-max(1, len(keys)) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.8 * nrow), squeeze=False, sharey=True)
    for ax, key in zip(axes.flat, keys):
        b = pd.DataFrame(metrics[f"by_{key}"])
        auc_ci = np.array(b["auc_ci95"].tolist(), float)
        _band(ax, b["lo"], b["hi"], b["auc"], auc_ci[:, 0], auc_ci[:, 1], "C3", "AUC (brick-stratified)")
        sig = b.get("significant", pd.Series(False, index=b.index)).astype(bool)
        if sig.any():
            ax.plot(((b["lo"] + b["hi"]) / 2)[sig], b["auc"][sig] + 0.06, "*", color="k", ms=9,
                    label="Holm-corrected p < 0.05")
        ax.axhline(0.5, color="k", ls="--", lw=1)
        for _, r in b.iterrows():
            ax.annotate(f"{r.n_real}R\n{r.n_fake}F", ((r.lo + r.hi) / 2, 0.02), ha="center", fontsize=7,
                        xycoords=("data", "axes fraction"))
        if key.startswith("ivar"):
            ax.set_xscale("log")
        ax.set(xlabel=BINNED[key], ylim=(0, 1.1))
        ax.legend(loc="upper left", fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("AUC (95% CI)")
    fig.suptitle("Where the network tells fakes from reals: 0.5 = chance; observing-condition bins are test-set quartiles",
                 fontsize=10)
    fig.tight_layout()
    save(fig, path)


def folds_figure(metrics: dict, path: str | Path) -> None:
    """AUC per fold (each fold's bricks, scored by the model that never saw them) and per brick."""
    folds = pd.DataFrame(metrics.get("by_fold", []))
    bricks = pd.DataFrame(metrics.get("by_brick", [])).sort_values("auc", na_position="first")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 2.2]})
    if not folds.empty:
        a.bar(folds["fold"].astype(str), folds["auc"], color="C3", alpha=0.7)
        for i, r in enumerate(folds.itertuples()):
            a.annotate(f"{r.bricks} bricks\n{r.n_real}R {r.n_fake}F", (i, 0.02), ha="center", fontsize=7,
                       xycoords=("data", "axes fraction"))
    a.axhline(0.5, color="k", ls="--", lw=1)
    a.axhline(metrics["auc"], color="C3", ls=":", lw=1, label=f"all folds: {metrics['auc']:.3f}")
    a.set(xlabel="fold", ylabel="brick-stratified AUC", ylim=(0, 1.05), title="Per fold")
    a.legend(fontsize=8)
    if not bricks.empty:
        n = bricks["n_real"] + bricks["n_fake"]
        b.scatter(np.arange(len(bricks)), bricks["auc"], s=10 + 60 * n / max(n.max(), 1), color="C0", alpha=0.7)
        if len(bricks) <= 40:
            b.set_xticks(np.arange(len(bricks)), bricks["brick"], rotation=90, fontsize=7)
    b.axhline(0.5, color="k", ls="--", lw=1)
    b.set(xlabel="brick (sorted by AUC; marker area: examples)", ylabel="AUC within the brick", ylim=(-0.02, 1.02),
          title="Per brick")
    fig.tight_layout()
    save(fig, path)


def calibration_figure(pred: pd.DataFrame, path: str | Path, n_bins: int = 10) -> None:
    """Reliability diagram (fraction of fakes against P(fake)) and the confusion matrix at 0.5."""
    y, p = pred["label"].to_numpy(int), pred["p_fake"].to_numpy(float)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, n_bins - 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.5, 4.2))
    n = np.bincount(idx, minlength=n_bins)
    ok = n > 0
    frac = np.bincount(idx, weights=y, minlength=n_bins)[ok] / n[ok]
    mean_p = np.bincount(idx, weights=p, minlength=n_bins)[ok] / n[ok]
    err = np.sqrt(frac * (1 - frac) / n[ok])
    a.errorbar(mean_p, frac, yerr=err, fmt="o-", color="C3", ms=4, label="network")
    a.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    a.axhline(y.mean(), color="C0", ls=":", lw=1, label=f"fraction of fakes ({y.mean():.2f})")
    a.set(xlabel="predicted P(fake), binned", ylabel="observed fraction of fakes", xlim=(0, 1), ylim=(0, 1),
          title="Calibration on the test split")
    a.legend(fontsize=8, loc="upper left")
    cm = np.array([[np.sum((y == t) & ((p >= 0.5) == pr)) for pr in (0, 1)] for t in (0, 1)])
    b.imshow(cm, cmap="Blues", vmin=0)
    for t in (0, 1):
        for pr in (0, 1):
            b.text(pr, t, f"{cm[t, pr]}\n({cm[t, pr] / max(cm[t].sum(), 1):.0%} of row)", ha="center",
                   va="center", color="white" if cm[t, pr] > cm.max() / 2 else "black")
    b.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["called real", "called fake"],
          yticklabels=["real", "fake"], title="Confusion matrix (P(fake) >= 0.5)")
    fig.tight_layout()
    save(fig, path)


def training_figure(histories: dict, path: str | Path, gate: dict | None = None) -> None:
    """Loss and AUC per epoch of every fold's network (validation dashed), from their training logs."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    for k, (fold, csv) in enumerate(sorted(histories.items())):
        h = pd.read_csv(csv, na_values=["NA"])
        for ax, key in zip(axes, ("loss", "auc")):
            if key not in h:
                continue
            ax.plot(h["epoch"] + 1, h[key], "o-", color=f"C{k}", ms=3, label=f"fold {fold} training")
            if f"val_{key}" in h and h[f"val_{key}"].notna().any():
                ax.plot(h["epoch"] + 1, h[f"val_{key}"], "s--", color=f"C{k}", ms=3, alpha=0.7,
                        label=f"fold {fold} validation")
    axes[0].axhline(np.log(2), color="k", ls=":", lw=1)
    axes[0].annotate("chance (ln 2)", (1, np.log(2)), fontsize=7, va="bottom")
    axes[1].axhline(0.5, color="k", ls=":", lw=1)
    for ax, key in zip(axes, ("loss", "AUC")):
        ax.set(xlabel="epoch", ylabel=key)
    axes[1].legend(fontsize=6, ncol=2)
    from realfake.evaluation.learning import training_counts

    verdict = "" if gate is None else (" - diagnostics: every fold learned, converged and generalised" if gate["passed"]
                                       else " - diagnostics: " + training_counts(gate))
    fig.suptitle(f"Training curves of the fold networks{verdict}", fontsize=10)
    fig.tight_layout()
    save(fig, path)
