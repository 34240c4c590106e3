"""The selection of real galaxies comparable with the injected ones.

The fakes occupy a narrow region (ELG-like colours and sizes); real galaxies
are cut to the same region. Every threshold comes from the config
(``selection:``, defaults = the reference values) and every cut is counted, in
order, so a summary table says how many sources each one removed.

With ``apply_to_fakes: true`` the same cuts are applied to the fakes'
simulation catalogue (its true fluxes and sizes), those that its columns
allow: positive flux, size, magnitude limits and colour box, and the type cut
when the catalogue has types (a synthetic null-test run's does; obiwan's does
not). A simulation catalogue has no ``brick_primary``, ``nobs`` or
``maskbits``: the cutout stage's no-data cut, applied to both classes, stands
in for ``nobs``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd

from . import BANDS
from .catalogs import magnitudes


def select_real(cat: pd.DataFrame, cfg: dict) -> tuple[np.ndarray, "OrderedDict[str, int]"]:
    """Mask of selected sources and, per cut in order, how many it removed."""
    return _select(cat, cfg, fakes=False)


def select_fakes(cat: pd.DataFrame, cfg: dict) -> tuple[np.ndarray, "OrderedDict[str, int]"]:
    """The fakes kept, as :func:`select_real`: every source unless ``cfg["apply_to_fakes"]``, then the cuts
    a simulation catalogue's columns allow (the type cut only if it has types: ``cat.attrs["has_type"]``)."""
    if not cfg.get("apply_to_fakes", False):
        return np.ones(len(cat), dtype=bool), OrderedDict()
    return _select(cat, cfg, fakes=True)


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
        cuts["maskbits"] = (cat["maskbits"].to_numpy(np.int64) & int(cfg["maskbits"])) == 0
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
