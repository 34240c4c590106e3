"""Bricks to cutouts: one brick's real galaxies and fakes selected, checked against the coadds' WCS, and cut into
its file.

The coadds are read by :mod:`realfake.coadds`, the stamps cut by :mod:`realfake.stamps`; the brick file's format,
its writer and its readers are :mod:`realfake.brickfile`.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict

import numpy as np
import pandas as pd

from . import FAKE, REAL, coadds, fitstiles, layout
from .brickfile import DEFAULT_CHANNELS, SOURCE_COLUMNS, brick_writer
from .bricks import PIXSCALE_ARCSEC
from .catalogs import CONDITIONS, magnitudes, nearest_rows, read_tractor
from .coadds import CoaddError
from .injection import match_detections, plan_brick, read_fakes
from .selection import select_fakes, select_real
from .stamps import STAMP_BLOCK, coadd_stamps, compact, interleave_stamps

log = logging.getLogger(__name__)

# The catalogue's pixel position and the WCS position of (ra, dec) must agree to this (pixels)
WCS_TOLERANCE = 0.5


def check_positions(cat: pd.DataFrame, wcs, what: str) -> float:
    """Largest distance (pixels) between the catalogue's x, y and the WCS position of its ra, dec."""
    if len(cat) == 0:
        return 0.0
    x, y = wcs.all_world2pix(cat["ra"].to_numpy(float), cat["dec"].to_numpy(float), 0)
    err = float(np.max(np.hypot(x - cat["x"].to_numpy(float), y - cat["y"].to_numpy(float))))
    if err > WCS_TOLERANCE:
        raise CoaddError(
            f"{what}: pixel positions disagree with the WCS by up to {err:.2f} px "
            "(is x, y 0-indexed for Tractor and 1-indexed for obiwan?)"
        )
    return err


def conditions_at(release: pd.DataFrame, x, y) -> pd.DataFrame:
    """Observing conditions (PSF size, exposures, E(B-V)) at pixel positions (x, y) of a brick: those of the
    nearest source of the release's Tractor catalogue. Fakes have no catalogue row of their own in the release;
    the nearest source saw the same exposures, within the few arcsec between them."""
    if not len(release) or not len(x):
        return pd.DataFrame({c: np.full(len(x), np.nan, np.float32) for c in CONDITIONS})
    return release[CONDITIONS].iloc[nearest_rows(release, x, y)].reset_index(drop=True).astype(np.float32)


def _source_table(cat, brick, region, rs, label):
    t = pd.concat([cat.reset_index(drop=True), magnitudes(cat).reset_index(drop=True)], axis=1)
    t["brick"], t["region"], t["rs"], t["label"] = brick, region or "", rs or "", label
    t["frac_nodata"] = np.nan
    return t[SOURCE_COLUMNS]


def brick_cutouts(plan, selection, sink, size=64, channels=DEFAULT_CHANNELS, max_frac_nodata=0.5):
    """All cutouts of one brick (``plan``: injection.plan_brick), the selected real galaxies then the fakes of each
    run, passed to ``sink`` in blocks.

    A fake is selected on its measured values where its run has a rerun
    Tractor catalogue (``selection.fakes: measured``): matched to its
    detection within ``selection.match_radius`` arcsec, cut like the reals,
    and cut out around its measured position, as a real is; else on its true
    values, recorded. Returns the tables (sources, offedge, cuts, files read).
    """
    brick, region = plan.brick, plan.region
    tables, offedge, cuts, files = [], [], [], []
    block = np.empty((STAMP_BLOCK, size, size, len(channels)), dtype=np.float32)
    release = None
    for run in [None] + list(plan.runs):
        cat, chosen, removed, record = _selected(plan, run, release, selection, files)
        if run is None:
            rs, label, folder, release = None, REAL, layout.coadd_dir(plan.release_dir, brick), cat
        else:
            rs, label, folder = run.rs, FAKE, run.coadd_dir
        frac, data, on = _cut(folder, brick, cat, chosen, size, channels, block, sink, files, max_frac_nodata)
        if run is not None and not record["runs_measured"]:  # a fake's conditions: the nearest real source's
            chosen = pd.concat([chosen.drop(columns=CONDITIONS, errors="ignore"),
                                conditions_at(release, chosen["x"], chosen["y"])], axis=1)
        table = _source_table(chosen, brick, region, rs, label)
        table["frac_nodata"] = frac
        tables.append(table[data])
        offedge.append(table[~on])
        cuts.append(dict(brick=brick, region=region or "", rs=rs or "", label=label,
                         n_in=cat.attrs.get("n_listed", len(cat)), **{f"cut_{k}": v for k, v in removed.items()},
                         offedge=int((~on).sum()), cut_nodata=int((on & ~data).sum()), kept=int(data.sum()), **record))
        log.info("brick %s %s: %d sources, %d selected, %d off the edge, %d without data, %d cutouts", brick,
                 rs or "release", cuts[-1]["n_in"], len(chosen), (~on).sum(), (on & ~data).sum(), data.sum())
    for rs, why in plan.absent:  # seed folders asked for and not there: recorded, the brick's reals kept
        log.warning("brick %s: injection run %s absent: %s", brick, rs or "(any)", why)
        cuts.append(dict(brick=brick, region=region or "", rs=rs, label=FAKE, n_in=0, kept=0, runs_absent=1))
    sources = pd.concat(tables, ignore_index=True)
    return sources, pd.concat(offedge, ignore_index=True), pd.DataFrame(cuts), files


def _selected(plan, run, release, selection, files):
    """The sources of ``run`` of a brick's plan (None: the release's real galaxies), selected: the catalogue read,
    the rows chosen, the count each cut removed, and the run's record; the catalogues read added to ``files``."""
    brick = plan.brick
    if run is None:
        cat = read_tractor(plan.release_dir, brick)
        keep, removed = select_real(cat, selection)
        chosen, record = cat, {}
    else:
        cat = read_fakes(run, release)
        record = dict(runs_measured=0, runs_mw_derived=int(cat.attrs["mw_derived"]), runs_absent=0)
        chosen, pre = cat, OrderedDict(not_injected=cat.attrs["n_not_injected"])
        measure = selection.get("fakes", "measured") == "measured"
        if measure and run.rerun_tractor.exists():
            chosen = measured_fakes(cat, read_tractor(None, brick, path=run.rerun_tractor), selection)
            pre["not_detected"] = len(cat) - len(chosen)
            keep, removed = select_fakes(chosen, selection, measured=True)
            record["runs_measured"] = 1
            files.append(str(run.rerun_tractor))
        else:
            if measure:
                log.warning("brick %s %s: no rerun Tractor catalogue (%s): the fakes are selected on their true "
                            "values", brick, run.rs, run.rerun_tractor)
            keep, removed = select_fakes(cat, selection, measured=False)
        removed = OrderedDict(list(pre.items()) + list(removed.items()))
    files.append(cat.attrs["path"])
    return cat, chosen[keep].reset_index(drop=True), removed, record


def _cut(folder, brick, cat, chosen, size, channels, block, sink, files, max_frac_nodata):
    """The stamps of the ``chosen`` sources in the coadd in ``folder``, those kept passed to ``sink`` through
    ``block``, after the catalogue ``cat`` is checked against the coadd's WCS; the coadd's files added to ``files``.
    Per source: its fraction of pixels without data, whether its cutout is kept, whether it lies on the image."""
    frac, data = np.full(len(chosen), np.nan, np.float32), np.zeros(len(chosen), bool)
    on = np.zeros(len(chosen), bool)
    for n_pass, (index, staged, wcs, coadd_files) in enumerate(
            coadd_stamps(folder, brick, chosen["x"], chosen["y"], size, channels)):
        if n_pass == 0:
            files += coadd_files
            check_positions(cat, wcs, cat.attrs["path"])
        on[index] = True
        for i in range(0, len(index), STAMP_BLOCK):
            part = index[i : i + STAMP_BLOCK]
            stamps, frac[part], centred = interleave_stamps(staged[i : i + STAMP_BLOCK], channels, block)
            # Both classes alike: no cutout centred on a pixel without data in some band (the reals' nobs cut
            # does this for reals only; obiwan places fakes there too), nor one mostly without data.
            data[part] = centred & (frac[part] <= max_frac_nodata)
            sink(compact(stamps, data[part]))
    return frac, data, on


def measured_fakes(fakes: pd.DataFrame, rerun: pd.DataFrame, selection: dict) -> pd.DataFrame:
    """The rows of the rerun Tractor catalogue that detect ``fakes`` (within ``selection.match_radius`` arcsec),
    carrying the fake's simulation id: the fakes as the pipeline measured them, as the reals are."""
    match = match_detections(fakes, rerun, selection.get("match_radius", 1.0) / PIXSCALE_ARCSEC)
    found = match >= 0
    measured = rerun.iloc[match[found]].reset_index(drop=True)
    measured["id"] = fakes["id"].to_numpy()[found]
    measured.attrs.update(rerun.attrs)
    return measured


def make_brick_file(out, brick, release_root, injection_root, rs_list, selection, size, channels, config_hash="",
                    max_frac_nodata=0.5, region="both", region_overlap="dec", injection_layout="auto", plan=None):
    """Cut one brick into the HDF5 file ``out`` (written atomically); its cuts table.

    ``rs_list`` is ``release.rs``: ``"all"`` or names and patterns of seed
    folders; ``plan`` (injection.plan_brick), where the caller has made it.
    """
    if plan is None:
        plan = plan_brick(brick, release_root, injection_root, rs_list, region, region_overlap, injection_layout)
    why = plan.missing()
    if why:
        raise CoaddError(f"brick {brick}: {why}")
    attrs = dict(brick=brick, config_hash=config_hash, selection=json.dumps(selection), region=plan.region or "",
                 regions_with_brick=json.dumps(plan.regions_with_brick), injection_layout=plan.layout or "",
                 seed_folders=json.dumps([r.rs for r in plan.runs]), absent_runs=json.dumps(plan.absent))
    attrs["tile_decoder"], first = fitstiles.decoder().note, len(coadds.PUBLIC_READS)
    with brick_writer(out, size, channels, attrs) as (append, finish):
        tables = brick_cutouts(plan, selection, append, size, channels, max_frac_nodata)
        if len(coadds.PUBLIC_READS) > first:
            attrs["tile_decoder"] += ("; astropy's public reader where realfake.fitstiles failed: "
                                      + "; ".join(coadds.PUBLIC_READS[first:]))
        finish(*tables)
    return tables[2]
