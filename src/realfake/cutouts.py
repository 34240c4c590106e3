"""Bricks to cutouts: 64x64 stamps of g, r, z images and inverse variances, one HDF5 file per brick.

HDF5 layout (also written into the file's own attributes):

- ``cutouts``: (N, S, S, C) float32, chunked one example per chunk; channel
  order in the attribute ``channels``.
- ``labels``: (N,) int8, real = 0, fake = 1.
- ``sources``: one row per cutout (id, brick, rs, ra, dec, x, y, fluxes,
  extinction-corrected magnitudes, type, size, label, frac_nodata).
- ``offedge``: the sources whose cutout falls off the image, set aside.
- ``cuts``: per catalogue, sources in, removed by each cut, off the edge, kept.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import BANDS, FAKE, REAL, __version__, layout
from .atomic import atomic_path
from .catalogs import magnitudes, read_simcat, read_tractor
from .selection import select_real

log = logging.getLogger(__name__)

DEFAULT_CHANNELS = ("g", "ivar_g", "r", "ivar_r", "z", "ivar_z")
# The catalogue's pixel position and the WCS position of (ra, dec) must agree to this (pixels)
WCS_TOLERANCE = 0.5


class CoaddError(ValueError):
    """A coadd that cannot be used; the message names the file and the problem."""


@dataclass
class Coadd:
    """The six planes of one brick (or one injection run of it), with its WCS."""

    planes: dict  # channel name -> 2-D float32 array
    wcs: object
    files: list
    nodata: np.ndarray  # True where any band has no data


def read_coadd(root: str | Path, brick: str, rs: str | None = None) -> Coadd:
    """Read the g, r, z images and inverse variances of a brick once each.

    The image size comes from each file's header. Pixels with invvar <= 0 or a
    non-finite value have no data: both planes are set to 0 there.
    """
    import fitsio

    planes, files, wcs, shape = {}, [], None, None
    for b in BANDS:
        pair = {}
        for kind in ("image", "invvar"):
            path = layout.coadd_file(root, brick, kind, b, rs)
            if not path.exists():
                raise CoaddError(f"brick {brick}: missing {kind} for band {b}: {path}")
            try:
                with fitsio.FITS(str(path)) as f:
                    if len(f) < 2 or f[1].get_exttype() != "IMAGE_HDU":
                        raise CoaddError(f"{path}: HDU 1 is not an image")
                    hdr = f[1].read_header()
                    data = f[1].read()
            except CoaddError:
                raise
            except Exception as err:
                raise CoaddError(f"cannot read {path}: {layout.fits_error(err)}") from err
            if data is None or data.ndim != 2:
                raise CoaddError(f"{path}: HDU 1 holds no 2-D image")
            if shape is None:
                shape, wcs = data.shape, header_wcs(hdr, path)
            elif data.shape != shape:
                raise CoaddError(f"{path}: shape {data.shape} differs from the brick's other planes {shape}")
            pair[kind] = data.astype(np.float32, copy=False)
            files.append(str(path))
        bad = ~np.isfinite(pair["image"]) | ~np.isfinite(pair["invvar"]) | (pair["invvar"] <= 0)
        pair["image"][bad] = 0.0
        pair["invvar"][bad] = 0.0
        planes[b], planes[f"ivar_{b}"] = pair["image"], pair["invvar"]
    nodata = np.any([planes[f"ivar_{b}"] <= 0 for b in BANDS], axis=0)
    return Coadd(planes=planes, wcs=wcs, files=files, nodata=nodata)


def header_wcs(hdr, path):
    from astropy.wcs import WCS

    keys = ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")
    missing = [k for k in keys if k not in hdr]
    if missing:
        raise CoaddError(f"{path}: header lacks WCS keywords {missing}")
    try:  # values are only ever parsed as numbers and projection codes, never evaluated
        return WCS({k: hdr[k] for k in keys})
    except Exception as err:  # astropy raises its own kinds for bad projections, non-numeric values, singular CD
        raise CoaddError(f"{path}: unusable WCS in the header: {' '.join(str(err).split())}") from err


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


def extract(coadd: Coadd, x: np.ndarray, y: np.ndarray, size: int, channels):
    """Cut ``size``x``size`` stamps centred on the pixels nearest (x, y).

    Returns (stamps of the sources on the image, mask of those sources, their
    fraction of no-data pixels, whether their centre pixel has no data).
    Off-edge sources are never padded.
    """
    ny, nx = coadd.nodata.shape
    half = size // 2
    ix = np.floor(np.asarray(x) + 0.5).astype(np.int64) - half
    iy = np.floor(np.asarray(y) + 0.5).astype(np.int64) - half
    on = (ix >= 0) & (iy >= 0) & (ix + size <= nx) & (iy + size <= ny)
    idx = np.flatnonzero(on)
    out = np.empty((len(idx), size, size, len(channels)), dtype=np.float32)
    frac = np.empty(len(idx), dtype=np.float32)
    for k, i in enumerate(idx):
        sl = (slice(iy[i], iy[i] + size), slice(ix[i], ix[i] + size))
        for c, name in enumerate(channels):
            out[k, :, :, c] = coadd.planes[name][sl]
        frac[k] = coadd.nodata[sl].mean()
    centre_nodata = coadd.nodata[iy[idx] + half, ix[idx] + half]
    return out, on, frac, centre_nodata


SOURCE_COLUMNS = (
    ["id", "brick", "rs", "ra", "dec", "x", "y"]
    + [f"flux_{b}" for b in BANDS]
    + [f"mag_{b}" for b in BANDS]
    + ["type", "size", "label", "frac_nodata"]
)


def _source_table(cat, brick, rs, label):
    t = pd.concat([cat.reset_index(drop=True), magnitudes(cat).reset_index(drop=True)], axis=1)
    t["brick"], t["rs"], t["label"] = brick, rs or "", label
    t["frac_nodata"] = np.nan
    return t[SOURCE_COLUMNS]


def brick_cutouts(brick, release_root, injection_root, rs_list, selection, size=64, channels=DEFAULT_CHANNELS,
                  max_frac_nodata=0.5):
    """All cutouts of one brick: the selected real galaxies, then the fakes of each run."""
    stamps, tables, offedge, cuts, files = [], [], [], [], []
    jobs = [(None, release_root)] + [(rs, injection_root) for rs in rs_list]
    for rs, root in jobs:
        if rs is None:
            cat = read_tractor(root, brick)
            keep, removed = select_real(cat, selection)
            label = REAL
        else:
            cat = read_simcat(root, brick, rs)
            keep, removed = np.ones(len(cat), dtype=bool), {}
            label = FAKE
        files.append(cat.attrs["path"])
        coadd = read_coadd(root, brick, rs)
        files += coadd.files
        check_positions(cat, coadd.wcs, cat.attrs["path"])
        chosen = cat[keep].reset_index(drop=True)
        st, on, frac, centre_nodata = extract(coadd, chosen["x"].to_numpy(), chosen["y"].to_numpy(), size, channels)
        table = _source_table(chosen, brick, rs, label)
        table.loc[on, "frac_nodata"] = frac
        # Both classes alike: no cutout centred on a pixel without data in some band (the reals' nobs cut
        # does this for reals only; obiwan places fakes there too), nor one mostly without data.
        data = on.copy()
        data[on] = ~centre_nodata & (frac <= max_frac_nodata)
        stamps.append(st[data[on]])
        tables.append(table[data])
        offedge.append(table[~on])
        cuts.append(dict(brick=brick, rs=rs or "", label=label, n_in=len(cat), **{f"cut_{k}": v for k, v in removed.items()},
                         offedge=int((~on).sum()), cut_nodata=int((on & ~data).sum()), kept=int(data.sum())))
        log.info("brick %s %s: %d sources, %d selected, %d off the edge, %d without data, %d cutouts", brick,
                 rs or "release", len(cat), len(chosen), (~on).sum(), (on & ~data).sum(), data.sum())
    sources = pd.concat(tables, ignore_index=True)
    return np.concatenate(stamps), sources, pd.concat(offedge, ignore_index=True), pd.DataFrame(cuts), files


def _records(df: pd.DataFrame) -> np.ndarray:
    """A DataFrame as an HDF5-friendly structured array (strings as fixed-width bytes)."""
    cols = []
    for c in df.columns:
        v = df[c].to_numpy()
        if v.dtype == object or v.dtype.kind == "U" or str(df[c].dtype) in ("string", "str"):
            v = np.asarray(df[c].astype(str).to_numpy(), dtype="S")
        cols.append((c, v))
    out = np.empty(len(df), dtype=[(c, v.dtype) for c, v in cols])
    for c, v in cols:
        out[c] = v
    return out


def write_brick(path, stamps, sources, offedge, cuts, files, channels, attrs: dict):
    """Write one brick's HDF5 file atomically."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            n, size = stamps.shape[0], stamps.shape[1]
            d = f.create_dataset(
                "cutouts", data=stamps, chunks=(1,) + stamps.shape[1:] if n else None, dtype="float32"
            )
            d.attrs["channels"] = list(channels)
            f.create_dataset("labels", data=sources["label"].to_numpy(np.int8))
            f.create_dataset("sources", data=_records(sources))
            f.create_dataset("offedge", data=_records(offedge))
            f.create_dataset("cuts", data=_records(cuts.fillna(0)))
            f.attrs.update(
                channels=list(channels),
                cutout_size=size,
                pixscale_arcsec=0.262,
                labels="real=0, fake=1",
                source_files=files,
                code_version=__version__,
                layout=__doc__,
                **attrs,
            )


def read_sources(path) -> pd.DataFrame:
    """The per-cutout source table of a brick file, strings decoded."""
    import h5py

    with h5py.File(path, "r") as f:
        rec = f["sources"][()]
    df = pd.DataFrame(rec)
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].str.decode("ascii")
    return df


def make_brick_file(out, brick, release_root, injection_root, rs_list, selection, size, channels, config_hash="",
                    max_frac_nodata=0.5):
    stamps, sources, offedge, cuts, files = brick_cutouts(
        brick, release_root, injection_root, rs_list, selection, size, channels, max_frac_nodata
    )
    write_brick(out, stamps, sources, offedge, cuts, files, channels,
                dict(brick=brick, config_hash=config_hash, selection=json.dumps(selection)))
    return cuts
