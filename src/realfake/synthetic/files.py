"""The synthetic release's files in a real release's formats: RICE tile-compressed coadds (in legacypipe's tiles,
with its quantisation and a TAN WCS centred on the brick), FITS tables, and the gzipped brick tables."""

from __future__ import annotations

import numpy as np

from realfake import BANDS
from realfake.inputs import layout
from realfake.atomic import atomic_path
from realfake.inputs.bricks import PIXSCALE_ARCSEC

CD = PIXSCALE_ARCSEC / 3600.0  # deg per pixel: CD2_2 = -CD1_1 = 7.2778e-5
# Quantisation as in real coadds: images absolute 1e-4 with dither, invvar relative 16
IMAGE_COMPRESSION = dict(compress="RICE", qlevel=-1e-4, qmethod="SUBTRACTIVE_DITHER_2")
INVVAR_COMPRESSION = dict(compress="RICE", qlevel=16, qmethod="NO_DITHER")
TILE = 100  # legacypipe compresses coadds in 100x100 tiles (ZTILE1 = ZTILE2 = 100 in a DR9 header)


def tile_dims(shape, tile: int = TILE) -> list[int]:
    """Compression tile (rows, columns) for an image, as legacypipe chooses it.

    ``tile`` pixels, widened until the image's last, partial tile is at least
    4 pixels wide (CFITSIO cannot compress a narrower one); the whole axis if
    it is shorter than ``tile``.
    """
    dims = []
    for n in shape:
        t = min(tile, n)
        while n % t and n % t < 4:
            t += 1
        dims.append(t)
    return dims


def wcs_header(ra: float, dec: float, size: int) -> dict:
    """TAN WCS centred on the brick centre, as in the real coadds (CRPIX = 1800.5 at 3600)."""
    return {
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CRVAL1": float(ra),
        "CRVAL2": float(dec),
        "CRPIX1": (size + 1) / 2.0,
        "CRPIX2": (size + 1) / 2.0,
        "CD1_1": -CD,
        "CD1_2": 0.0,
        "CD2_1": 0.0,
        "CD2_2": CD,
        "IMAGEW": float(size),
        "IMAGEH": float(size),
    }


def astropy_wcs(header: dict):
    """The astropy WCS of a wcs_header."""
    from astropy.wcs import WCS

    keys = ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")
    return WCS({k: header[k] for k in keys})


def write_image(path, data, header, compression, dither_seed=None, tile=None):
    """A coadd file: an empty primary HDU, then ``data`` tile-compressed (``tile``: (rows, columns), else
    tile_dims')."""
    import fitsio

    hdr = [{"name": k, "value": v} for k, v in header.items()]
    extra = {"dither_seed": dither_seed} if dither_seed is not None else {}
    with atomic_path(path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
            f.write(None)  # empty primary HDU, as in the real coadds
            f.write(data, header=hdr, tile_dims=tile or tile_dims(data.shape), **compression, **extra)


def write_table(path, table, extname=None):
    """A FITS binary table (a catalogue), written atomically."""
    import fitsio

    with atomic_path(path) as tmp:
        fitsio.write(str(tmp), table, extname=extname, clobber=True)


def write_coadd(folder, brick: str, band: str, image, invvar, header: dict, dither_seed: int) -> None:
    """One band's image and inverse variance of a brick in its coadd ``folder``, as legacypipe names and compresses
    them (``dither_seed``: the image's quantisation dither)."""
    h = dict(header, BRICKNAM=brick, BUNIT="nanomaggy", FILTERX=band)  # every release, DR5 to DR10, names it FILTERX
    write_image(folder / layout.coadd_name(brick, "image", band), image, h, IMAGE_COMPRESSION, dither_seed=dither_seed)
    write_image(folder / layout.coadd_name(brick, "invvar", band), invvar, h, INVVAR_COMPRESSION)


def write_survey_bricks(grid, path):
    """A FITS brick table, gzipped as the release's (fast level: the whole-sky table is 660,000 rows; at astropy's
    default level writing it took 11 s, a fifth of a small test release)."""
    import gzip
    import io

    from astropy.io import fits

    buffer = io.BytesIO()
    fits.BinTableHDU(grid, name="BRICKS").writeto(buffer)
    with atomic_path(path) as tmp, gzip.open(tmp, "wb", compresslevel=1) as f:
        f.write(buffer.getbuffer())


def write_region_bricks(rows, path):
    """A region's ``survey-bricks-dr9-<region>.fits.gz``: the bricks with data there, lower-case columns."""
    table = np.zeros(len(rows), dtype=[(n.lower(), t) for n, t in rows.dtype.descr]
                     + [(f"nexp_{b}", ">i2") for b in BANDS])
    for n in rows.dtype.names:
        table[n.lower()] = rows[n]
    for b in BANDS:
        table[f"nexp_{b}"] = 2
    write_survey_bricks(table, path)
