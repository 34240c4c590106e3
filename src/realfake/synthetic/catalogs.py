"""The synthetic release's catalogues: Tractor catalogues in the DR9, DR8 or DR5 schema (the release's, and each
injection run's rerun, by one measurement model), and obiwan's simulation catalogues and side files in each of its
layouts."""

from __future__ import annotations

import numpy as np

from realfake import BANDS
from realfake.inputs import layout
from realfake.inputs.bricks import PIXSCALE_ARCSEC
from realfake.synthetic.files import write_table
from realfake.synthetic.sky import EXTINCTION, SKY_SIGMA

RELEASE = {"dr9": 9010, "dr8": 8000, "dr5": 5000}  # the ``release`` column of each schema


def tractor_type(r_half, bt, is_star, schema: str) -> np.ndarray:
    """The Tractor type of each source: PSF for stars; galaxies by size and bulge fraction (DR5: COMP for SER)."""
    kind = np.select([is_star, r_half < 0.35, bt < 0.2, bt > 0.7], ["PSF", "REX", "EXP", "DEV"], "SER")
    if schema in ("dr5", "dr8"):
        kind = np.where(kind == "SER", "COMP", kind)
    return kind


def tractor_dtype(schema: str) -> np.dtype:
    """DR9: 3-character types, shape_*, sersic, maskbits; DR8: DR5's 4-character types and shapeexp/shapedev with
    maskbits; DR5: no maskbits."""
    cols = [("release", ">i2"), ("brickid", ">i4"), ("brickname", "S8"), ("objid", ">i4"),
            ("brick_primary", "?"), ("type", "S3" if schema == "dr9" else "S4"),
            ("ra", ">f8"), ("dec", ">f8"), ("bx", ">f4"), ("by", ">f4")]
    for b in BANDS:
        cols += [(f"flux_{b}", ">f4"), (f"flux_ivar_{b}", ">f4"), (f"mw_transmission_{b}", ">f4"),
                 (f"nobs_{b}", ">i2"), (f"anymask_{b}", ">i2"), (f"allmask_{b}", ">i2"), (f"psfsize_{b}", ">f4")]
    cols += [("ebv", ">f4")]
    if schema in ("dr5", "dr8"):
        cols += [("fracdev", ">f4")] + [(f"shape{m}_{p}", ">f4") for m in ("exp", "dev") for p in ("r", "e1", "e2")]
    else:
        cols += [("sersic", ">f4"), ("shape_r", ">f4"), ("shape_e1", ">f4"), ("shape_e2", ">f4")]
    if schema != "dr5":
        cols += [("maskbits", ">i2")]
    return np.dtype(cols)


def tractor_table(cfg, brick_row, wcs, sky: dict, mw, fwhm, nexp, rng):
    """A Tractor catalogue of the sources ``sky`` (sky_truth): measured fluxes (true flux plus the noise of the
    local depth and PSF), the true positions and shapes, and the type Tractor would give. The release's
    catalogue and an injection run's rerun are both made by it: one measurement model for reals and fakes."""
    n = len(sky["x"])
    t = np.zeros(n, dtype=tractor_dtype(cfg.schema))
    order = np.argsort(sky["y"] * cfg.image_size + sky["x"], kind="stable")  # Tractor lists sources by position
    sky = {k: np.asarray(v)[order] for k, v in sky.items()}
    t["release"] = RELEASE[cfg.schema]
    t["brickid"] = brick_row["BRICKID"]
    t["brickname"] = brick_row["BRICKNAME"]
    t["objid"] = np.arange(n)
    t["bx"], t["by"] = sky["x"], sky["y"]
    ra, dec = wcs.all_pix2world(t["bx"].astype(np.float64), t["by"].astype(np.float64), 0)
    t["ra"], t["dec"] = ra, dec
    t["brick_primary"] = (
        (ra >= brick_row["RA1"]) & (ra < brick_row["RA2"]) & (dec >= brick_row["DEC1"]) & (dec < brick_row["DEC2"])
    )
    ix = np.clip(np.floor(t["bx"] + 0.5).astype(int), 0, cfg.image_size - 1)
    iy = np.clip(np.floor(t["by"] + 0.5).astype(int), 0, cfg.image_size - 1)
    for b in BANDS:
        true = sky[f"flux_{b}"] * mw[b]
        neff = 4 * np.pi * (fwhm[b] / 2.355 / PIXSCALE_ARCSEC) ** 2
        nobs = nexp[iy, ix]
        sig = SKY_SIGMA[b] * np.sqrt(neff / np.maximum(nobs, 1))
        t[f"flux_{b}"] = true + rng.normal(0, 1, n) * sig
        t[f"flux_ivar_{b}"] = np.where(nobs > 0, 1 / sig**2, 0)
        t[f"mw_transmission_{b}"] = mw[b]
        t[f"nobs_{b}"] = nobs
        t[f"psfsize_{b}"] = fwhm[b]
    t["ebv"] = -2.5 * np.log10(mw["g"]) / EXTINCTION["g"]  # the brick's E(B-V), as the transmissions were made
    is_star, r_half, bt = sky["is_star"], np.where(sky["is_star"], 0.0, sky["r_half"]), sky["bt"]
    e1, e2 = np.where(is_star, 0.0, sky["e1"]), np.where(is_star, 0.0, sky["e2"])
    kind = tractor_type(r_half, bt, is_star, cfg.schema)
    if cfg.schema in ("dr5", "dr8"):
        t["type"] = np.char.ljust(kind.astype("U4"), 4)
        dev = np.isin(kind, ["DEV", "COMP"])
        exp = np.isin(kind, ["EXP", "REX", "COMP"])
        t["fracdev"] = np.where(kind == "COMP", bt, dev.astype(float))
        for m, sel in (("exp", exp), ("dev", dev)):
            t[f"shape{m}_r"] = np.where(sel, r_half, 0)
            t[f"shape{m}_e1"] = np.where(sel & (kind != "REX"), e1, 0)
            t[f"shape{m}_e2"] = np.where(sel & (kind != "REX"), e2, 0)
    else:
        t["type"] = kind
        t["shape_r"] = r_half
        t["shape_e1"], t["shape_e2"] = np.where(kind == "REX", 0, e1), np.where(kind == "REX", 0, e2)
        t["sersic"] = np.select([kind == "PSF", kind == "DEV", kind == "SER"], [0.0, 4.0, 1 + bt * (sky["bulge_n"] - 1)],
                                1.0)
    if cfg.schema != "dr5":
        t["maskbits"] = np.where(is_star & (sky["g"] < 17.0), 2, 0)  # BRIGHT
    return t


# obiwan 2018 (Nov 2017 on): the fakes injected, 1-indexed x, y, with their extinction
SIMCAT_DTYPE = np.dtype(
    [("id", ">i8"), ("ra", ">f8"), ("dec", ">f8"), ("x", ">f4"), ("y", ">f4")]
    + [(f"{b}flux", ">f4") for b in BANDS]
    + [(f"mw_transmission_{b}", ">f4") for b in BANDS]
    + [("n", ">f4"), ("rhalf", ">f4"), ("e1", ">f4"), ("e2", ">f4")]
)


# obiwan before Nov 2017: no extinction, shapes as axis ratio and angle
SIMCAT_2017_DTYPE = np.dtype(
    [("id", ">i4"), ("seed", ">i8"), ("ra", ">f8"), ("dec", ">f8"), ("x", ">f8"), ("y", ">f8")]
    + [(f"{b}flux", ">f4") for b in BANDS]
    + [("sersicn", ">f4"), ("rhalf", ">f4"), ("ba", ">f4"), ("phi", ">f4")]
)
# adematti/obiwan (DR9 era): the randoms of a run, Tractor-like names, 0-indexed bx, by, collided = not injected
RANDOMS_DTYPE = np.dtype(
    [("id", ">i8"), ("ra", ">f8"), ("dec", ">f8"), ("bx", ">f8"), ("by", ">f8")]
    + [(f"flux_{b}", ">f4") for b in BANDS]
    + [("sersic", ">f4"), ("shape_r", ">f4"), ("shape_e1", ">f4"), ("shape_e2", ">f4"), ("collided", "?")]
)


def write_simcat(cfg, lay, root, brick, rs, wcs, mw, f) -> None:
    """A run's simulation catalogue and its side files, as the layout ``lay`` writes them."""
    nfake, added, skipped = len(f["x"]), f["added"], f["skipped"]
    ra, dec = wcs.all_pix2world(f["x"], f["y"], 0)
    path = lay.path(lay.simcat, root, brick, rs)
    kind = tractor_type(f["rhalf"], f["fp"]["bt"], np.zeros(nfake, bool), cfg.schema) if cfg.fake_model == "real" \
        else None
    if lay.name == "obiwan2021":  # every random of the run, flagged where not injected; 0-indexed bx, by
        t = np.zeros(nfake, dtype=RANDOMS_DTYPE if kind is None else np.dtype(RANDOMS_DTYPE.descr + [("type", "S3")]))
        t["id"], t["ra"], t["dec"], t["bx"], t["by"] = f["ids"], ra, dec, f["x"], f["y"]
        for b in BANDS:
            t[f"flux_{b}"] = f["flux"][b] * mw[b]
        t["sersic"], t["shape_r"], t["shape_e1"], t["shape_e2"] = f["nser"], f["rhalf"], f["fp"]["e1"], f["fp"]["e2"]
        t["collided"] = skipped
    else:  # the 2018 and 2017 simcats list the fakes injected (1-indexed x, y)
        dtype = SIMCAT_DTYPE if lay.name == "obiwan2018" else SIMCAT_2017_DTYPE
        if kind is not None:
            dtype = np.dtype(dtype.descr + [("type", "S4" if cfg.schema != "dr9" else "S3")])
        t = np.zeros(len(added), dtype=dtype)
        t["id"], t["ra"], t["dec"] = added, ra[added], dec[added]
        t["x"], t["y"] = f["x"][added] + 1, f["y"][added] + 1
        for b in BANDS:
            t[f"{b}flux"] = f["flux"][b][added] * mw[b]
        t["rhalf"] = f["rhalf"][added]
        if lay.name == "obiwan2018":
            for b in BANDS:
                t[f"mw_transmission_{b}"] = mw[b]
            t["n"], t["e1"], t["e2"] = f["nser"][added], f["fp"]["e1"][added], f["fp"]["e2"][added]
        else:
            e = np.hypot(f["fp"]["e1"], f["fp"]["e2"])[added]
            t["sersicn"], t["ba"] = f["nser"][added], (1 - e) / (1 + e)
            t["phi"] = np.degrees(0.5 * np.arctan2(f["fp"]["e2"], f["fp"]["e1"]))[added]
            t["seed"] = cfg.seed
    if kind is not None:
        t["type"] = kind if lay.name == "obiwan2021" else kind[added]
    write_table(path, t)
    if lay.name == "obiwan2018":
        write_table(layout.sim_ids_added_file(root, brick, rs), np.array(added, dtype=[("id", ">i8")]))
        write_table(layout.skipped_ids_file(root, brick, rs), np.array(f["ids"][skipped], dtype=[("ids", ">i8")]))
        meta = np.zeros(1, dtype=[("brickname", "S8"), ("objtype", "S3"), ("seed", ">i8"), ("nobj", ">i4"),
                                  ("rs", "S24"), ("psf_convolved", "?"), ("model", "S8")])
        meta[0] = (brick, "elg", cfg.seed, nfake, rs, cfg.fake_psf, cfg.fake_model)
        write_table(layout.metacat_file(root, brick, rs), meta)
