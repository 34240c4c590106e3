"""A brick's coadds read: each FITS file checked, its WCS, and (for stamps) only the compression tiles under the
stamps decompressed, planned per tiling.

RICE tiles are decoded by :mod:`realfake.inputs.fitstiles`; other compressions, and files it fails on, by astropy's reader.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realfake import BANDS
from realfake.inputs import layout
from realfake.inputs.fitstiles import TiledImage

log = logging.getLogger(__name__)


class CoaddError(ValueError):
    """A coadd that cannot be used; the message names the file and the problem."""


@dataclass
class Coadd:
    """The six planes of one brick (or one injection run of it), with its WCS."""

    planes: dict  # channel name -> 2-D float32 array, as read (pixels without data are zeroed in the stamps)
    wcs: object
    files: list
    shape: tuple


class PlaneBuffers:
    """Buffers reused from one coadd to the next, in one process: the plane being read, staged stamps.

    Fresh memory for a 3600x3600 plane costs 13,000 page faults, which on some
    nodes (virtual machines) take as long as decompressing the plane; what is
    read into a buffer is valid until the next read into it.
    """

    def __init__(self):
        self._arrays = {}

    def get(self, key, shape, dtype) -> np.ndarray:
        a = self._arrays.get(key)
        if a is None or a.shape != tuple(shape) or a.dtype != np.dtype(dtype):
            a = self._arrays[key] = np.empty(shape, dtype)
        return a


def stamp_origins(x, y, size: int, shape):
    """Lower-left corners (iy, ix) of the size x size stamps centred on (x, y), and which lie on an image of ``shape``."""
    ny, nx = shape
    half = size // 2
    ix = np.floor(np.asarray(x, float) + 0.5).astype(np.int64) - half
    iy = np.floor(np.asarray(y, float) + 0.5).astype(np.int64) - half
    on = (ix >= 0) & (iy >= 0) & (ix + size <= nx) & (iy + size <= ny)
    return iy, ix, on


# astropy decompresses a section in one call per rectangle of tiles; a call costs about as much as
# decompressing this many 100x100 tiles (astropy 8: ~0.5 ms a call, ~0.1 ms a tile; on a sparse brick
# values from 2 to 8 came within 10% of each other)
SECTION_CALL_TILES = 4


def tile_mask(shape, tile, iy, ix, size: int) -> np.ndarray:
    """Which compression tiles of (rows, columns) ``tile`` the size x size stamps at (iy, ix) touch: a bool array
    over the tile grid."""
    ny, nx = shape
    ty, tx = tile
    iy, ix = np.asarray(iy, np.int64), np.asarray(ix, np.int64)
    need = np.zeros((-(-ny // ty), -(-nx // tx)), bool)
    if len(iy) == 0:
        return need
    ylo, yhi, xlo, xhi = iy // ty, (iy + size - 1) // ty, ix // tx, (ix + size - 1) // tx
    for dy in range(int((yhi - ylo).max()) + 1):  # every tile a stamp touches, for all stamps at once
        for dx in range(int((xhi - xlo).max()) + 1):
            need[np.minimum(ylo + dy, yhi), np.minimum(xlo + dx, xhi)] = True
    return need


def tile_regions(shape, tile, iy, ix, size: int, gap: int = 0) -> list[tuple[int, int, int, int]]:
    """Rectangles (y0, y1, x0, x1) of whole compression tiles that cover the stamps at (iy, ix), each tile once.

    ``tile`` is (rows, columns) of a tile (ZTILE2, ZTILE1). Runs of needed tiles
    along a tile row, and runs at most ``gap`` tiles apart, are one rectangle;
    consecutive tile rows with the same run are merged, so that a row-tiled
    image is read in a few bands.
    """
    ny, nx = shape
    ty, tx = tile
    if len(iy) == 0:
        return []
    need = tile_mask(shape, tile, iy, ix, size)
    steps = np.diff(np.pad(need.view(np.int8), ((0, 0), (1, 1))), axis=1)
    row, start = np.nonzero(steps == 1)  # runs of needed tiles, row by row, left to right
    end = np.nonzero(steps == -1)[1]
    new = np.r_[True, (row[1:] != row[:-1]) | (start[1:] - end[:-1] > gap)]
    first, last = np.flatnonzero(new), np.r_[np.flatnonzero(new)[1:] - 1, len(new) - 1]
    regions, open_runs = [], {}  # (first, end tile column) -> [first, last tile row] of a run still growing
    for r, c0, c1 in zip(row[first].tolist(), start[first].tolist(), end[last].tolist()):
        run = open_runs.get((c0, c1))
        if run is not None and run[1] == r - 1:
            run[1] = r
            continue
        if run is not None:
            regions.append((run[0], run[1], c0, c1))
        open_runs[(c0, c1)] = [r, r]
    regions += [(r0, r1, c0, c1) for (c0, c1), (r0, r1) in open_runs.items()]
    return sorted((r0 * ty, min((r1 + 1) * ty, ny), c0 * tx, min(c1 * tx, nx)) for r0, r1, c0, c1 in regions)


def _plane_regions(hdu, shape, stamps, per_tiling: dict):
    """The rectangles of ``hdu`` to decompress for ``stamps=(iy, ix, size)`` (on the image); None: the whole plane.

    The whole plane when the sections would cost about as much (dense stamps, or an image tiled by row).
    ``per_tiling`` keeps the answer per tiling: the six planes of a coadd usually share one.
    """
    tile = tuple(int(t) for t in getattr(hdu, "tile_shape", None) or (1, shape[1]))
    if ("regions", tile) not in per_tiling:
        regions = tile_regions(shape, tile, *stamps, gap=SECTION_CALL_TILES)
        tiles = sum(-(-(y1 - y0) // tile[0]) * -(-(x1 - x0) // tile[1]) for y0, y1, x0, x1 in regions)
        all_tiles = -(-shape[0] // tile[0]) * -(-shape[1] // tile[1])
        use = regions if tiles + SECTION_CALL_TILES * len(regions) < 0.9 * all_tiles else None
        per_tiling["regions", tile] = use
    return per_tiling["regions", tile]


def _read_plane(f, shape, buffers: PlaneBuffers | None, stamps, per_tiling: dict) -> np.ndarray:
    """HDU 1 of ``f`` as float32: whole, or (``stamps=(iy, ix, size)``) only the tiles under the stamps, in a plane
    that is undefined elsewhere (zero without ``buffers``); read into ``buffers`` where given.

    A RICE-compressed coadd is decoded tile by tile (fitstiles: astropy's
    codecs, without astropy's cost per tile and per section, where they passed
    fitstiles' start-up check); any other compression by astropy's reader, in
    sections where that is cheaper. Where fitstiles fails on a file, astropy's
    reader reads it again: the file is damaged only if that fails too (its
    error is fitstiles', which names the tile), else its pixels are used, with a
    warning. ``per_tiling`` keeps what depends on the stamps and the tiling
    alone, for the other planes of the coadd.
    """
    image = TiledImage.of(f)
    if image is not None:
        if stamps is not None and ("mask", image.tile) not in per_tiling:
            per_tiling["mask", image.tile] = tile_mask(shape, image.tile, *stamps)
        need = None if stamps is None else per_tiling["mask", image.tile]
        if buffers is not None:
            out = buffers.get("plane", shape, np.float32)
        else:
            out = np.empty(shape, np.float32) if need is None else np.zeros(shape, np.float32)
        try:
            return image.read(out, need)
        except Exception as err:  # a damaged file, or astropy's private codecs failing on a good one
            try:
                plane = _read_public(f, shape, buffers, stamps, per_tiling)
            except Exception:
                raise err  # (the public reader's error as its context)
            PUBLIC_READS.append(f"{f.filename()}: {' '.join(str(err).split())[:200]}")
            log.warning("%s: realfake.inputs.fitstiles could not decode it (%s), astropy's public reader could: its pixels "
                        "are used", f.filename(), err)
            return plane
    return _read_public(f, shape, buffers, stamps, per_tiling)


# the files that fitstiles could not decode and astropy's reader could, in this process (make_brick_file names those
# of its brick in the file's attributes)
PUBLIC_READS: list[str] = []


def _read_public(f, shape, buffers: PlaneBuffers | None, stamps, per_tiling: dict) -> np.ndarray:
    """HDU 1 of ``f`` by astropy's reader, as for ``_read_plane``: whole, or in sections where that is cheaper."""
    hdu = f[1]
    regions = None if stamps is None else _plane_regions(hdu, shape, stamps, per_tiling)
    if regions is None:
        return np.asarray(hdu.data, dtype=np.float32)
    out = buffers.get("plane", shape, np.float32) if buffers is not None else np.zeros(shape, np.float32)
    section = hdu.section
    for y0, y1, x0, x1 in regions:
        out[y0:y1, x0:x1] = section[y0:y1, x0:x1]
    return out


def _open_image(path):
    """A coadd file open with astropy, checked: HDU 1 an image of 2 dimensions, the file as long as its headers say."""
    import warnings

    from astropy.io import fits

    f = fits.open(path, memmap=True)
    try:
        with warnings.catch_warnings():  # a truncated file gets its own error below
            warnings.filterwarnings("ignore", "File may have been truncated")
            if len(f) < 2:  # astropy stops at the first header it cannot parse
                raise CoaddError(f"{path}: no HDU 1 (the image) could be read: missing, or its header is damaged")
            if not isinstance(f[1], (fits.ImageHDU, fits.CompImageHDU)):
                kind = str(f[1].header.get("XTENSION", "")).strip()
                raise CoaddError(f"{path}: HDU 1 is not an image: "
                                 + (f"it is a {kind}" if kind else "its header is damaged"))
        info, size = f.fileinfo(1), path.stat().st_size
        if info["datLoc"] + info["datSpan"] > size:  # caught here: the tiles read may all lie before the cut
            raise CoaddError(f"{path}: truncated file: {size} bytes, its HDU 1 ends at byte "
                             f"{info['datLoc'] + info['datSpan']}")
        if len(f[1].shape) != 2:
            raise CoaddError(f"{path}: HDU 1 holds no 2-D image")
    except BaseException:
        f.close()
        raise
    return f


def iter_planes(folder: str | Path, brick: str, buffers: PlaneBuffers | None = None, around=None):
    """The g, r, z images and inverse variances of a brick in its coadd ``folder`` (the release's, or an injection
    run's), read once each, one at a time: (channel, plane, shape, wcs, path) per file.

    The image size comes from each file's header; the WCS is the first
    file's. ``around=(x, y, size)``: only the compression tiles under the
    size x size stamps centred on (x, y) are decompressed (the plane is then
    undefined elsewhere), into ``buffers`` reused from one plane to the next:
    a plane is valid until the next is read. Drop each plane before asking for
    the next, so that one plane at a time is in memory. RICE tiles are decoded
    by astropy's codecs (fitstiles), 2.5 times as fast as fitsio 1.4's reader.
    """
    shape, wcs, stamps, per_tiling = None, None, None, {}
    for b in BANDS:
        for kind, channel in (("image", b), ("invvar", f"ivar_{b}")):
            path = Path(folder) / layout.coadd_name(brick, kind, b)
            if not path.exists():
                raise CoaddError(f"brick {brick}: missing {kind} for band {b}: {path}")
            try:
                with _open_image(path) as f:
                    hdu = f[1]
                    dims = tuple(hdu.shape)
                    if shape is None:
                        shape, wcs = dims, header_wcs(hdu.header, path)
                    elif dims != shape:
                        raise CoaddError(f"{path}: shape {dims} differs from the brick's other planes {shape}")
                    if around is not None and stamps is None:
                        iy, ix, on = stamp_origins(around[0], around[1], around[2], shape)
                        stamps = (iy[on], ix[on], around[2])
                    plane = _read_plane(f, shape, buffers, stamps, per_tiling)
            except CoaddError:
                raise
            except Exception as err:  # astropy's kinds for damaged headers, heaps and tiles
                raise CoaddError(f"cannot read {path}: {layout.fits_error(err)}") from err
            yield channel, plane, shape, wcs, str(path)
            del plane, hdu, f  # (the HDU holds the plane too) before the next is decompressed


def read_coadd(root: str | Path, brick: str, rs: str | None = None, around=None) -> Coadd:
    """All six planes of a brick at once (iter_planes; without reused buffers)."""
    planes, files, shape, wcs = {}, [], None, None
    for channel, plane, shape, wcs, path in iter_planes(layout.coadd_dir(root, brick, rs), brick, around=around):
        planes[channel] = plane
        files.append(path)
    return Coadd(planes=planes, wcs=wcs, files=files, shape=shape)


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
