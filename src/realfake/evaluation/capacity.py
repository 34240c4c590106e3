"""What this run can find: planted defects on its own real galaxies, tested as the verdict tests its fakes.

A "no difference detected" is worth what the run would have found. Each brick's real galaxies are split in two
random halves (:func:`realfake.evaluation.plant.halves`), one half is perturbed by a known defect of a known size
(:func:`realfake.evaluation.plant.perturb`: the sensitivity grid's planted source), the halves are paired within the brick
by the run's own calipers (``shards.match``, :func:`realfake.shards.census.match_pairs`), and the pairs are tested by the
verdict's appearance family: each image statistic of :data:`realfake.evaluation.diagnostics.STATISTICS` within pairs, and
the statistics classifier (realfake.evaluation.combined, cross-fitted over the bricks dealt into folds), Holm-corrected
together with the network's test. The network is not trained on the planted pairs here (that is ``make
sensitivity``, minutes per scenario): its test is counted as not rejecting (p = 1). Holm's adjusted p-values only
grow when one p-value grows, so what is found here the verdict's family finds whatever the network would have said:
a lower bound on the run's capacity. Each scenario is planted ``plantings`` times (other halves, other noise), and
a defect counts as found when every planting finds it.

The planted pairs are as many as the run's test pairs (at most): the examples of the recipe, not more.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from realfake import BANDS, FAKE, REAL
from realfake.evaluation.diagnostics import STATISTICS, cutout_statistics, holm_family, tested_within
from realfake.evaluation.sensitivity import DESCRIBE, NULL_KIND

KEYS = ["planting", "kind", "size", "brick", "id", "label", "pair"]
# one tested planting of one scenario
ROW_COLUMNS = ["planting", "kind", "size", "pairs", "bricks", "found", "statistic", "p_holm", "auc"]


def brick_planted(brick: str, fraction: float, seed: int) -> bool:
    """Whether a brick is among the planted ones: all where ``fraction`` >= 1, else a share ``fraction`` of the
    bricks drawn by their names' hashes (the same bricks whichever batch or job asks)."""
    from realfake.evaluation.plant import _seed

    return fraction >= 1 or (_seed(seed, "capacity", brick) >> 11) / 2.0**53 < fraction


def planted_statistics(path, grid: dict, plantings: int, seed: int, calipers: dict, null_row: bool = True,
                       max_reals: int | None = None) -> pd.DataFrame:
    """The image statistics of one brick file's real galaxies, planted: for each planting (seed + k) and each
    (kind, size) of ``grid``, one row per real galaxy in a matched pair of the two halves (:data:`KEYS` and the
    statistics). ``max_reals``: at most that many of the brick's reals, drawn by their ids' hashes (the cost of a
    survey's dense bricks bounded; the synthetic release's bricks hold fewer)."""
    import h5py

    from realfake.cutouts.brickfile import read_sources
    from realfake.shards.census import example_keys, match_pairs
    from realfake.evaluation.plant import brick_psfsize, halves, perturb, source_rng

    sources = read_sources(path)
    rows = np.flatnonzero(sources["label"].to_numpy() == REAL)
    if max_reals is not None and len(rows) > max_reals:
        keys = example_keys(sources.iloc[rows], seed)
        rows = np.sort(rows[np.argsort(keys, kind="stable")[:max_reals]])
    reals = sources.iloc[rows].reset_index(drop=True)
    scenarios = ([(NULL_KIND, 0.0)] if null_row else []) + [(k, float(s)) for k, sizes in grid.items()
                                                            for s in sizes or []]
    if len(reals) < 2 or not scenarios:
        return empty_table()
    with h5py.File(path, "r") as f:
        channels = [c.decode() if isinstance(c, bytes) else str(c) for c in f["cutouts"].attrs["channels"]]
        stamps = f["cutouts"][np.sort(rows)] if len(rows) else None
    stamps = stamps[np.argsort(np.argsort(rows))]  # (h5py reads in increasing order; rows are)
    psf = (brick_psfsize(reals, path) if any(k in ("psf", "flux") and s for k, s in scenarios) else None)
    mags = reals[[f"mag_{b}" for b in BANDS if b in channels]].to_numpy(float)
    out = []
    for k in range(plantings):
        s = seed + k
        label = halves(reals, s)
        src = reals.assign(label=label)
        keys = example_keys(src, s)
        pair = match_pairs(src, calipers, keys)
        use = np.flatnonzero(pair > 0)
        if not len(use):
            continue
        base = cutout_statistics(stamps[use], channels, "r", mags[use])[0]
        for kind, size in scenarios:
            # perturb(): the fake half changed; the real half too only where the defect brings noise with it (flux)
            touch = use if kind == "flux" else use[label[use] == FAKE]
            x = stamps[touch].copy()
            for i, r in enumerate(touch):
                band_psf = ({b: psf.iloc[r][f"psfsize_{b}"] for b in BANDS} if psf is not None else {})
                x[i] = perturb(x[i], channels, kind, size, band_psf, source_rng(s, reals.at[r, "brick"],
                                                                                reals.at[r, "id"]), half=int(label[r]))
            st = base.copy()
            if len(touch):
                st.iloc[np.searchsorted(use, touch)] = cutout_statistics(x, channels, "r", mags[touch])[0].to_numpy()
            out.append(pd.concat([pd.DataFrame({
                "planting": k, "kind": kind, "size": size, "brick": reals["brick"].to_numpy()[use],
                "id": reals["id"].to_numpy()[use], "label": label[use],
                "pair": (pair[use] >> np.uint64(1)).astype(np.int64)}), st.reset_index(drop=True)], axis=1))
    return pd.concat(out, ignore_index=True) if out else empty_table()


def empty_table() -> pd.DataFrame:
    """A table of planted statistics with no rows (a brick or batch with nothing to plant)."""
    return pd.DataFrame(columns=KEYS + list(STATISTICS))


def subsample_pairs(d: pd.DataFrame, n_pairs: int | None, seed: int) -> pd.DataFrame:
    """At most ``n_pairs`` of the pairs of ``d``, drawn at random (all of them where there are fewer)."""
    ids = pd.unique(d["pair"])
    if n_pairs is None or len(ids) <= n_pairs:
        return d
    keep = np.random.default_rng(seed).choice(ids, n_pairs, replace=False)
    return d[d["pair"].isin(keep)]


def capacity(table: pd.DataFrame, alpha: float, n_pairs: int | None = None, seed: int = 1) -> dict:
    """Each planted scenario tested by the verdict's family (module docstring): per (kind, size) the plantings
    that found it, and per kind the smallest size found in every planting."""
    rows = []
    for (planting, kind, size), g in table.groupby(["planting", "kind", "size"], sort=True):
        g = subsample_pairs(g.reset_index(drop=True), n_pairs, seed + int(planting))
        tested = tested_within(g[list(STATISTICS) + ["label"]], g[["brick", "pair", "label"]], alpha, seed=seed)
        # the family of the verdict: the network's test (here: not rejecting, p = 1) and the statistics'
        holm_family(tested, alpha, network_p=1.0)
        best = min(tested, key=lambda k: tested[k]["p_holm_family"]) if tested else None
        rows.append({"planting": int(planting), "kind": kind, "size": float(size), "pairs": int(len(g) // 2),
                     "bricks": int(g["brick"].nunique()), "found": any(v["found"] for v in tested.values()),
                     "statistic": best, "p_holm": tested[best]["p_holm_family"] if best else float("nan"),
                     "auc": tested[best]["auc"] if best else float("nan")})
    return result(pd.DataFrame(rows, columns=ROW_COLUMNS), alpha)


def result(df: pd.DataFrame, alpha: float) -> dict:
    """capacity.json from the table of tested plantings (one row per planting, kind and size: ``found``, the
    ``statistic`` that found it best, its ``p_holm`` and ``auc``, ``pairs``, ``bricks``)."""
    scenarios = summary(df)
    return {"alpha": alpha, "plantings": int(df["planting"].nunique()) if len(df) else 0,
            "pairs": int(df["pairs"].median()) if len(df) else 0, "rows": df.to_dict(orient="records"),
            "scenarios": scenarios, "statement": statement(scenarios)}


def summary(df: pd.DataFrame) -> list[dict]:
    """Per (kind, size): how many plantings found it, of how many, and the statistic that found it most."""
    out = []
    for (kind, size), g in df.groupby(["kind", "size"], sort=False):
        top = g.sort_values("p_holm").iloc[0]
        out.append({"kind": kind, "size": float(size), "what": DESCRIBE[kind](float(size)),
                    "found_in": int(g["found"].sum()), "plantings": int(len(g)), "found": bool(g["found"].all()),
                    "statistic": top["statistic"], "auc": float(g["auc"].median()), "pairs": int(g["pairs"].median())})
    return out


def bounds(capacity_result: dict) -> dict:
    """Per planted kind: the smallest size found in every planting (``found``, a scenario of :func:`summary`) and
    the largest size below it not found (``missed``); a kind with nothing found has no bound."""
    out = {}
    for sc in capacity_result["scenarios"]:
        if sc["kind"] == NULL_KIND:
            continue
        k = out.setdefault(sc["kind"], {"found": None, "missed": None})
        if sc["found"] and (k["found"] is None or sc["size"] < k["found"]["size"]):
            k["found"] = sc
    for sc in capacity_result["scenarios"]:
        k = out.get(sc["kind"])
        if k is None or sc["found"]:
            continue
        if (k["found"] is None or sc["size"] < k["found"]["size"]) and (k["missed"] is None or
                                                                         sc["size"] > k["missed"]["size"]):
            k["missed"] = sc
    return out


def null_found(capacity_result: dict) -> dict | None:
    """The null scenario (nothing planted) where it was found as a defect counts as found, in every planting: the
    check is then not valid. (One planting of it found is what a test at alpha does once in twenty times, and with
    three plantings about once in seven runs; every planting, at most once in twenty.)"""
    for sc in capacity_result["scenarios"]:
        if sc["kind"] == NULL_KIND and sc["found"]:
            return sc
    return None


def statement(scenarios: list[dict]) -> str:
    """The bound in physical units, from the scenarios of :func:`summary`: what the run found, what it did not, and
    the kinds it leaves unbounded."""
    if not scenarios:
        return "No planted defect could be tested (no brick held two real galaxies that the calipers pair)."
    res = {"scenarios": scenarios}
    b = bounds(res)
    found = [v["found"] for v in b.values() if v["found"]]
    missed = [v["missed"] for v in b.values() if v["missed"]]
    unbounded = [k for k, v in b.items() if not v["found"]]
    n = scenarios[0]["plantings"]
    parts = []
    if found:
        parts.append("this run found " + _listed([f"{s['what']} ({s['found_in']} of {n} plantings, by the "
                                                 f"{s['statistic'].replace('_', ' ')})" for s in found], "and"))
    if missed:
        parts.append("did not find " + _listed([f"{s['what']} ({s['found_in']} of {n})" for s in missed], "or"))
    text = ", and ".join(parts) if found else "this run found none of the planted defects" + (
        ": it " + parts[0] if parts else "")
    if found:
        text += ": the injected model is closer to the real galaxies than " + ("that" if len(found) == 1 else "those")
    if unbounded and found:
        text += "; " + ", ".join(f"{KIND_NAMES.get(k, k)}: none found, so none is bounded" for k in unbounded)
    null = null_found(res)
    if null:
        text += (f". WARNING: with nothing planted, every planting ({null['found_in']} of {n}) was found: the check "
                 "is not valid")
    return text[0].upper() + text[1:] + "."


def _listed(items: list[str], conjunction: str) -> str:
    """"a", "a and b", "a; b; and c": the items are long and hold commas themselves."""
    if len(items) <= 2:
        return f" {conjunction} ".join(items)
    return "; ".join(items[:-1]) + f"; {conjunction} " + items[-1]


KIND_NAMES = {"psf": "PSF widths", "flux": "fluxes", "noise": "noise levels", "noise_unrecorded": "unrecorded noise",
              "offset": "offsets"}


def figure(result: dict, path) -> None:
    """Per planted kind, the AUC of the statistic that found each size best, against the size; filled: found in
    every planting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from realfake.figures import save
    from realfake.evaluation.sensitivity import TITLES

    df = pd.DataFrame(result["rows"], columns=ROW_COLUMNS)
    kinds = [k for k in pd.unique(df["kind"]) if k != NULL_KIND] if len(df) else []
    ncol = max(1, min(4, len(kinds)))
    nrow = max(1, int(np.ceil(len(kinds) / ncol)))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.2 * nrow), squeeze=False)
    sc = {(s["kind"], s["size"]): s for s in result["scenarios"]}
    # a statistic may be lower for the perturbed half (concentration under a wider PSF): its AUC either way
    df = df.assign(auc=np.maximum(df["auc"], 1 - df["auc"]))
    null = df[df["kind"] == NULL_KIND]
    for ax, kind in zip(axes.flat, kinds):
        g = df[df["kind"] == kind]
        ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
        if len(null):
            ax.axhspan(null["auc"].min(), null["auc"].max(), color="0.85", lw=0, label="nothing planted")
        for size, gs in g.groupby("size"):
            s = sc[(kind, size)]
            ax.scatter(np.full(len(gs), size), gs["auc"], s=30, edgecolor="C0",
                       facecolor="C0" if s["found"] else "white", zorder=3)
            ax.annotate(f"{s['found_in']}/{s['plantings']}", (size, gs["auc"].max()), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=8)
        ax.set_xlabel(TITLES.get(kind, kind))
        ax.set_ylabel("AUC within pairs, best statistic\n(either direction)")
        ax.set_ylim(0.45, max(0.8, float(g["auc"].max()) + 0.06))
    for ax in list(axes.flat)[len(kinds):]:
        ax.axis("off")
    fig.suptitle(f"Planted on this run's real galaxies, tested as the verdict tests (filled: found in every planting; "
                 f"{result['pairs']} pairs)", fontsize=10)
    fig.tight_layout()
    save(fig, path)


