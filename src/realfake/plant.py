"""Planted defects: known perturbations applied to the real galaxies' own cutouts (the sensitivity grid).

A run's real galaxies are split, in every brick, into two random halves of equal size; one half is
perturbed by a known amount and labelled as the "fakes". The same shards, folds, training and
statistics then measure what the classifier can see of that perturbation on this survey's depth, PSF
and neighbours, with no synthetic release involved (docs/evaluation.md, "Sensitivity").

Each perturbation acts on one stamp's image planes and, where it says so, its inverse-variance planes:

- ``psf``: the PSF's FWHM widened by a fraction: each band is convolved with a Gaussian of
  sigma_p * sqrt((1 + size)^2 - 1), sigma_p the band's PSF (Gaussian of the catalogue's ``psfsize``),
  so that a Gaussian PSF becomes one (1 + size) times wider. The blur also smooths the noise; white noise
  is added to bring each pixel's variance back to 1/ivar (the noise then stays slightly correlated:
  the smoothing of a real injection code's model is not, so this is a little easier to see than a
  wrong PSF model alone).
- ``flux``: the source's flux scaled by 1 + size: the stamp smoothed by its PSF, times ``size``, is
  added inside a disc tapered to zero at the stamp's edge (the light of neighbours within it scaled too);
  smoothed first so that the noise is not scaled along with the light.
- ``noise``: Gaussian noise of variance size / ivar added; the inverse variance updated to match.
- ``noise_unrecorded``: the same noise, the inverse variance left as it was (pixels noisier than their
  inverse variance says: a missing or mis-scaled noise term of an injection code).
- ``offset``: the image shifted by ``size`` pixels in a random direction, by a phase shift of its Fourier
  transform (no interpolation, which would smooth the noise); the inverse variance left in place. The
  stamp wraps around at its edges (the network's default crop sees only the central 32x32 pixels).

Every random number is drawn from the seed, the brick and the source id, so the result does not
depend on batching or on the order of the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import FAKE, REAL

log = logging.getLogger(__name__)

KINDS = ("psf", "flux", "noise", "noise_unrecorded", "offset")
BANDS = ("g", "r", "z")
PIXSCALE = 0.262  # arcsec per pixel of a Legacy Survey coadd
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


def source_rng(seed: int, brick: str, source_id: int) -> np.random.Generator:
    """The random stream of one source: a function of the seed, its brick and its id only."""
    return np.random.default_rng(_seed(seed, brick, int(source_id)))


def psf_sigma_px(psfsize_arcsec: float) -> float:
    """A Gaussian PSF's sigma in pixels from the catalogue's FWHM (``psfsize_<band>``, arcsec)."""
    return float(psfsize_arcsec) / FWHM_PER_SIGMA / PIXSCALE


def _gaussian(plane: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(plane, sigma, mode="reflect", truncate=5.0)


def _kernel_power(sigma: float) -> float:
    """Sum of the squared weights of the Gaussian filter: the factor by which it scales white noise's variance."""
    n = 2 * int(5.0 * sigma + 0.5) + 1
    delta = np.zeros((n, n))
    delta[n // 2, n // 2] = 1.0
    return float(np.sum(_gaussian(delta, sigma) ** 2))


def widen_psf(image, ivar, sigma_psf: float, size: float, rng) -> np.ndarray:
    """One band's image with its PSF (1 + size) times wider; the noise brought back to 1/ivar per pixel."""
    if size == 0:
        return np.array(image, dtype=np.float32)
    sigma_k = sigma_psf * np.sqrt((1.0 + size) ** 2 - 1.0)
    out = _gaussian(image.astype(np.float64), sigma_k)
    has = ivar > 0
    var = np.where(has, 1.0 / np.where(has, ivar, 1.0), 0.0) * (1.0 - _kernel_power(sigma_k))
    out += rng.standard_normal(image.shape) * np.sqrt(var)
    return np.where(has, out, image).astype(np.float32)


def taper(shape, r_flat: float, r_zero: float) -> np.ndarray:
    """1 within ``r_flat`` pixels of the stamp's centre, a cosine down to 0 at ``r_zero``."""
    yy, xx = np.indices(shape, dtype=np.float64)
    r = np.hypot(yy - (shape[0] - 1) / 2.0, xx - (shape[1] - 1) / 2.0)
    t = np.clip((r - r_flat) / max(r_zero - r_flat, 1e-9), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


def scale_flux(image, ivar, sigma_psf: float, size: float) -> np.ndarray:
    """One band's image with the light around the centre scaled by 1 + size (noise left as it was)."""
    if size == 0:
        return np.array(image, dtype=np.float32)
    half = min(image.shape) / 2.0
    w = taper(image.shape, 0.6 * half, 0.95 * half)
    out = image + size * w * _gaussian(image.astype(np.float64), sigma_psf)
    return np.where(ivar > 0, out, image).astype(np.float32)


def add_noise(image, ivar, size: float, rng, record: bool) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian noise of variance size / ivar added; the inverse variance divided by 1 + size if ``record``."""
    has = ivar > 0
    sd = np.sqrt(size / np.where(has, ivar, 1.0)) * has
    out = (image + rng.standard_normal(image.shape) * sd).astype(np.float32)
    return out, ((ivar / (1.0 + size)).astype(np.float32) if record else ivar.copy())


def shift(image, dy: float, dx: float) -> np.ndarray:
    """The image moved by (dy, dx) pixels, by a phase shift of its Fourier transform (periodic at the edges).

    The Nyquist row and column (even sizes) are left as they are: no fractional shift of them stays real, and
    dropping their imaginary part would take their share of the noise's power away (2% of a 64x64 stamp's)."""
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1])[None, :]
    phase = np.exp(-2j * np.pi * (ky * dy + kx * dx))
    phase[(np.abs(ky) == 0.5) | (np.abs(kx) == 0.5)] = 1.0
    return np.fft.ifft2(np.fft.fft2(image.astype(np.float64)) * phase).real.astype(np.float32)


def perturb(stamp: np.ndarray, channels, kind: str, size: float, psfsize: dict, rng) -> np.ndarray:
    """One (S, S, C) stamp perturbed by ``kind`` of ``size`` (module docstring); ``psfsize``: band -> FWHM arcsec."""
    if kind not in KINDS + ("none",):
        raise ValueError(f"planted defect kind must be one of {KINDS} (or none), not {kind!r}")
    channels = list(channels)
    out = stamp.copy()
    if kind == "none" or size == 0:  # the null row: the halves differ by nothing but their labels
        return out
    angle = rng.uniform(0.0, 2.0 * np.pi)  # drawn for every kind, so each kind's noise starts at the same point
    for band in BANDS:
        if band not in channels:
            continue
        i = channels.index(band)
        j = channels.index(f"ivar_{band}") if f"ivar_{band}" in channels else None
        ivar = stamp[..., j] if j is not None else np.ones(stamp.shape[:2], np.float32)
        image = stamp[..., i]
        if kind == "psf":
            out[..., i] = widen_psf(image, ivar, psf_sigma_px(psfsize[band]), size, rng)
        elif kind == "flux":
            out[..., i] = scale_flux(image, ivar, psf_sigma_px(psfsize[band]), size)
        elif kind in ("noise", "noise_unrecorded"):
            out[..., i], new_ivar = add_noise(image, ivar, size, rng, record=kind == "noise")
            if j is not None:
                out[..., j] = new_ivar
        else:  # offset
            out[..., i] = shift(image, size * np.sin(angle), size * np.cos(angle))
    return out


def halves(sources: pd.DataFrame, seed: int) -> np.ndarray:
    """For each real galaxy of a brick file, 1 if it goes to the perturbed half, else 0: in every brick the reals
    in an order drawn from the seed, alternately to each half (equal halves; an odd one out stays unperturbed)."""
    label = np.zeros(len(sources), dtype=np.int8)
    keys = np.array([_seed(seed, "half", b, int(i)) for b, i in zip(sources["brick"], sources["id"])],
                    dtype=np.uint64)
    for brick in pd.unique(sources["brick"]):
        rows = np.flatnonzero(sources["brick"].to_numpy() == brick)
        order = rows[np.argsort(keys[rows], kind="stable")]
        label[order[1::2]] = FAKE
    return label


def brick_psfsize(sources: pd.DataFrame, path) -> pd.DataFrame:
    """Each source's PSF FWHM per band; a source without one takes its brick's median, and a brick with none is
    an error naming the file (brick files cut before observing conditions were recorded: recut them)."""
    cols = [f"psfsize_{b}" for b in BANDS]
    missing = [c for c in cols if c not in sources]
    if missing:
        raise ValueError(f"{path}: the sources table has no {', '.join(missing)}: cut the brick again with this "
                         "version (the PSF widening needs each source's PSF)")
    out = sources[cols].astype(float).copy()
    for c in cols:
        bad = ~(out[c] > 0)
        if bad.all():
            raise ValueError(f"{path}: no source has a {c}: the PSF widening cannot be planted in this brick")
        out.loc[bad, c] = float(out.loc[~bad, c].median())
    return out


def plant_brick(src_path, out_path, kind: str, size: float, seed: int) -> dict:
    """A brick file of reals only, half of them (:func:`halves`) perturbed and labelled fake; written atomically.

    Returns the counts (brick, reals, perturbed)."""
    import h5py

    from .brickfile import brick_writer, read_sources, read_table

    sources = read_sources(src_path)
    real = sources["label"].to_numpy() == REAL
    reals = sources[real].reset_index(drop=True)
    with h5py.File(src_path, "r") as f:
        channels = [c.decode() if isinstance(c, bytes) else str(c) for c in f["cutouts"].attrs["channels"]]
        size_px = f["cutouts"].shape[1]
        attrs = {k: v for k, v in f.attrs.items() if k not in ("channels", "cutout_size", "pixscale_arcsec",
                                                               "labels", "source_files", "code_version", "layout")}
        files = list(f.attrs.get("source_files", []))
        tables = {t: read_table(src_path, t) for t in ("offedge", "cuts")}
        rows = np.flatnonzero(real)
        reals_label = halves(reals, seed)
        psf = brick_psfsize(reals, src_path) if kind in ("psf", "flux") and size and len(reals) else None
        attrs.update(planted=json.dumps({"kind": kind, "size": size, "seed": seed, "from": str(src_path)}))
        with brick_writer(out_path, size_px, channels, attrs) as (append, finish):
            block = 64
            for i0 in range(0, len(rows), block):
                stamps = f["cutouts"][rows[i0 : i0 + block]]
                for k in range(len(stamps)):
                    i = i0 + k
                    if reals_label[i] != FAKE:
                        continue
                    row = reals.iloc[i]
                    band_psf = {b: psf.iloc[i][f"psfsize_{b}"] for b in BANDS} if psf is not None else {}
                    stamps[k] = perturb(stamps[k], channels, kind, size,
                                        band_psf, source_rng(seed, row["brick"], row["id"]))
                append(stamps)
            reals = reals.assign(label=reals_label)
            finish(reals, tables["offedge"], tables["cuts"], files)
    return {"brick": attrs.get("brick", Path(src_path).stem), "reals": len(reals),
            "perturbed": int((reals_label == FAKE).sum())}
