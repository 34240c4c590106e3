"""Bricks to cutouts: the coadds read (only the compression tiles under the stamps), the stamps cut, one brick's
real galaxies and fakes selected and cut into its file.

The brick file's format, its writer and its readers are :mod:`realfake.brickfile`.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import BANDS, FAKE, REAL, fitstiles, layout
from .brickfile import DEFAULT_CHANNELS, SOURCE_COLUMNS, brick_writer
from .bricks import PIXSCALE_ARCSEC
from .catalogs import CONDITIONS, magnitudes, nearest_rows, read_tractor
from .fitstiles import TiledImage
from .injection import match_detections, plan_brick, read_fakes
from .selection import select_fakes, select_real

try:  # the C kernels (setup.py); where they could not be built, numpy cuts the same stamps, more slowly
    from . import _stamps
except ImportError:
    _stamps = None

log = logging.getLogger(__name__)

# The catalogue's pixel position and the WCS position of (ra, dec) must agree to this (pixels)
WCS_TOLERANCE = 0.5


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
            log.warning("%s: realfake.fitstiles could not decode it (%s), astropy's public reader could: its pixels "
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


def clean_stamps(stamps: np.ndarray, channels) -> tuple[np.ndarray, np.ndarray]:
    """Zero the pixels without data in channel-first (N, C, S, S) stamps, in place; their fraction, and whether the
    centre has data.

    A band has no data where its invvar is not > 0 or not finite (0: no
    exposure) or its image is not finite: both its planes are set to 0 there.
    Returns, per stamp, the fraction of pixels without data in some band, and
    whether the centre pixel has data in every band.
    """
    n, _, s, _ = stamps.shape
    nodata = np.zeros((n, s, s), bool)
    good, test = np.empty_like(nodata), np.empty_like(nodata)
    for b in BANDS:
        image, invvar = stamps[:, channels.index(b)], stamps[:, channels.index(f"ivar_{b}")]
        np.greater(invvar, 0, out=good)  # (False for NaN)
        good &= np.less(invvar, np.inf, out=test)
        good &= np.isfinite(image, out=test)
        if not good.all():
            bad = np.logical_not(good, out=good)
            np.copyto(image, 0, where=bad)
            np.copyto(invvar, 0, where=bad)
            nodata |= bad
    return np.count_nonzero(nodata, axis=(1, 2)) / (s * s), ~nodata[:, s // 2, s // 2]


def _kernels_take(kernels: bool, staged: np.ndarray, other: np.ndarray) -> bool:
    """Whether the C kernels (built, and asked for) can work on these arrays: six channels, float32, contiguous."""
    return (kernels and _stamps is not None and staged.shape[1] == 6
            and all(a.dtype == np.float32 and a.flags.c_contiguous for a in (staged, other)))


def gather_stamps(plane: np.ndarray, iy, ix, staged: np.ndarray, channel: int, kernels=True) -> None:
    """Copy the windows of ``plane`` with lower-left corners (iy, ix), all on it, into channel ``channel`` of the
    channel-first stamps ``staged`` (N, C, S, S). ``kernels=False``: numpy's way, not the C kernel's."""
    n, _, size, _ = staged.shape
    if _kernels_take(kernels, staged, plane):
        _stamps.gather(plane, *plane.shape, np.ascontiguousarray(iy, np.int64), np.ascontiguousarray(ix, np.int64),
                       staged, n, size, channel)
        return
    for k, (y0, x0) in enumerate(zip(np.asarray(iy).tolist(), np.asarray(ix).tolist())):
        staged[k, channel] = plane[y0 : y0 + size, x0 : x0 + size]


def interleave_stamps(staged: np.ndarray, channels, out: np.ndarray, kernels=True):
    """Channel-first stamps ``staged`` (N, C, S, S) as channels-last ``out[:N]`` (N, S, S, C), pixels without data
    zeroed; per stamp, the fraction of those and whether the centre has data (clean_stamps, whose rules the C
    kernel follows bit for bit). ``staged`` may be changed. ``kernels=False``: numpy's way."""
    n, _, size, _ = staged.shape
    out = out[:n]
    if _kernels_take(kernels, staged, out):
        nodata, centred = np.empty(n, np.int32), np.empty(n, bool)
        _stamps.interleave(staged, n, size, tuple(channels.index(b) for b in BANDS),
                           tuple(channels.index(f"ivar_{b}") for b in BANDS), out, nodata, centred.view(np.uint8))
        return out, nodata / (size * size), centred
    # masks on contiguous channel-first planes, then one interleave: twice as fast as masking channels that lie
    # 24 bytes apart
    frac, centred = clean_stamps(staged, channels)
    out[...] = staged.transpose(0, 2, 3, 1)
    return out, frac, centred


def cut_stamps(coadd: Coadd, iy, ix, size: int, channels, kernels=True):
    """The (N, size, size, C) float32 stamps of a coadd with lower-left corners (iy, ix), channels in order, pixels
    without data zeroed; per stamp, the fraction of those and whether the centre has data (clean_stamps)."""
    n, nc = len(ix), len(channels)
    staged = np.empty((n, nc, size, size), np.float32)
    for c, name in enumerate(channels):
        gather_stamps(coadd.planes[name], iy, ix, staged, c, kernels)
    return interleave_stamps(staged, channels, np.empty((n, size, size, nc), np.float32), kernels)


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


# A coadd's stamps are staged channel-first, plane by plane as each is decompressed (one plane in memory at a
# time), then interleaved channels-last a block at a time and written from the CPU's cache. At most this many
# bytes are staged (320 MiB: about a 3600x3600 coadd's six planes, 3,413 stamps of 64x64x6); a coadd with more
# stamps is read in as many passes.
STAGED_BYTES = 320 * 2**20
STAMP_BLOCK = 32  # stamps interleaved and written at a time: 3 MB at 64x64x6
_BUFFERS = PlaneBuffers()  # one plane and the staged stamps, reused by every brick this process cuts


def coadd_stamps(folder, brick, x, y, size: int, channels):
    """The channel-first stamps of the coadd in ``folder`` centred on (x, y), staged in passes of at most
    STAGED_BYTES.

    Yields per pass (at least one, to check the files of a coadd without
    sources): the indices into x of the stamps on the image, their staged
    stamps (valid until the next pass), the WCS and the files read.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    per_pass = max(1, STAGED_BYTES // (len(channels) * size * size * 4))
    buffer = _BUFFERS.get("staged", (per_pass, len(channels), size, size), np.float32)  # (touched as filled)
    for start in range(0, max(len(x), 1), per_pass):
        xs, ys = x[start : start + per_pass], y[start : start + per_pass]
        files, index = [], None
        for channel, plane, shape, wcs, path in iter_planes(folder, brick, _BUFFERS, around=(xs, ys, size)):
            if index is None:
                iy, ix, on = stamp_origins(xs, ys, size, shape)
                index, iy, ix, staged = start + np.flatnonzero(on), iy[on], ix[on], buffer[: int(on.sum())]
            gather_stamps(plane, iy, ix, staged, channels.index(channel))
            files.append(path)
            del plane  # before the next is decompressed
        yield index, staged, wcs, files


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
        rs, record = (None, {}) if run is None else (run.rs, dict(runs_measured=0, runs_mw_derived=0, runs_absent=0))
        if run is None:
            cat = release = read_tractor(plan.release_dir, brick)
            keep, removed = select_real(cat, selection)
            label, folder, chosen = REAL, layout.coadd_dir(plan.release_dir, brick), cat
        else:
            cat = read_fakes(run, release)
            record["runs_mw_derived"] = int(cat.attrs["mw_derived"])
            label, folder, chosen = FAKE, run.coadd_dir, cat
            pre = OrderedDict(not_injected=cat.attrs["n_not_injected"])
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
                                "values", brick, rs, run.rerun_tractor)
                keep, removed = select_fakes(cat, selection, measured=False)
            removed = OrderedDict(list(pre.items()) + list(removed.items()))
        files.append(cat.attrs["path"])
        chosen = chosen[keep].reset_index(drop=True)
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
                sink(_compact(stamps, data[part]))
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


def measured_fakes(fakes: pd.DataFrame, rerun: pd.DataFrame, selection: dict) -> pd.DataFrame:
    """The rows of the rerun Tractor catalogue that detect ``fakes`` (within ``selection.match_radius`` arcsec),
    carrying the fake's simulation id: the fakes as the pipeline measured them, as the reals are."""
    match = match_detections(fakes, rerun, selection.get("match_radius", 1.0) / PIXSCALE_ARCSEC)
    found = match >= 0
    measured = rerun.iloc[match[found]].reset_index(drop=True)
    measured["id"] = fakes["id"].to_numpy()[found]
    measured.attrs.update(rerun.attrs)
    return measured


def _compact(stamps: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The kept stamps, moved to the front of ``stamps`` in order (no fresh memory)."""
    for j, i in enumerate(np.flatnonzero(keep)):
        if i != j:
            stamps[j] = stamps[i]
    return stamps[: int(keep.sum())]


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
    attrs["tile_decoder"], first = fitstiles.decoder().note, len(PUBLIC_READS)
    with brick_writer(out, size, channels, attrs) as (append, finish):
        tables = brick_cutouts(plan, selection, append, size, channels, max_frac_nodata)
        if len(PUBLIC_READS) > first:
            attrs["tile_decoder"] += ("; astropy's public reader where realfake.fitstiles failed: "
                                      + "; ".join(PUBLIC_READS[first:]))
        finish(*tables)
    return tables[2]
