"""Stamps cut from a coadd's planes: gathered channel-first plane by plane (in passes of bounded memory), then
interleaved channels-last with the pixels without data zeroed, by the C kernels (realfake.cutouts._stamps) or numpy.
"""

from __future__ import annotations

import numpy as np

from realfake import BANDS
from realfake.inputs.coadds import Coadd, PlaneBuffers, iter_planes, stamp_origins

try:  # the C kernels (setup.py); where they could not be built, numpy cuts the same stamps, more slowly
    from realfake.cutouts import _stamps
except ImportError:
    _stamps = None


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


def compact(stamps: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The kept stamps, moved to the front of ``stamps`` in order (no fresh memory)."""
    for j, i in enumerate(np.flatnonzero(keep)):
        if i != j:
            stamps[j] = stamps[i]
    return stamps[: int(keep.sum())]
