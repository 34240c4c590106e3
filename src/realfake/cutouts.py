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

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import BANDS, FAKE, REAL, __version__, layout
from .atomic import atomic_path
from .catalogs import magnitudes, read_simcat, read_tractor
from .selection import select_fakes, select_real

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


class PlaneBuffers:
    """Image buffers reused from one coadd to the next, in one process.

    Fresh memory for a 3600x3600 plane costs 13,000 page faults, which on some
    nodes (virtual machines) take as long as decompressing the plane; a coadd
    read into these buffers is valid until the next read into them.
    """

    def __init__(self):
        self._arrays = {}

    def get(self, key, shape, dtype) -> np.ndarray:
        a = self._arrays.get(key)
        if a is None or a.shape != tuple(shape) or a.dtype != np.dtype(dtype):
            a = self._arrays[key] = np.empty(shape, dtype)
        return a


def _read_image(hdu, buffers: PlaneBuffers | None, key) -> np.ndarray:
    """HDU's image, decompressed into a reused buffer when ``buffers`` is given."""
    if buffers is None or not hasattr(hdu, "_FITS"):
        return hdu.read()
    # fitsio's ImageHDU.read() is exactly this, on a freshly allocated array (fitsio 1.4, pinned)
    dtype, shape = hdu._get_dtype_and_shape()
    out = buffers.get(key, shape, dtype)
    hdu._FITS.read_image(hdu._ext + 1, out)
    return out


def read_coadd(root: str | Path, brick: str, rs: str | None = None, buffers: PlaneBuffers | None = None) -> Coadd:
    """Read the g, r, z images and inverse variances of a brick once each.

    The image size comes from each file's header. Pixels with invvar <= 0 or a
    non-finite value have no data: both planes are set to 0 there. With
    ``buffers`` the planes live in those buffers, overwritten by the next read.
    """
    import fitsio

    planes, files, wcs, shape, nodata = {}, [], None, None, None
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
                    data = _read_image(f[1], buffers, (b, kind))
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
        # invvar > 0 is False for NaN too; in-place operations: a 3600x3600 plane is 52 MB
        bad = np.greater(pair["invvar"], 0, out=_mask(buffers, "bad", shape))
        bad &= np.isfinite(pair["image"], out=_mask(buffers, "finite", shape))
        np.logical_not(bad, out=bad)
        np.putmask(pair["image"], bad, 0.0)
        np.putmask(pair["invvar"], bad, 0.0)
        if nodata is None:
            nodata = _mask(buffers, "nodata", shape)
            nodata[...] = bad
        else:
            nodata |= bad
        planes[b], planes[f"ivar_{b}"] = pair["image"], pair["invvar"]
    return Coadd(planes=planes, wcs=wcs, files=files, nodata=nodata)


def _mask(buffers, key, shape) -> np.ndarray:
    return np.empty(shape, bool) if buffers is None else buffers.get(key, shape, bool)


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


def stamp_corners(coadd: Coadd, x, y, size: int, max_frac_nodata: float = 1.0):
    """Where the stamps of sources at (x, y) would go, and which of them to keep.

    Returns (lower-left corners ``iy, ix`` of every source's stamp, mask of the
    sources on the image, their fraction of no-data pixels (NaN off the image),
    mask of the sources kept: on the image, centred on data and with at most
    ``max_frac_nodata`` of their pixels without data). Off-edge sources are never padded.
    """
    ny, nx = coadd.nodata.shape
    half = size // 2
    ix = np.floor(np.asarray(x, float) + 0.5).astype(np.int64) - half
    iy = np.floor(np.asarray(y, float) + 0.5).astype(np.int64) - half
    on = (ix >= 0) & (iy >= 0) & (ix + size <= nx) & (iy + size <= ny)
    frac = np.full(len(ix), np.nan, dtype=np.float32)
    keep = on.copy()
    if on.any():
        windows = np.lib.stride_tricks.sliding_window_view(coadd.nodata, (size, size))
        frac[on] = windows[iy[on], ix[on]].mean(axis=(1, 2))
        keep[on] = ~coadd.nodata[iy[on] + half, ix[on] + half] & (frac[on] <= max_frac_nodata)
    return iy, ix, on, frac, keep


def extract(coadd: Coadd, iy, ix, size: int, channels, out=None) -> np.ndarray:
    """The (N, size, size, C) float32 stamps with lower-left corners (iy, ix), channels in order.

    ``out``: a buffer of at least N stamps to fill (fresh memory costs page faults: reuse it).
    """
    if out is None:
        out = np.empty((len(ix), size, size, len(channels)), dtype=np.float32)
    out = out[: len(ix)]
    planes = [coadd.planes[name] for name in channels]
    stamp = np.empty((len(channels), size, size), dtype=np.float32)
    for k, (y0, x0) in enumerate(zip(iy, ix)):
        # channel-first copies of contiguous rows, then one interleave into the output (2x faster than
        # writing each channel with a 24-byte stride)
        for c, plane in enumerate(planes):
            stamp[c] = plane[y0 : y0 + size, x0 : x0 + size]
        out[k] = stamp.transpose(1, 2, 0)
    return out


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


STAMP_BLOCK = 256  # stamps extracted and written at a time (25 MB for 64x64x6)
_BUFFERS = PlaneBuffers()  # the planes of one coadd at a time, reused by every brick this process cuts


def brick_cutouts(brick, release_root, injection_root, rs_list, selection, sink, size=64, channels=DEFAULT_CHANNELS,
                  max_frac_nodata=0.5):
    """All cutouts of one brick, the selected real galaxies then the fakes of each run, passed to ``sink`` in blocks.

    Returns the tables (sources, offedge, cuts, files read).
    """
    tables, offedge, cuts, files = [], [], [], []
    buffer = np.empty((STAMP_BLOCK, size, size, len(channels)), dtype=np.float32)
    jobs = [(None, release_root)] + [(rs, injection_root) for rs in rs_list]
    for rs, root in jobs:
        if rs is None:
            cat = read_tractor(root, brick)
            keep, removed = select_real(cat, selection)
            label = REAL
        else:
            cat = read_simcat(root, brick, rs)
            keep, removed = select_fakes(cat, selection)  # all of them unless selection.apply_to_fakes
            label = FAKE
        files.append(cat.attrs["path"])
        coadd = read_coadd(root, brick, rs, _BUFFERS)
        files += coadd.files
        check_positions(cat, coadd.wcs, cat.attrs["path"])
        chosen = cat[keep].reset_index(drop=True)
        iy, ix, on, frac, data = stamp_corners(coadd, chosen["x"], chosen["y"], size, max_frac_nodata)
        # Both classes alike: no cutout centred on a pixel without data in some band (the reals' nobs cut
        # does this for reals only; obiwan places fakes there too), nor one mostly without data.
        iy, ix = iy[data], ix[data]
        for i in range(0, len(iy), STAMP_BLOCK):
            sink(extract(coadd, iy[i : i + STAMP_BLOCK], ix[i : i + STAMP_BLOCK], size, channels, out=buffer))
        del coadd  # one set of planes in memory at a time
        table = _source_table(chosen, brick, rs, label)
        table["frac_nodata"] = frac
        tables.append(table[data])
        offedge.append(table[~on])
        cuts.append(dict(brick=brick, rs=rs or "", label=label, n_in=len(cat), **{f"cut_{k}": v for k, v in removed.items()},
                         offedge=int((~on).sum()), cut_nodata=int((on & ~data).sum()), kept=int(data.sum())))
        log.info("brick %s %s: %d sources, %d selected, %d off the edge, %d without data, %d cutouts", brick,
                 rs or "release", len(cat), len(chosen), (~on).sum(), (on & ~data).sum(), data.sum())
    sources = pd.concat(tables, ignore_index=True)
    return sources, pd.concat(offedge, ignore_index=True), pd.DataFrame(cuts), files


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


@contextlib.contextmanager
def brick_writer(path, size: int, channels, attrs: dict):
    """Open one brick's HDF5 file for writing, atomically: yields (append(stamps), finish(tables...))."""
    import h5py

    shape = (size, size, len(channels))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset("cutouts", shape=(0,) + shape, maxshape=(None,) + shape, chunks=(1,) + shape,
                             dtype="float32")
        d.attrs["channels"] = list(channels)

        def append(stamps):
            n = d.shape[0]
            d.resize(n + len(stamps), axis=0)
            d[n:] = stamps

        def finish(sources, offedge, cuts, files):
            f.create_dataset("labels", data=sources["label"].to_numpy(np.int8))
            f.create_dataset("sources", data=_records(sources))
            f.create_dataset("offedge", data=_records(offedge))
            f.create_dataset("cuts", data=_records(cuts.fillna(0)))
            f.attrs.update(channels=list(channels), cutout_size=size, pixscale_arcsec=0.262, labels="real=0, fake=1",
                           source_files=files, code_version=__version__, layout=__doc__, **attrs)

        yield append, finish


def write_brick(path, stamps, sources, offedge, cuts, files, channels, attrs: dict):
    """Write one brick's HDF5 file atomically from its (N, S, S, C) stamps."""
    with brick_writer(path, stamps.shape[1], channels, attrs) as (append, finish):
        append(stamps)
        finish(sources, offedge, cuts, files)


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
    """Cut one brick into the HDF5 file ``out`` (written atomically); its cuts table."""
    attrs = dict(brick=brick, config_hash=config_hash, selection=json.dumps(selection))
    with brick_writer(out, size, channels, attrs) as (append, finish):
        tables = brick_cutouts(brick, release_root, injection_root, rs_list, selection, append, size, channels,
                               max_frac_nodata)
        finish(*tables)
    return tables[2]
