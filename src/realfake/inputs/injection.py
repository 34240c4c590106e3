"""obiwan injection runs in every layout they were written in: detected from what is on disk, read into one form.

Where each layout keeps its files is described once, in :data:`realfake.inputs.layout.LAYOUTS`.

Fluxes are observed (Milky Way extinction applied) in every layout. Where a
catalogue has no ``mw_transmission_<b>``, it is derived from the release: the
transmission of the nearest source of the brick's Tractor catalogue (the
release's own E(B-V) at a few arcsec), said in the log and the cut flow.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from realfake import BANDS
from realfake.inputs import layout
from realfake.inputs.catalogs import CatalogError, native, nearest_rows, read_table
from realfake.inputs.layout import LAYOUT_NAMES, LAYOUTS, Layout, Run, seed_sort_key

log = logging.getLogger(__name__)


class LayoutError(ValueError):
    """An injection root whose layout cannot be told, or is not the one asked for; the message names the folders."""


def detect_layout(root, brick: str, wanted: str = "auto") -> Layout | None:
    """The layout of ``brick``'s injection runs under ``root`` (None: the brick has no seed folder in any layout).

    ``wanted`` other than ``auto`` is checked against what is on disk: a brick
    laid out otherwise is a LayoutError naming both.
    """
    found = [lay for lay in LAYOUTS.values() if lay.seed_folders(root, brick)]
    if len(found) > 1:
        raise LayoutError(f"brick {brick}: seed folders of several obiwan layouts under {root}: "
                          + ", ".join(f"{lay.name} ({lay.path(lay.seeds, root, brick)})" for lay in found)
                          + "; set release.injection_layout")
    if wanted != "auto":
        if wanted not in LAYOUTS:
            raise LayoutError(f"release.injection_layout must be auto or one of {LAYOUT_NAMES}, not {wanted!r}")
        if found and found[0].name != wanted:
            raise LayoutError(f"brick {brick}: release.injection_layout is {wanted}, but {root} holds its runs in "
                              f"the {found[0].name} layout ({found[0].path(found[0].seeds, root, brick)})")
        return LAYOUTS[wanted] if found else None
    return found[0] if found else None


def is_pattern(name: str) -> bool:
    """Whether a ``release.rs`` entry is a shell pattern (``rs*``) rather than a seed folder's name."""
    return any(ch in name for ch in "*?[")


def choose_seeds(found: list[str], wanted) -> tuple[list[str], list[str]]:
    """(seed folders to read, names asked for that are not there) from ``release.rs``.

    ``wanted`` is ``"all"`` (every seed folder found, whatever its variant) or a
    list of names and shell patterns (``rs*``, ``more_*``, ``file0_rs*_skip0``);
    a plain name not found is returned as absent, for the cut flow.
    """
    if wanted == "all":
        return list(found), []
    chosen, absent = [], []
    for w in wanted:
        if is_pattern(w):
            chosen += [f for f in found if fnmatch.fnmatchcase(f, w) and f not in chosen]
        elif w in found:
            chosen += [w] if w not in chosen else []
        else:
            absent.append(w)
    return sorted(chosen, key=seed_sort_key), absent


def read_fakes(run: Run, release: pd.DataFrame | None = None) -> pd.DataFrame:
    """The fakes of one run in the common form (``id, ra, dec, x, y`` 0-indexed, ``flux_<b>``,
    ``mw_transmission_<b>``, ``size``, ``type``), restricted to those injected.

    ``release`` (the brick's release Tractor catalogue, common form) gives the
    transmissions a layout does not carry. attrs: ``path``, ``n_listed``,
    ``n_not_injected``, ``mw_derived``, ``has_type``.
    """
    lay, path = run.layout, run.simcat
    t = read_table(path, f"{lay.name} simulation catalogue")
    cols = {c.lower(): c for c in t.dtype.names}
    want = {k: v for k, v in lay.columns.items() if v in cols or k not in lay.optional}
    missing = [v for v in want.values() if v not in cols]
    if missing:
        raise CatalogError(f"brick {run.brick} {run.rs}: {path} ({lay.name} layout) lacks columns {missing}")
    df = pd.DataFrame({k: native(t[cols[v]]) for k, v in want.items()})
    if "id" not in df:
        df.insert(0, "id", np.arange(len(df), dtype=np.int64))
    df["x"], df["y"] = df["x"].astype(float), df["y"].astype(float)
    if lay.one_indexed:  # everything downstream is 0-indexed like Tractor's bx, by
        df["x"] -= 1
        df["y"] -= 1
    mw = [f"mw_transmission_{b}" for b in BANDS]
    derive = [c for c in mw if c not in df and c not in cols]
    for c in mw:
        if c not in df and c in cols:
            df[c] = native(t[cols[c]])
    if derive:
        if release is None or not len(release):
            raise CatalogError(f"brick {run.brick} {run.rs}: {path} has no {derive} and the release's Tractor "
                               "catalogue has no source to derive them from")
        nearest = nearest_rows(release, df["x"], df["y"])
        for c in derive:
            df[c] = release[c].to_numpy(float)[nearest]
        log.info("brick %s %s: %s has no %s: derived from the release (the nearest Tractor source's)", run.brick,
                 run.rs, path.name, ", ".join(derive))
    df["type"] = np.char.strip(t[cols["type"]].astype("U4")) if "type" in cols else "SIM"
    n_listed = len(df)
    keep = np.ones(n_listed, bool)
    if lay.not_injected and lay.not_injected in cols:
        keep &= ~native(t[cols[lay.not_injected]]).astype(bool)
    added = run.ids_added
    if added is not None and added.exists():
        ids = read_table(added, "list of injected ids")
        keep &= df["id"].isin(native(ids[ids.dtype.names[0]])).to_numpy()
    df = df[keep].reset_index(drop=True)
    df.attrs.update(path=str(path), n_listed=n_listed, n_not_injected=int((~keep).sum()), mw_derived=bool(derive),
                    has_type="type" in cols, layout=lay.name)
    return df


def match_detections(fakes: pd.DataFrame, rerun: pd.DataFrame, radius_pix: float) -> np.ndarray:
    """For each fake, the row of its detection in the rerun Tractor catalogue, or -1 when none lies within
    ``radius_pix``; a detection is given to one fake at most (the nearest)."""
    match = np.full(len(fakes), -1, np.int64)
    if not len(fakes) or not len(rerun):
        return match
    from scipy.spatial import cKDTree

    dist, nearest = cKDTree(np.column_stack([rerun["x"], rerun["y"]])).query(
        np.column_stack([fakes["x"], fakes["y"]]), distance_upper_bound=radius_pix)
    found = np.isfinite(dist)
    claimed = set()
    for i in np.flatnonzero(found)[np.argsort(dist[found], kind="stable")]:  # nearest first
        if nearest[i] not in claimed:
            match[i] = nearest[i]
            claimed.add(nearest[i])
    return match


@dataclass
class BrickPlan:
    """What one brick is cut from: the release region chosen, the injection runs found, those asked for and absent."""

    brick: str
    region: str | None  # None: no chosen region has the brick
    regions_with_brick: list
    release_dir: Path | None
    layout: str | None
    runs: list  # of Run
    absent: list  # of (rs, why): seed folders asked for (or the brick's whole injection run) not there
    searched: list = field(default_factory=list)  # the region folders looked in

    def missing(self) -> str | None:
        """Why the brick's release files are absent (None when they are there), naming the paths looked at."""
        folders = [self.release_dir] if self.release_dir is not None else self.searched
        absent = []
        for folder in folders:
            checks = [(layout.coadd_dir(folder, self.brick), "no coadd directory"),
                      (layout.tractor_file(folder, self.brick), "no Tractor catalogue")]
            absent += [f"{why} ({path})" for path, why in checks if not path.exists()]
        return "; ".join(absent) or None


def plan_brick(brick: str, release_root, injection_root, rs="all", region: str = "both", overlap: str = "dec",
               injection_layout: str = "auto") -> BrickPlan:
    """Find a brick's files: its release region (``release.region``, ``release.region_overlap``), the layout of its
    injection runs (``release.injection_layout``) and its seed folders (``release.rs``). Looks only at this brick's
    folders."""
    regions = layout.chosen_regions(release_root, region)
    name, have = layout.resolve_region(brick, regions, overlap)
    release_dir = regions[name] if name is not None else None
    inj = layout.injection_folder(injection_root, name or "") if name is not None else None
    lay = detect_layout(inj, brick, injection_layout) if inj is not None else None
    runs, absent = [], []
    if lay is None:
        where = inj if inj is not None else injection_root
        names = [w for w in rs if not is_pattern(w)] if rs != "all" else []
        absent += [(r, f"no injection run of brick {brick} under {where}") for r in names or [""]]
    else:
        foreign = [w for w in (rs if rs != "all" else []) if not is_pattern(w) and not re.fullmatch(lay.seed_re, w)]
        if foreign:
            raise LayoutError(f"brick {brick}: release.rs names {foreign}, not seed folders of the {lay.name} layout "
                              f"its runs are in ({lay.seed_re}; e.g. {lay.seed_folders(inj, brick)[:3]}); "
                              "use rs: all, or their names")
        chosen, not_found = choose_seeds(lay.seed_folders(inj, brick), rs)
        absent += [(r, f"no seed folder {lay.path(lay.seeds, inj, brick) / r}") for r in not_found]
        for r in chosen:
            run = Run(inj, brick, r, lay)
            why = run.absent()
            if why:
                absent.append((r, why))
            else:
                runs.append(run)
    return BrickPlan(brick=brick, region=name, regions_with_brick=have, release_dir=release_dir,
                     layout=lay.name if lay else None, runs=runs, absent=absent,
                     searched=list(regions.values()))
