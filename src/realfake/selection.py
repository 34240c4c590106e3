"""The selection of real galaxies comparable with the injected ones.

The fakes occupy a narrow region (ELG-like colours and sizes); real galaxies
are cut to the same region. Every threshold comes from the config
(``selection:``, defaults = the reference values) and every cut is counted, in
order, so a summary table says how many sources each one removed.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd

from . import BANDS
from .catalogs import magnitudes


def select_real(cat: pd.DataFrame, cfg: dict) -> tuple[np.ndarray, "OrderedDict[str, int]"]:
    """Mask of selected sources and, per cut in order, how many it removed."""
    mags = magnitudes(cat)
    gr = mags["mag_g"] - mags["mag_r"]
    rz = mags["mag_r"] - mags["mag_z"]
    pad = cfg["colour_pad"]
    faint, bright = cfg["mag_faint"], cfg["mag_bright"]
    cuts = OrderedDict()
    if cfg["brick_primary"]:
        cuts["brick_primary"] = cat["brick_primary"].to_numpy(bool)
    cuts["nobs"] = np.all([cat[f"nobs_{b}"].to_numpy() >= cfg["min_nobs"] for b in BANDS], axis=0)
    cuts["type"] = cat["type"].isin(cfg["types"]).to_numpy()
    if cfg.get("maskbits"):
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
