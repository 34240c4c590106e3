"""Bricks to cutouts: one brick's real galaxies and fakes selected, checked against the coadds' WCS, and cut into
its file.

Only the injected model may differ between the classes, so both are cut from the same coadds: by default
(``cutouts.reals_from: injection``) a brick's real galaxies are cut from the coadds of one of its injection runs
(the first seed folder, in natural order, whose coadds are there), which hold the same CCD pixels as the release's
plus the fakes, at their release positions and with the release's catalogue values. A rerun is not the release's
processing (another CCD list, calibration, sky), and cutting reals from the release would let the network find
that instead. The same real galaxies are also cut from the release's coadds, away from injected sources, for the
processing check (:mod:`realfake.cutouts.processing`): their statistics go to the brick file's ``processing`` table.

One neighbour rule for both classes: a stamp with another injected source of its coadds' run within
``cutouts.neighbour_radius`` arcsec of its centre is dropped, real or fake alike (obiwan keeps fakes only 5" apart,
so a fake's stamp would otherwise hold other fakes where a real's cut from the release holds none).

The coadds are read by :mod:`realfake.inputs.coadds`, the stamps cut by :mod:`realfake.cutouts.stamps`; the brick file's format,
its writer and its readers are :mod:`realfake.cutouts.brickfile`.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from realfake import BANDS, FAKE, REAL
from realfake.inputs import coadds, fitstiles, layout
from realfake.cutouts.brickfile import DEFAULT_CHANNELS, SOURCE_COLUMNS, brick_writer
from realfake.inputs.bricks import PIXSCALE_ARCSEC
from realfake.inputs.catalogs import CONDITIONS, magnitudes, nearest_rows, read_tractor
from realfake.inputs.coadds import CoaddError
from realfake.inputs.injection import match_detections, plan_brick, read_fakes
from realfake.inputs.selection import select_fakes, select_real
from realfake.cutouts.stamps import STAMP_BLOCK, coadd_stamps, compact, interleave_stamps

REALS_FROM = ("injection", "release")
RELEASE_COADDS = "release"  # the ``coadds`` of a stamp cut from the release's coadds

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


def _source_table(cat, brick, region, rs, label, coadds):
    t = pd.concat([cat.reset_index(drop=True), magnitudes(cat).reset_index(drop=True)], axis=1)
    t["brick"], t["region"], t["rs"], t["label"], t["coadds"] = brick, region or "", rs or "", label, coadds
    t["frac_nodata"] = np.nan
    return t[SOURCE_COLUMNS]


def brick_cutouts(plan, selection, sink, size=64, channels=DEFAULT_CHANNELS, max_frac_nodata=0.5,
                  reals_from="injection", neighbour_radius=0.0):
    """All cutouts of one brick (``plan``: injection.plan_brick), the selected real galaxies then the fakes of each
    run, passed to ``sink`` in blocks.

    A fake is selected on its measured values where its run has a rerun
    Tractor catalogue (``selection.fakes: measured``): matched to its
    detection within ``selection.match_radius`` arcsec, cut like the reals,
    and cut out around its measured position, as a real is; else on its true
    values, recorded. The reals are cut from the coadds of ``reals_run`` (see
    the module's docstring) or, without one, from the release's. Returns the
    tables (sources, offedge, cuts, files read, processing).
    """
    brick, region = plan.brick, plan.region
    tables, offedge, cuts, files = [], [], [], []
    block = np.empty((STAMP_BLOCK, size, size, len(channels)), dtype=np.float32)
    reals_run, fallback = reals_coadds(plan, reals_from)
    radius_pix = neighbour_radius / PIXSCALE_ARCSEC
    release, processing = None, None
    for run in [None] + list(plan.runs):
        cat, chosen, removed, record = _selected(plan, run, release, selection, files)
        if run is None:
            rs, label, release = None, REAL, cat
            coadd_run = reals_run
            folder = reals_run.coadd_dir if reals_run else layout.coadd_dir(plan.release_dir, brick)
            record = dict(reals_fallback=int(bool(fallback)))
        else:
            rs, label, folder, coadd_run = run.rs, FAKE, run.coadd_dir, run
        injected = (cat if run is not None else read_fakes(coadd_run, cat)) if coadd_run else None
        distance = nearest_injected(chosen, injected, own=run is not None)
        near = distance < radius_pix
        removed["neighbour"] = int(near.sum())
        chosen, distance = chosen[~near].reset_index(drop=True), distance[~near]
        frac, data, on = _cut(folder, brick, cat, chosen, size, channels, block, sink, files, max_frac_nodata)
        if run is None and reals_run is not None:  # the same reals from the release's coadds, away from fakes
            far = data & (distance > size / 2 * np.sqrt(2))
            processing = processing_table(plan, reals_run, chosen[far], size, channels)
        if run is not None and not record["runs_measured"]:  # a fake's conditions: the nearest real source's
            chosen = pd.concat([chosen.drop(columns=CONDITIONS, errors="ignore"),
                                conditions_at(release, chosen["x"], chosen["y"])], axis=1)
        table = _source_table(chosen, brick, region, rs, label, coadd_run.rs if coadd_run else RELEASE_COADDS)
        table["frac_nodata"] = frac
        tables.append(table[data])
        offedge.append(table[~on])
        cuts.append(dict(brick=brick, region=region or "", rs=rs or "", label=label,
                         n_in=cat.attrs.get("n_listed", len(cat)), **{f"cut_{k}": v for k, v in removed.items()},
                         offedge=int((~on).sum()), cut_nodata=int((on & ~data).sum()), kept=int(data.sum()), **record))
        log.info("brick %s %s: %d sources, %d selected, %d near an injected source, %d off the edge, %d without "
                 "data, %d cutouts", brick, rs or f"release (cut from {folder})", cuts[-1]["n_in"],
                 len(chosen) + removed["neighbour"], removed["neighbour"], (~on).sum(), (on & ~data).sum(), data.sum())
    if fallback:
        log.warning("brick %s: real galaxies cut from the release's coadds: %s", brick, fallback)
    for rs, why in plan.absent:  # seed folders asked for and not there: recorded, the brick's reals kept
        log.warning("brick %s: injection run %s absent: %s", brick, rs or "(any)", why)
        cuts.append(dict(brick=brick, region=region or "", rs=rs, label=FAKE, n_in=0, kept=0, runs_absent=1))
    sources = pd.concat(tables, ignore_index=True)
    return sources, pd.concat(offedge, ignore_index=True), pd.DataFrame(cuts), files, processing


def reals_coadds(plan, reals_from: str):
    """(the injection run whose coadds the brick's reals are cut from, or None; why not, where it was asked for).

    The first run of the plan in natural seed order (rs0 before rs500, ...): every run read has its coadds
    (layout.Run.absent), so a brick whose 2017 seed folders kept none but rs0's uses rs0's."""
    if reals_from not in REALS_FROM:
        raise ValueError(f"cutouts.reals_from must be one of {REALS_FROM}, not {reals_from!r}")
    if reals_from == "release":
        return None, ""
    if plan.runs:
        return plan.runs[0], ""
    return None, ("no seed folder of its injection run has coadds"
                  + (f" ({'; '.join(why for _, why in plan.absent)})" if plan.absent else ""))


def nearest_injected(chosen: pd.DataFrame, injected: pd.DataFrame | None, own: bool) -> np.ndarray:
    """Distance (pixels) from each chosen source to the nearest source injected (``injected``: read_fakes of a run,
    true positions) into the coadds it is cut from, other than itself (``own``: the chosen are fakes of that run,
    each its own injected source, found by id); infinite where there is none (reals cut from the release's)."""
    out = np.full(len(chosen), np.inf)
    if injected is None or not len(injected) or not len(chosen):
        return out
    from scipy.spatial import cKDTree

    k = min(2, len(injected))
    dist, idx = cKDTree(np.column_stack([injected["x"], injected["y"]])).query(
        np.column_stack([chosen["x"].to_numpy(float), chosen["y"].to_numpy(float)]), k=k)
    dist, idx = dist.reshape(len(chosen), k), idx.reshape(len(chosen), k)
    ids = np.r_[injected["id"].to_numpy(np.int64), -1]  # (idx == len: no neighbour found)
    if own:
        self_first = ids[idx[:, 0]] == chosen["id"].to_numpy(np.int64)
        out = np.where(self_first, dist[:, 1] if k > 1 else np.inf, dist[:, 0])
        # the fake itself not found nearest (measured far from where it was injected): every other is a neighbour
        return np.where(np.isfinite(out), out, np.inf)
    return dist[:, 0]


def processing_table(plan, run, reals: pd.DataFrame, size: int, channels) -> pd.DataFrame:
    """The statistics of the same real galaxies' stamps in the release's coadds (``rel_``) and in ``run``'s
    (``inj_``), with their catalogue's PSF size: the processing check's data (realfake.cutouts.processing)."""
    from realfake.cutouts.processing import stamp_statistics

    parts = []
    for prefix, folder in (("rel_", layout.coadd_dir(plan.release_dir, plan.brick)), ("inj_", run.coadd_dir)):
        stats = pd.DataFrame(index=np.arange(len(reals)))
        for index, staged, _, _ in coadd_stamps(folder, plan.brick, reals["x"], reals["y"], size, channels):
            for i in range(0, len(index), STAMP_BLOCK):
                part = index[i : i + STAMP_BLOCK]
                block = np.empty((len(part), size, size, len(channels)), np.float32)
                stamps, _, _ = interleave_stamps(staged[i : i + STAMP_BLOCK], channels, block)
                s = stamp_statistics(stamps, list(channels))
                for c in s.columns:
                    stats.loc[part, c] = s[c].to_numpy()
        parts.append(stats.add_prefix(prefix))
    ids = reals[["id"] + [f"psfsize_{b}" for b in BANDS if f"psfsize_{b}" in reals]].reset_index(drop=True)
    out = pd.concat([ids] + parts, axis=1)
    out.insert(1, "brick", plan.brick)
    out.insert(2, "rs", run.rs)
    return out


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


def coadd_geometry(folder, brick):
    """(shape, WCS, path) of a coadd folder's g image, from its header alone."""
    from realfake.inputs.coadds import _open_image, header_wcs

    path = Path(folder) / layout.coadd_name(brick, "image", "g")
    with _open_image(path) as f:
        return tuple(f[1].shape), header_wcs(f[1].header, path), path


def check_geometry(plan) -> None:
    """Each injection run's coadds must have the release's size and WCS (the reals are cut from them at their
    release positions): a run whose coadds disagree is set aside, as absent, with the files named."""
    if not plan.runs:
        return
    shape, wcs, path = coadd_geometry(layout.coadd_dir(plan.release_dir, plan.brick), plan.brick)
    corners = np.array([[0, 0], [shape[1] - 1, 0], [0, shape[0] - 1], [shape[1] - 1, shape[0] - 1]], float)
    sky = wcs.all_pix2world(corners, 0)
    for run in list(plan.runs):
        try:
            s, w, p = coadd_geometry(run.coadd_dir, plan.brick)
        except (OSError, CoaddError) as err:
            why = f"its coadds cannot be read ({err})"
        else:
            err = float(np.max(np.hypot(*(w.all_world2pix(sky, 0) - corners).T)))
            why = (f"its coadds ({p}) are {s[1]}x{s[0]} pixels, the release's ({path}) {shape[1]}x{shape[0]}"
                   if s != shape else
                   f"its coadds' WCS ({p}) disagrees with the release's ({path}) by up to {err:.2f} px"
                   if err > WCS_TOLERANCE else "")
        if why:
            log.warning("brick %s: injection run %s set aside: %s", plan.brick, run.rs, why)
            plan.runs.remove(run)
            plan.absent.append((run.rs, why))


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
                    max_frac_nodata=0.5, region="both", region_overlap="dec", injection_layout="auto", plan=None,
                    reals_from="injection", neighbour_radius=0.0):
    """Cut one brick into the HDF5 file ``out`` (written atomically); its cuts table.

    ``rs_list`` is ``release.rs``: ``"all"`` or names and patterns of seed
    folders; ``plan`` (injection.plan_brick), where the caller has made it.
    """
    if plan is None:
        plan = plan_brick(brick, release_root, injection_root, rs_list, region, region_overlap, injection_layout)
    why = plan.missing()
    if why:
        raise CoaddError(f"brick {brick}: {why}")
    check_geometry(plan)
    reals_run, fallback = reals_coadds(plan, reals_from)
    attrs = dict(brick=brick, config_hash=config_hash, selection=json.dumps(selection), region=plan.region or "",
                 regions_with_brick=json.dumps(plan.regions_with_brick), injection_layout=plan.layout or "",
                 seed_folders=json.dumps([r.rs for r in plan.runs]), absent_runs=json.dumps(plan.absent),
                 reals_from=reals_from, reals_coadds=reals_run.rs if reals_run else RELEASE_COADDS,
                 reals_fallback=fallback, neighbour_radius=neighbour_radius)
    attrs["tile_decoder"], first = fitstiles.decoder().note, len(coadds.PUBLIC_READS)
    with brick_writer(out, size, channels, attrs) as (append, finish):
        tables = brick_cutouts(plan, selection, append, size, channels, max_frac_nodata, reals_from, neighbour_radius)
        if len(coadds.PUBLIC_READS) > first:
            attrs["tile_decoder"] += ("; astropy's public reader where realfake.inputs.fitstiles failed: "
                                      + "; ".join(coadds.PUBLIC_READS[first:]))
        finish(*tables)
    return tables[2]
