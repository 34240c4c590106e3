"""Figures: ROC and score distributions, and mosaics of real/fake pairs matched in g magnitude."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# The Legacy Survey viewer's colour composite: band -> (RGB plane, scale)
RGB_SCALES = {"g": (2, 6.0), "r": (1, 3.4), "z": (0, 2.2)}


def rgb_composite(planes: dict, m: float = 0.03, q: float = 20.0) -> np.ndarray:
    """g, r, z mapped to RGB with an asinh stretch (Lupton et al. 2004, as the viewer does)."""
    shape = next(iter(planes.values())).shape
    mean = np.zeros(shape)
    for b, img in planes.items():
        mean += np.maximum(0, img * RGB_SCALES[b][1] + m)
    mean /= len(planes)
    f = np.arcsinh(q * mean) / np.sqrt(q)
    mean += (mean == 0) * 1e-6
    rgb = np.zeros(shape + (3,))
    for b, img in planes.items():
        plane, scale = RGB_SCALES[b]
        rgb[..., plane] = (img * scale + m) * f / mean
    return np.clip(rgb, 0, 1)


def roc_figure(pred: pd.DataFrame, metrics: dict, path: str | Path) -> None:
    """ROC curve (left) and the fake-probability histograms of reals and fakes (right)."""
    y, p = pred["label"].to_numpy(), pred["p_fake"].to_numpy()
    thr = np.unique(np.concatenate([[np.inf], np.sort(p)[::-1]]))[::-1]
    tpr = np.array([np.mean(p[y == 1] >= t) for t in thr])
    fpr = np.array([np.mean(p[y == 0] >= t) for t in thr])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.4))
    a.plot(fpr, tpr, color="C3", lw=2, label=f"CNN, AUC = {metrics['auc']:.3f}")
    a.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    lo, hi = metrics["ci95"]["auc"]
    a.set(xlabel="false-positive rate (reals called fake)", ylabel="true-positive rate (fakes called fake)",
          title=f"ROC on the test split (AUC 95% CI {lo:.3f}-{hi:.3f})")
    a.legend(loc="lower right")
    bins = np.linspace(0, 1, 26)
    b.hist(p[y == 0], bins, histtype="step", lw=2, color="C0", label=f"real (N={np.sum(y == 0)})", density=True)
    b.hist(p[y == 1], bins, histtype="step", lw=2, color="C3", label=f"fake (N={np.sum(y == 1)})", density=True)
    b.axvline(0.5, color="k", ls=":", lw=1)
    b.set(xlabel="network's probability of fake", ylabel="density", title="Score distributions")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def matched_pairs(pred: pd.DataFrame, percentiles, seed: int = 1) -> list[tuple[pd.Series, pd.Series, float]]:
    """For each brightness percentile, a real galaxy near it and the fake nearest to it in g magnitude.

    The 99th percentile of brightness is the 1st percentile of magnitude.
    """
    real = pred[(pred["label"] == 0) & np.isfinite(pred["mag_g"])]
    fake = pred[(pred["label"] == 1) & np.isfinite(pred["mag_g"])]
    pairs, used = [], set()
    for pct in percentiles:
        target = np.percentile(real["mag_g"], 100 - pct)
        r = real.iloc[int(np.argmin(np.abs(real["mag_g"].to_numpy() - target)))]
        dist = np.abs(fake["mag_g"].to_numpy() - r["mag_g"])
        dist[[i for i in range(len(fake)) if fake.index[i] in used]] = np.inf
        f = fake.iloc[int(np.argmin(dist))]
        used.add(f.name)
        pairs.append((r, f, pct))
    return pairs


def ordinal(n: float) -> str:
    n = int(round(n))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def mosaic(pairs, cutouts: dict, channels, path: str | Path, title: str = "") -> None:
    """Rows R, F, R, F, ...: the colour composite, then the six channels; g magnitude on the right.

    ``cutouts`` maps a predictions row's index to its (S, S, C) array.
    """
    ncol = 1 + len(channels)
    nrow = 2 * len(pairs)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.45 * ncol + 1.2, 1.45 * nrow + 0.6), squeeze=False)
    for k, (r, f, pct) in enumerate(pairs):
        for j, (row, tag) in enumerate(((r, "R"), (f, "F"))):
            ax = axes[2 * k + j]
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
            colour = "C0" if tag == "R" else "C3"
            ax[0].set_ylabel(f"{tag}", rotation=0, fontsize=14, color=colour, labelpad=12, va="center")
            ax[-1].yaxis.set_label_position("right")
            ax[-1].set_ylabel(f"g={row['mag_g']:.2f}\np={row['p_fake']:.2f}", rotation=0, fontsize=9,
                              labelpad=28, va="center")
            if j == 0:
                ax[0].set_title(f"{ordinal(pct)} percentile of brightness", fontsize=8, loc="left")
    for c, name in enumerate(["g r z"] + list(channels)):
        axes[0, c].set_xlabel(name)
        axes[0, c].xaxis.set_label_position("top")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_cutouts(pred: pd.DataFrame, rows, shard_dir) -> dict:
    """Read the cutouts of ``rows`` (predictions index) from the test shards (memory-mapped)."""
    out = {}
    for i in rows:
        r = pred.loc[i]
        x = np.load(Path(shard_dir) / f"xtest_{int(r['shard'])}.npy", mmap_mode="r")
        out[i] = np.array(x[int(r["index"])])
    return out
