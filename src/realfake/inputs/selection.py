"""The selection of real galaxies comparable with the injected ones.

The fakes occupy a narrow region (ELG-like colours and sizes); real galaxies
are cut to the same region. Every threshold comes from the config
(``selection:``, defaults = the reference values) and every cut is counted, in
order, so a summary table says how many sources each one removed.

The fakes (``fakes:``) are selected like the reals by default (``measured``):
each fake is matched to its detection in the injection run's rerun Tractor
catalogue (injection.match_detections) and the same cuts act on the measured
values of both classes, so that noise and the selection act alike on both
(Eddington bias at the faint limits included), as injection validations in
other surveys do (DES Balrog, Everett et al. 2022). Where a run has no rerun
catalogue, or with ``fakes: true``, the cuts its simulation catalogue's
columns allow act on the fakes' true values: positive flux, size, magnitude
limits and colour box, and the type cut when the catalogue has types (a
synthetic null-test run's does; obiwan's does not); a simulation catalogue has
no ``brick_primary``, ``nobs`` or ``maskbits``: the cutout stage's no-data cut,
applied to both classes, stands in for ``nobs``. ``fakes: none`` keeps every
fake injected.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd

from realfake import BANDS
from realfake.inputs.catalogs import magnitudes


def select_real(cat: pd.DataFrame, cfg: dict) -> tuple[np.ndarray, "OrderedDict[str, int]"]:
    """Mask of selected sources and, per cut in order, how many it removed."""
    return _select(cat, cfg, fakes=False)


def select_fakes(cat: pd.DataFrame, cfg: dict, measured: bool) -> tuple[np.ndarray, "OrderedDict[str, int]"]:
    """The fakes kept, as :func:`select_real`: on their measured values (``measured``: ``cat`` holds the rerun
    catalogue's rows) every cut of the reals; on their true values the cuts a simulation catalogue's columns
    allow (the type cut only if it has types: ``cat.attrs["has_type"]``); with ``fakes: none`` all."""
    if measured:
        return _select(cat, cfg, fakes=False)
    if cfg.get("fakes", "measured") == "none":
        return np.ones(len(cat), dtype=bool), OrderedDict()
    return _select(cat, cfg, fakes=True)


def mask_bits(cat: pd.DataFrame, cfg: dict) -> np.ndarray:
    """The bits the maskbits cut tests: the catalogue's ``maskbits``; on a catalogue without them (DR5) the
    ALLMASK_G/R/Z bits from ``allmask_<b>`` where ``maskbits_from_allmask`` says so, else a CatalogError: a cut
    that would pass everything is refused, never silently inert."""
    from realfake.inputs.catalogs import CatalogError

    if cat.attrs.get("has_maskbits", True):
        return cat["maskbits"].to_numpy(np.int64)
    if cfg.get("maskbits_from_allmask", False):
        return cat["allmask_bits"].to_numpy(np.int64)
    raise CatalogError(f"{cat.attrs.get('path', 'Tractor catalogue')}: selection.maskbits is {cfg['maskbits']} but "
                       "the catalogue has no maskbits column (DR5): set selection.maskbits: 0, or "
                       "selection.maskbits_from_allmask: true to test its allmask_g/r/z as ALLMASK_G/R/Z (32/64/128)")


def _select(cat: pd.DataFrame, cfg: dict, fakes: bool) -> tuple[np.ndarray, "OrderedDict[str, int]"]:
    mags = magnitudes(cat)
    gr = mags["mag_g"] - mags["mag_r"]
    rz = mags["mag_r"] - mags["mag_z"]
    pad = cfg["colour_pad"]
    faint, bright = cfg["mag_faint"], cfg["mag_bright"]
    cuts = OrderedDict()
    if cfg["brick_primary"] and not fakes:
        cuts["brick_primary"] = cat["brick_primary"].to_numpy(bool)
    if not fakes:
        cuts["nobs"] = np.all([cat[f"nobs_{b}"].to_numpy() >= cfg["min_nobs"] for b in BANDS], axis=0)
    if not fakes or cat.attrs.get("has_type", False):
        cuts["type"] = cat["type"].isin(cfg["types"]).to_numpy()
    if cfg.get("maskbits") and not fakes:
        cuts["maskbits"] = (mask_bits(cat, cfg) & int(cfg["maskbits"])) == 0
    cuts["positive_flux"] = np.all([cat[f"flux_{b}"].to_numpy() > 0 for b in BANDS], axis=0)
    cuts["size"] = ((cat["size"] >= cfg["size_min"]) & (cat["size"] <= cfg["size_max"])).to_numpy()
    cuts["faint"] = np.all([(mags[f"mag_{b}"] < faint[b]).to_numpy() for b in BANDS], axis=0)
    cuts["bright"] = np.all([(mags[f"mag_{b}"] >= bright[b]).to_numpy() for b in BANDS], axis=0)
    cuts["colour"] = (
        (gr <= 1.15 * rz - 0.15 + pad) & (gr <= -1.2 * rz + 1.6 + pad) & (rz >= -0.2) & (rz <= 2.1)
    ).to_numpy()
    keep = np.ones(len(cat), dtype=bool)
    removed = OrderedDict()
    for name, passed in cuts.items():
        removed[name] = int(np.count_nonzero(keep & ~passed))
        keep &= passed
    return keep, removed
