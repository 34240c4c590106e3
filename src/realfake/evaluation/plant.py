"""Planted defects: known perturbations applied to the real galaxies' own cutouts (the sensitivity grid).

A run's real galaxies are split, in every brick, into two random halves of equal size; one half is
perturbed by a known amount and labelled as the "fakes". The same shards, folds, training and
statistics then measure what the classifier can see of that perturbation on this survey's depth, PSF
and neighbours, with no synthetic release involved (docs/evaluation.md, "Sensitivity").

Each perturbation acts on one stamp's image planes and, where it says so, its inverse-variance planes:

- ``psf``: the PSF's FWHM widened by a fraction: each band is convolved with a Gaussian K of
  sigma_p * sqrt((1 + size)^2 - 1), sigma_p the band's PSF (Gaussian of the catalogue's ``psfsize``),
  so that a Gaussian PSF becomes one (1 + size) times wider. The blur takes the noise's power at each
  frequency k down to K(k)^2; noise of power 1 - K(k)^2 is added, so that the noise stays white at
  1/ivar per pixel and only the light's profile changes.
- ``flux``: the source's flux scaled by 1 + size: the stamp smoothed by its PSF, times ``size``, is
  added inside a disc tapered to zero near the stamp's edge (flat over the central 38 pixels; the light of
  neighbours within it is scaled too). The smoothed noise comes along with the light; the other half is
  given noise of the same spectrum, so that the halves differ in their light only.
- ``noise``: Gaussian noise of variance size / ivar added; the inverse variance updated to match.
- ``noise_unrecorded``: the same noise, the inverse variance left as it was (pixels noisier than their
  inverse variance says: a missing or mis-scaled noise term of an injection code).
- ``offset``: the image shifted by ``size`` pixels in a random direction, by a phase shift of its Fourier
  transform (no interpolation, which would smooth the noise); the inverse variance left in place. The
  stamp wraps around at its edges (the network's default crop sees only the central 32x32 pixels).

Filters act on the stamp's discrete frequencies (periodic at its edges, far outside the network's
central crop). Every random number is drawn from the seed, the brick and the source id, so the result
does not depend on batching or on the order of the files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from realfake import BANDS, FAKE, REAL
from realfake.inputs.bricks import PIXSCALE_ARCSEC

KINDS = ("psf", "flux", "noise", "noise_unrecorded", "offset")
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


def source_rng(seed: int, brick: str, source_id: int) -> np.random.Generator:
    """The random stream of one source: a function of the seed, its brick and its id only."""
    return np.random.default_rng(_seed(seed, brick, int(source_id)))


def psf_sigma_px(psfsize_arcsec: float) -> float:
    """A Gaussian PSF's sigma in pixels from the catalogue's FWHM (``psfsize_<band>``, arcsec)."""
    return float(psfsize_arcsec) / FWHM_PER_SIGMA / PIXSCALE_ARCSEC


def _frequencies(shape) -> tuple[np.ndarray, np.ndarray]:
    """A stamp's discrete frequencies (cycles per pixel), as a column and a row."""
    return np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]


def transfer(shape, sigma: float) -> np.ndarray:
    """A Gaussian of ``sigma`` pixels as a filter on a stamp's discrete frequencies (periodic convolution)."""
    ky, kx = _frequencies(shape)
    return np.exp(-2.0 * np.pi**2 * sigma**2 * (ky**2 + kx**2))


def _filter(plane: np.ndarray, gain: np.ndarray) -> np.ndarray:
    return np.fft.ifft2(np.fft.fft2(np.asarray(plane, dtype=np.float64)) * gain).real


def _sigma_map(ivar) -> np.ndarray:
    has = ivar > 0
    return np.where(has, 1.0 / np.sqrt(np.where(has, ivar, 1.0)), 0.0)


def coloured_noise(shape, power: np.ndarray, rng) -> np.ndarray:
    """Unit white noise filtered to the power spectrum ``power`` (per discrete frequency, 1 = white)."""
    return _filter(rng.standard_normal(shape), np.sqrt(np.clip(power, 0.0, None)))


def widen_psf(image, ivar, sigma_psf: float, size: float, rng) -> np.ndarray:
    """One band's image with its PSF (1 + size) times wider, its noise still white at 1/ivar per pixel.

    The blur K takes the noise's power at frequency k down to K(k)^2; noise of power 1 - K(k)^2 puts it back,
    so that nothing but the light's profile changes (white noise added instead would leave the blurred half
    with less high-frequency noise, which a network sees before any PSF: most at the smallest blurs)."""
    if size == 0:
        return np.array(image, dtype=np.float32)
    k = transfer(image.shape, sigma_psf * np.sqrt((1.0 + size) ** 2 - 1.0))
    out = _filter(image, k) + coloured_noise(image.shape, 1.0 - k**2, rng) * _sigma_map(ivar)
    return np.where(ivar > 0, out, image).astype(np.float32)


def taper(shape, r_flat: float, r_zero: float) -> np.ndarray:
    """1 within ``r_flat`` pixels of the stamp's centre, a cosine down to 0 at ``r_zero``."""
    yy, xx = np.indices(shape, dtype=np.float64)
    r = np.hypot(yy - (shape[0] - 1) / 2.0, xx - (shape[1] - 1) / 2.0)
    t = np.clip((r - r_flat) / max(r_zero - r_flat, 1e-9), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


def _flux_taper(shape) -> np.ndarray:
    half = min(shape) / 2.0
    return taper(shape, 0.6 * half, 0.95 * half)  # flat over the central 38 pixels: the network's crop and more


def scale_flux(image, ivar, sigma_psf: float, size: float) -> np.ndarray:
    """One band's image with the light around the centre scaled by 1 + size.

    The light added is the stamp smoothed by its PSF (G), x size: its noise comes along, smoothed, so the
    noise's power at frequency k grows to (1 + size G(k))^2; :func:`match_flux_noise` gives the other half
    the same."""
    if size == 0:
        return np.array(image, dtype=np.float32)
    out = image + size * _flux_taper(image.shape) * _filter(image, transfer(image.shape, sigma_psf))
    return np.where(ivar > 0, out, image).astype(np.float32)


def match_flux_noise(image, ivar, sigma_psf: float, size: float, rng) -> np.ndarray:
    """One band of the unperturbed half given the noise :func:`scale_flux` adds to the other half's: power
    (1 + size G)^2 - 1 = 2 size G + size^2 G^2, so that the halves' noise is the same and only the light differs."""
    if size == 0:
        return np.array(image, dtype=np.float32)
    g = transfer(image.shape, sigma_psf)
    extra = coloured_noise(image.shape, 2.0 * size * g + (size * g) ** 2, rng) * _sigma_map(ivar)
    out = image + _flux_taper(image.shape) * extra
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
    ky, kx = _frequencies(image.shape)
    phase = np.exp(-2j * np.pi * (ky * dy + kx * dx))
    phase[(np.abs(ky) == 0.5) | (np.abs(kx) == 0.5)] = 1.0
    return _filter(image, phase).astype(np.float32)


def perturb(stamp: np.ndarray, channels, kind: str, size: float, psfsize: dict, rng, half: int = FAKE) -> np.ndarray:
    """One (S, S, C) stamp perturbed by ``kind`` of ``size`` (module docstring); ``psfsize``: band -> FWHM arcsec.

    ``half``: FAKE, the perturbed half; REAL, the other, which a perturbation that adds noise besides what it
    means to change (``flux``) gives the same noise, and the others leave as it is."""
    if kind not in KINDS + ("none",):
        raise ValueError(f"planted defect kind must be one of {KINDS} (or none), not {kind!r}")
    channels = list(channels)
    out = stamp.copy()
    if kind == "none" or size == 0:  # the null row: the halves differ by nothing but their labels
        return out
    if half == REAL and kind != "flux":
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
        elif kind == "flux" and half == REAL:
            out[..., i] = match_flux_noise(image, ivar, psf_sigma_px(psfsize[band]), size, rng)
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

    from realfake.cutouts.brickfile import brick_writer, read_sources, read_table

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
                    row = reals.iloc[i]
                    band_psf = {b: psf.iloc[i][f"psfsize_{b}"] for b in BANDS} if psf is not None else {}
                    stamps[k] = perturb(stamps[k], channels, kind, size, band_psf,
                                        source_rng(seed, row["brick"], row["id"]), half=int(reals_label[i]))
                append(stamps)
            reals = reals.assign(label=reals_label)
            finish(reals, tables["offedge"], tables["cuts"], files)
    return {"brick": attrs.get("brick", Path(src_path).stem), "reals": len(reals),
            "perturbed": int((reals_label == FAKE).sum())}
