"""The sensitivity grid: what a run could have seen, in physical units (docs/evaluation.md, "Sensitivity").

Each scenario (source, kind, size) is a whole run of the pipeline (shards, folds, training, the verdict's
statistics) on examples whose "fakes" carry one known defect: planted on the run's own real galaxies
(:mod:`realfake.evaluation.plant`) or rendered by the synthetic release (``synthetic.fake_*``). A size of 0 is the
null row: nothing changed, so it must not be found. This module names the scenarios, maps a kind and size
to the synthetic release's keys, and turns the scenarios' metrics into the table, the figure and the
sentence the main verdict quotes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from realfake.inputs.bricks import PIXSCALE_ARCSEC
from realfake.evaluation.plant import KINDS as PLANTED_KINDS
from realfake.evaluation.stats import p_text

SOURCES = ("planted", "synthetic")
NULL_KIND = "none"  # the null row's kind: nothing changed (size 0)

# kind -> (synthetic release key, its value for a size): a size is the defect's departure from the truth
SYNTHETIC_KINDS = {
    "psf": ("fake_psf_scale", lambda s: 1.0 + s),
    "flux": ("fake_flux_scale", lambda s: 1.0 + s),
    "sersic": ("fake_sersic_offset", lambda s: s),
    "rhalf": ("fake_rhalf_scale", lambda s: 1.0 + s),
    "ellipticity": ("fake_ellipticity", lambda s: "distortion" if s else "reduced_shear"),
    "shot_noise": ("fake_shot_noise", lambda s: s),
    "invvar": ("fake_invvar_scale", lambda s: 1.0 + s),
    "offset": ("fake_offset", lambda s: s),
}
KINDS = {"planted": PLANTED_KINDS, "synthetic": tuple(SYNTHETIC_KINDS)}

# kind -> what a size of that kind means, as the verdict says it
DESCRIBE = {
    NULL_KIND: lambda s: "no defect",
    "psf": lambda s: f"a PSF {s:.0%} too wide",
    "flux": lambda s: f"fluxes {s:.0%} too high",
    "noise": lambda s: f"noise variance {s:.0%} too high (in the inverse variance too)",
    "noise_unrecorded": lambda s: f"noise variance {s:.0%} too high, not in the inverse variance",
    "offset": lambda s: f"centres {s:g} pixel{'s' if s != 1 else ''} ({s * PIXSCALE_ARCSEC:.2f}\") off",
    "sersic": lambda s: f"a Sersic index off by {s:g}",
    "rhalf": lambda s: f"half-light radii {s:.0%} too large",
    "ellipticity": lambda s: "ellipticities drawn as distortions, not reduced shears",
    "shot_noise": lambda s: f"extra noise of {s:g} x the model's variance over each fake",
    "invvar": lambda s: f"inverse variances {s:.0%} off their pixels",
}
TITLES = {NULL_KIND: "null (no defect)", "psf": "PSF FWHM too wide (fraction)", "flux": "flux too high (fraction)",
          "noise": "noise added, recorded (fraction of variance)",
          "noise_unrecorded": "noise added, not recorded (fraction of variance)", "offset": "centre offset (pixels)",
          "sersic": "Sersic index offset", "rhalf": "half-light radius too large (fraction)",
          "ellipticity": "ellipticity convention (1 = distortion)", "shot_noise": "extra shot noise (x model)",
          "invvar": "inverse variance off (fraction)"}
COLUMNS = ["source", "kind", "size", "what", "examples", "bricks", "auc", "auc_lo", "auc_hi", "p_value", "detected",
           "verdict_class", "training_passed", "min_detectable_auc", "p_said", "classifier_auc", "classifier_p"]


def size_name(size: float) -> str:
    """A size as it appears in paths and tables: 0.1, 0.25, 1 (the shortest exact form)."""
    return f"{float(size):g}"


def scenarios(cfg: dict) -> list[tuple[str, str, str]]:
    """(source, kind, size name) of every scenario of the ``sensitivity:`` block, the null row first."""
    source = cfg["source"]
    if source not in SOURCES:
        raise ValueError(f"sensitivity.source must be one of {SOURCES}, not {source!r}")
    out = [(source, NULL_KIND, "0")] if cfg.get("null_row", True) else []
    for kind, sizes in cfg["grid"].items():
        if not sizes:  # a layered config file adds to the base config's grid: `kind: []` takes a kind out
            continue
        if kind not in KINDS[source]:
            raise ValueError(f"sensitivity.grid: {kind!r} is not a defect of the {source} source; its kinds: "
                             f"{', '.join(KINDS[source])} (`{kind}: []` takes it out of a grid set in another config file)")
        for s in sizes:
            if float(s) < 0:
                raise ValueError(f"sensitivity.grid.{kind}: sizes are departures from the truth, >= 0; not {s}")
            out.append((source, kind, size_name(s)))
    if len(set(out)) != len(out):
        raise ValueError("sensitivity.grid lists a size twice")
    return out


def synthetic_defect(synthetic: dict, kind: str, size: str) -> dict:
    """The ``synthetic:`` block of a synthetic-source scenario: the run's, with the one defect set."""
    out = dict(synthetic)
    if kind != NULL_KIND:
        key, value = SYNTHETIC_KINDS[kind]
        out[key] = value(float(size))
    return out


def table(metrics: dict) -> pd.DataFrame:
    """One row per scenario from its ``metrics.json``: ``metrics`` maps (source, kind, size name) -> metrics."""
    from realfake.evaluation.combined import NAME

    rows = []
    for (source, kind, size), m in metrics.items():
        lo, hi = m["ci95"]["auc"]
        s = float(size)
        learned = (m.get("image_statistics") or {}).get(NAME, {})  # the statistics classifier, beside the network
        rows.append({"source": source, "kind": kind, "size": s, "what": DESCRIBE[kind](s), "examples": m["n"],
                     "bricks": m["bricks"], "auc": m["auc"], "auc_lo": lo, "auc_hi": hi, "p_value": m["p_value"],
                     "detected": m["verdict_class"] == "distinguishable", "verdict_class": m["verdict_class"],
                     "training_passed": bool(m.get("training", {}).get("passed", False)),
                     "min_detectable_auc": m["power"]["min_detectable_auc"],
                     "p_said": p_text(m["p_value"], m.get("test")),
                     "classifier_auc": learned.get("auc", np.nan), "classifier_p": learned.get("p_value", np.nan)})
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(["source", "kind", "size"], key=lambda c: c.map(_null_first) if c.name == "kind" else c,
                          kind="stable").reset_index(drop=True)


def _null_first(kind):
    return "" if kind == NULL_KIND else kind


def _fmt(r) -> str:
    return f"AUC {r['auc']:.2f}, {r['p_said']}"


def quote(df: pd.DataFrame) -> str:
    """What the grid says this run would have found, kind by kind: the smallest size found and the largest
    not found (the sentence the main verdict quotes)."""
    if not len(df):
        return ""
    parts = []
    null = df[df["kind"] == NULL_KIND]
    for kind, g in df[df["kind"] != NULL_KIND].groupby("kind", sort=False):
        g = g.sort_values("size")
        found, missed = g[g["detected"]], g[~g["detected"]]
        said = []
        if len(found):
            r = found.iloc[0]
            said.append(f"{r['what']}: found ({_fmt(r)})")
        below = missed[missed["size"] < found["size"].min()] if len(found) else missed
        if len(below):
            r = below.iloc[-1]
            said.append(f"{r['what']}: not found ({_fmt(r)})")
        odd = missed[missed["size"] > found["size"].min()] if len(found) else missed.iloc[0:0]
        if len(odd):
            said.append("not found at the larger " + ", ".join(size_name(v) for v in odd["size"]))
        parts.append("; ".join(said))
    src = df["source"].iloc[0]
    head = (f"Sensitivity ({'defects planted on half of this run' + chr(39) + 's real galaxies' if src == 'planted' else 'defects rendered by the synthetic release'}, "
            f"{int(df['examples'].median())} examples in {int(df['bricks'].median())} bricks a scenario): ")
    tail = ""
    if len(null):
        r = null.iloc[0]
        tail = (f" With no defect: {_fmt(r)}, not found, as it must be." if not r["detected"] else
                f" WARNING: the null row (no defect) was found ({_fmt(r)}): the grid's findings are not valid.")
    return head + " ".join(p[0].upper() + p[1:] + "." for p in parts) + tail


def figure(df: pd.DataFrame, path) -> None:
    """AUC (brick-bootstrap 95% interval) against defect size, one panel per kind; filled: found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from realfake.figures import save

    kinds = [k for k in pd.unique(df["kind"]) if k != NULL_KIND] or [NULL_KIND]
    null = df[df["kind"] == NULL_KIND]
    ncol = min(3, len(kinds))
    nrow = int(np.ceil(len(kinds) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    for ax, kind in zip(axes.flat, kinds):
        g = pd.concat([null.assign(kind=kind), df[df["kind"] == kind]]).sort_values("size")
        ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
        ax.plot(g["size"], g["auc"], color="C0", lw=1)
        err = np.vstack([g["auc"] - g["auc_lo"], g["auc_hi"] - g["auc"]])
        ax.errorbar(g["size"], g["auc"], yerr=err, fmt="none", ecolor="C0", capsize=3)
        styles = (("found", g["detected"], "C0", "C0"), ("not found", ~g["detected"], "C0", "white"))
        for label, sel, edge, face in styles:
            ax.scatter(g["size"][sel], g["auc"][sel], s=40, zorder=3, edgecolor=edge, facecolor=face, label=label)
        ax.plot(g["size"], g["min_detectable_auc"], color="C3", lw=0.8, ls="--",
                label="min. detectable AUC (the verdict's rule, 80% of runs)")
        ax.set_xlabel(TITLES.get(kind, kind))
        ax.set_ylabel("ROC AUC (95% CI)")
        ax.set_ylim(min(0.4, float(g["auc_lo"].min()) - 0.02), 1.01)
    for ax in list(axes.flat)[len(kinds):]:
        ax.axis("off")
    handles = {}
    for ax in axes.flat:  # every style that some panel shows, once
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    src = df["source"].iloc[0] if len(df) else ""
    fig.suptitle(f"What the classifier finds, by defect size ({src} defects; size 0: no defect)", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save(fig, path)
