"""A synthetic Legacy Survey Data Release and obiwan injection run, rendered with GalSim.

The files have the exact on-disk layout of the real thing (docs/inputs.md, "Input
layout read"), so every reader in the pipeline runs on them unchanged:

- the release: ``survey-bricks.fits.gz``, RICE tile-compressed coadds (in
  100x100 tiles, as legacypipe writes them) with a TAN WCS centred on the
  brick, and Tractor catalogues in the DR9, DR8 or DR5 schema; one tree, or
  DR9's region folders (``north/``, ``south/``, each with its
  ``survey-bricks-dr9-<region>.fits.gz``; a brick may be in both);
- the injection run, in any obiwan layout (injection.LAYOUTS): simulation
  catalogues of ELG-like single Sersic (n = 1) fakes, sheared and convolved
  with the band's PSF, added to the same sky; and each run's rerun Tractor
  catalogue, which measures every source of the injected sky, fakes included,
  with the same measurement model as the release's catalogue.

The "real" galaxies are deliberately richer than the injected model (bulge
plus disc with colour gradients, star-forming clumps, a range of Sersic
indices and sizes): a good classifier should find that difference. Two
controls change the fakes: ``fake_model="real"`` draws them from the real
population (a null test) and ``fake_psf=False`` skips the PSF convolution
(a positive control), as does ``fake_flux_scale`` (fakes injected brighter
than their catalogue says, like a zero-point error). For the null test to be exact, the fakes' simulation
catalogue then also carries the Tractor ``type`` a real galaxy of the same
parameters gets, and a ``min_fake_separation`` larger than a cutout keeps
other fakes out of a fake's stamp (a real's stamp holds no fakes); both
classes are selected on their measured values (selection.fakes: measured).
"""

from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import BANDS, layout
from .atomic import atomic_path
from .bricks import PIXSCALE_ARCSEC, brick_grid

log = logging.getLogger(__name__)

CD = PIXSCALE_ARCSEC / 3600.0  # deg per pixel: CD2_2 = -CD1_1 = 7.2778e-5
# Galactic extinction coefficients A_b / E(B-V) for DECam (DR9)
EXTINCTION = {"g": 3.214, "r": 2.165, "z": 1.211}
PSF_FWHM = {"g": 1.5, "r": 1.35, "z": 1.25}  # arcsec, typical seeing
# Per-pixel noise of one exposure (nanomaggies): ~ 5-sigma depths g 24.0, r 23.4, z 22.5
SKY_SIGMA = {"g": 0.0065, "r": 0.011, "z": 0.025}
RELEASE = {"dr9": 9010, "dr8": 8000, "dr5": 5000}
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


# The graded defects of the injected model: MockConfig's fields below (docs/evaluation.md, "Graded defects")
DEFECTS = ("fake_psf_scale", "fake_flux_scale", "fake_sersic_offset", "fake_rhalf_scale", "fake_ellipticity",
           "fake_shot_noise", "fake_invvar_scale", "fake_offset")


@dataclass(frozen=True)
class MockConfig:
    """What to render; every field has a config key under ``synthetic:``."""

    bricks: tuple[str, ...]
    image_size: int = 800
    seed: int = 42
    schema: str = "dr9"
    rs: tuple[str, ...] = ("rs0",)
    galaxy_density: float = 16.0  # real galaxies per arcmin^2
    star_density: float = 2.0  # stars per arcmin^2
    fake_density: float = 7.0  # injected sources per arcmin^2 and rs
    fake_model: str = "elg"  # "elg": single Sersic n=1; "real": same model as the real galaxies
    fake_psf: bool = True  # False: fakes are not convolved with the PSF
    fake_flux_scale: float = 1.0  # injected flux / catalogue flux (10: a zero-point error of 2.5 mag)
    # Graded defects of the injected model (docs/evaluation.md, "Graded defects"); the defaults inject it right
    fake_psf_scale: float = 1.0  # the fakes' PSF FWHM x this (a misestimated PSF model)
    fake_sersic_offset: float = 0.0  # the ELG model's Sersic index 1 + this (a wrong profile)
    fake_rhalf_scale: float = 1.0  # the ELG model's half-light radius x this, the catalogue's unchanged
    fake_ellipticity: str = "reduced_shear"  # the reals' convention; "distortion": e1, e2 read as |e| = 2g/(1+g^2)
    fake_shot_noise: float = 0.0  # Gaussian noise of variance this x model (nanomaggy) added over each fake
    fake_invvar_scale: float = 1.0  # the injection coadds' inverse variance x this: disagrees with their pixels
    fake_offset: float = 0.0  # pixels: fakes drawn this far (in x) from their catalogue position
    min_fake_separation: float = 5.0  # arcsec; closer fakes are skipped, as obiwan does
    # region folders ({"north": bricks, "south": bricks}; a brick may be in both), else one tree
    regions: dict = field(default_factory=dict)
    injection_layout: str = "obiwan2018"
    brick_rs: dict = field(default_factory=dict)  # brick -> its seed folders, where they differ from ``rs``

    def __post_init__(self):
        if self.schema not in RELEASE:
            raise ValueError(f"synthetic.schema must be one of {sorted(RELEASE)}, not {self.schema!r}")
        if self.fake_model not in ("elg", "real"):
            raise ValueError(f"synthetic.fake_model must be 'elg' or 'real', not {self.fake_model!r}")
        for key in ("fake_flux_scale", "fake_psf_scale", "fake_rhalf_scale", "fake_invvar_scale"):
            if not getattr(self, key) > 0:
                raise ValueError(f"synthetic.{key} must be > 0, not {getattr(self, key)}")
        if not 0.3 <= 1 + self.fake_sersic_offset <= 6.2:  # GalSim's range of Sersic indices
            raise ValueError(f"synthetic.fake_sersic_offset: the index 1 + {self.fake_sersic_offset} is outside "
                             "GalSim's 0.3-6.2")
        if self.fake_ellipticity not in ("reduced_shear", "distortion"):
            raise ValueError(f"synthetic.fake_ellipticity must be reduced_shear or distortion, not "
                             f"{self.fake_ellipticity!r}")
        if self.fake_shot_noise < 0:
            raise ValueError(f"synthetic.fake_shot_noise must be >= 0, not {self.fake_shot_noise}")
        if self.min_fake_separation < 0:
            raise ValueError(f"synthetic.min_fake_separation must be >= 0, not {self.min_fake_separation}")
        if self.image_size < 64:
            raise ValueError(f"synthetic.image_size must be >= 64 pixels, not {self.image_size}")
        for b in self.bricks:
            layout.check_brick(b)
        from .injection import LAYOUTS

        if self.injection_layout not in LAYOUTS:
            raise ValueError(f"synthetic.injection_layout must be one of {sorted(LAYOUTS)}, not "
                             f"{self.injection_layout!r}")
        pattern = LAYOUTS[self.injection_layout].seed_re
        for rs in set(self.rs).union(*map(set, self.brick_rs.values())):
            if not re.fullmatch(pattern, rs):
                raise ValueError(f"synthetic.rs: {rs!r} is not a seed folder of the {self.injection_layout} layout "
                                 f"({pattern})")
        for region, bricks in self.regions.items():
            if region not in layout.REGIONS:
                raise ValueError(f"synthetic.regions: {region!r} is not one of {layout.REGIONS}")
            stray = sorted(set(bricks) - set(self.bricks))
            if stray:
                raise ValueError(f"synthetic.regions.{region}: bricks not in synthetic.bricks: {stray}")

    def seeds(self, brick: str) -> tuple[str, ...]:
        return tuple(self.brick_rs.get(brick, self.rs))

    @property
    def area_arcmin2(self) -> float:
        return (self.image_size * PIXSCALE_ARCSEC / 60.0) ** 2


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
    from astropy.wcs import WCS

    keys = ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")
    return WCS({k: header[k] for k in keys})


# --------------------------------------------------------------------------- populations


def elg_colours(rng, n):
    """(g-r, r-z) inside the reference ELG colour box (no pad)."""
    rz = rng.uniform(0.3, 1.5, n)
    top = np.minimum(1.15 * rz - 0.15, -1.2 * rz + 1.6)
    gr = rng.uniform(-0.1, 1.0, n) * (top + 0.1) - 0.1
    return gr, rz


def real_population(rng, n):
    """Real galaxies: 65 % ELG-like, the rest redder and brighter or fainter."""
    elg = rng.random(n) < 0.65
    gr, rz = elg_colours(rng, n)
    gr = np.where(elg, gr, rng.uniform(0.9, 1.8, n))
    rz = np.where(elg, rz, rng.uniform(0.7, 1.6, n))
    g = np.where(elg, rng.uniform(21.0, 24.4, n), rng.uniform(19.5, 24.8, n))
    disc_r = np.exp(rng.uniform(np.log(0.2), np.log(2.2), n))
    bt = rng.uniform(0.15, 0.9, n)
    return dict(
        g=g,
        gr=gr,
        rz=rz,
        disc_r=disc_r,
        bulge_r=disc_r * rng.uniform(0.15, 0.5, n),
        bulge_n=rng.uniform(1.5, 4.0, n),
        bt=bt,
        clump_frac=np.where(rng.random(n) < 0.8, rng.uniform(0.25, 0.5, n), 0.0),
        e1=rng.normal(0, 0.2, n).clip(-0.6, 0.6),
        e2=rng.normal(0, 0.2, n).clip(-0.6, 0.6),
    )


def elg_population(rng, n):
    """The injected model: ELG colours and sizes, single exponential (Sersic n = 1)."""
    gr, rz = elg_colours(rng, n)
    return dict(
        g=rng.uniform(21.0, 24.0, n),
        gr=gr,
        rz=rz,
        rhalf=np.exp(rng.uniform(np.log(0.25), np.log(1.5), n)),
        n=np.ones(n),
        e1=rng.normal(0, 0.2, n).clip(-0.6, 0.6),
        e2=rng.normal(0, 0.2, n).clip(-0.6, 0.6),
    )


def band_fluxes(g, gr, rz):
    """Observed-frame fluxes (nanomaggies) from g and colours."""
    mags = {"g": g, "r": g - gr, "z": g - gr - rz}
    return {b: 10 ** ((22.5 - mags[b]) / 2.5) for b in BANDS}


def real_galaxy_profile(galsim, p, i, band, flux, rng_clumps):
    """Bulge + disc (+ clumps) with a colour gradient: the bulge is redder than the disc."""
    redden = {"g": 1.0, "r": 1.3, "z": 1.6}[band]
    bt = min(0.95, p["bt"][i] * redden)
    cf = p["clump_frac"][i] * {"g": 1.0, "r": 0.7, "z": 0.5}[band]
    shear = galsim.Shear(g1=p["e1"][i], g2=p["e2"][i])
    disc = galsim.Exponential(half_light_radius=p["disc_r"][i], flux=flux * (1 - bt) * (1 - cf))
    parts = [disc.shear(shear)]
    if bt > 0.01:
        bulge = galsim.Sersic(n=p["bulge_n"][i], half_light_radius=p["bulge_r"][i], flux=flux * bt, trunc=0)
        parts.append(bulge.shear(shear))
    if cf > 0:
        k = 3
        offsets, weights = rng_clumps
        for j in range(k):
            dx, dy = offsets[j] * p["disc_r"][i]
            clump = galsim.Gaussian(sigma=0.15, flux=flux * (1 - bt) * cf * weights[j])
            parts.append(clump.shift(dx, dy))
    return galsim.Add(parts)


def render(galsim, image, profile, psf, x, y, convolve=True):
    """Add ``profile`` (convolved with ``psf``) at 0-indexed pixel (x, y) of a galsim image."""
    obj = galsim.Convolve(profile, psf) if convolve else profile
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    size = int(min(301, max(33, 2 * int(obj.calculateHLR(scale=PIXSCALE_ARCSEC) * 6 / PIXSCALE_ARCSEC) + 1)))
    size += 1 - size % 2  # odd: the stamp's centre is a pixel centre
    method = "auto" if convolve else "no_pixel"
    stamp = obj.drawImage(
        nx=size, ny=size, scale=PIXSCALE_ARCSEC, offset=(x - ix, y - iy), method=method
    )
    stamp.setCenter(ix + 1, iy + 1)  # galsim images are 1-indexed
    overlap = stamp.bounds & image.bounds
    if overlap.isDefined():
        image[overlap] += stamp[overlap]


# --------------------------------------------------------------------------- one brick


def exposure_map(rng, size):
    """Number of exposures per pixel: smooth patches of 1-3, a corner with none, a bad column."""
    nexp = np.ones((size, size), dtype=np.int16)
    cuts = np.sort(rng.integers(size // 5, 4 * size // 5, 2))
    nexp[:, cuts[0] :] += 1
    nexp[cuts[1] :, :] += 1
    corner = int(size * rng.uniform(0.12, 0.22))
    if rng.random() < 0.5:
        nexp[:corner, :corner] = 0
    else:
        nexp[-corner:, -corner:] = 0
    nexp[:, rng.integers(0, size)] = 0
    return nexp


def _positions(rng, n, size):
    return rng.uniform(-0.5, size - 0.5, n), rng.uniform(-0.5, size - 0.5, n)


def _write_image(path, data, header, compression, dither_seed=None, tile=None):
    import fitsio

    hdr = [{"name": k, "value": v} for k, v in header.items()]
    extra = {"dither_seed": dither_seed} if dither_seed is not None else {}
    with atomic_path(path) as tmp:
        with fitsio.FITS(str(tmp), "rw", clobber=True) as f:
            f.write(None)  # empty primary HDU, as in the real coadds
            f.write(data, header=hdr, tile_dims=tile or tile_dims(data.shape), **compression, **extra)


def _write_table(path, table, extname=None):
    import fitsio

    with atomic_path(path) as tmp:
        fitsio.write(str(tmp), table, extname=extname, clobber=True)


def make_brick(cfg: MockConfig, brick_row: np.void, release_root: Path, injection_root: Path, region: str = "") -> dict:
    """Render one brick of the release (of ``region``: another survey's sky) and its injection runs; return counts
    for the log."""
    import galsim

    from .injection import LAYOUTS

    lay = LAYOUTS[cfg.injection_layout]
    brick = brick_row["BRICKNAME"].decode().strip()
    stream = [cfg.seed, int(brick_row["BRICKID"])] + ([1 + layout.REGIONS.index(region)] if region else [])
    rng = np.random.default_rng(stream)
    size = cfg.image_size
    ra0, dec0 = float(brick_row["RA"]), float(brick_row["DEC"])
    header = wcs_header(ra0, dec0, size)
    wcs = astropy_wcs(header)
    ebv = rng.uniform(0.01, 0.08)
    mw = {b: 10 ** (-0.4 * EXTINCTION[b] * ebv) for b in BANDS}
    fwhm = {b: PSF_FWHM[b] * rng.uniform(0.85, 1.15) for b in BANDS}
    psf = {b: galsim.Moffat(beta=3.5, fwhm=fwhm[b]) for b in BANDS}
    nexp = exposure_map(rng, size)

    # -- the real sky: galaxies and stars
    ngal = rng.poisson(cfg.galaxy_density * cfg.area_arcmin2)
    nstar = rng.poisson(cfg.star_density * cfg.area_arcmin2)
    gal = real_population(rng, ngal)
    gx, gy = _positions(rng, ngal, size)
    clumps = [(rng.normal(0, 0.8, (3, 2)), rng.dirichlet(np.ones(3))) for _ in range(ngal)]
    star_g = rng.uniform(16.0, 22.5, nstar)
    star_gr, star_rz = rng.uniform(0.2, 1.4, nstar), rng.uniform(0.0, 1.5, nstar)
    sx, sy = _positions(rng, nstar, size)
    gflux = band_fluxes(gal["g"], gal["gr"], gal["rz"])
    sflux = band_fluxes(star_g, star_gr, star_rz)

    noiseless = {}
    for b in BANDS:
        img = galsim.ImageF(size, size, scale=PIXSCALE_ARCSEC)
        for i in range(ngal):
            prof = real_galaxy_profile(galsim, gal, i, b, gflux[b][i] * mw[b], clumps[i])
            render(galsim, img, prof, psf[b], gx[i], gy[i])
        for i in range(nstar):
            render(galsim, img, galsim.DeltaFunction(flux=sflux[b][i] * mw[b]), psf[b], sx[i], sy[i])
        noiseless[b] = img.array.copy()

    invvar = {b: (nexp / SKY_SIGMA[b] ** 2).astype(np.float32) for b in BANDS}
    image = {}
    for b in BANDS:
        sigma = np.where(nexp > 0, SKY_SIGMA[b] / np.sqrt(np.maximum(nexp, 1)), 0.0)
        image[b] = np.where(nexp > 0, noiseless[b] + rng.normal(0.0, 1.0, (size, size)) * sigma, 0.0).astype(
            np.float32
        )

    for b in BANDS:  # every release, DR5 to DR10, names the band FILTERX
        h = dict(header, BRICKNAM=brick, BUNIT="nanomaggy", FILTERX=b)
        _write_image(layout.coadd_file(release_root, brick, "image", b), image[b], h, IMAGE_COMPRESSION,
                     dither_seed=1 + (cfg.seed * 7919 + int(brick_row["BRICKID"])) % 10000)
        _write_image(layout.coadd_file(release_root, brick, "invvar", b), invvar[b], h, INVVAR_COMPRESSION)

    sky = sky_truth(gal, gx, gy, gflux, star_g, sx, sy, sflux)
    _write_table(layout.tractor_file(release_root, brick), tractor_table(cfg, brick_row, wcs, sky, mw, fwhm, nexp, rng))

    # -- the injection runs: fakes added to the same sky
    nfake_total = 0
    for k, rs in enumerate(cfg.seeds(brick)):
        frng = np.random.default_rng(stream + [1000 + k])
        nfake = frng.poisson(cfg.fake_density * cfg.area_arcmin2)
        fx, fy = _positions(frng, nfake, size)
        if cfg.fake_model == "real":
            fp = real_population(frng, nfake)
            fclumps = [(frng.normal(0, 0.8, (3, 2)), frng.dirichlet(np.ones(3))) for _ in range(nfake)]
            rhalf = fp["disc_r"] * (1 - fp["bt"]) + fp["bulge_r"] * fp["bt"]
            nser = np.where(fp["bt"] < 0.5, 1.0, fp["bulge_n"])
        else:
            fp = elg_population(frng, nfake)
            rhalf, nser = fp["rhalf"], fp["n"]
        fflux = band_fluxes(fp["g"], fp["gr"], fp["rz"])
        inject = {b: fflux[b] * mw[b] * cfg.fake_flux_scale for b in BANDS}  # the simcat keeps fflux * mw
        drawn_rhalf = rhalf * (cfg.fake_rhalf_scale if cfg.fake_model == "elg" else 1.0)
        fake_psf = {b: galsim.Moffat(beta=3.5, fwhm=fwhm[b] * cfg.fake_psf_scale) for b in BANDS}
        nrng = np.random.default_rng(stream + [3000 + k])  # the defects' noise: a stream of its own
        ids = np.arange(nfake, dtype=np.int64)
        skipped = too_close(fx, fy, cfg.min_fake_separation / PIXSCALE_ARCSEC)
        added = ids[~skipped]
        coadd = lay.path(lay.coadd, injection_root, brick, rs)
        # obiwan's 2017 runs kept the coadds of their first seed only
        keep_coadd = not (lay.name == "obiwan2017" and k > 0)
        for b in BANDS:
            if not keep_coadd:
                break
            img = galsim.Image(image[b].copy(), scale=PIXSCALE_ARCSEC)
            for i in added:
                if cfg.fake_model == "real":
                    prof = real_galaxy_profile(galsim, fp, i, b, inject[b][i], fclumps[i])
                else:
                    shear = (galsim.Shear(e1=fp["e1"][i], e2=fp["e2"][i]) if cfg.fake_ellipticity == "distortion"
                             else galsim.Shear(g1=fp["e1"][i], g2=fp["e2"][i]))
                    prof = galsim.Sersic(n=1 + cfg.fake_sersic_offset, half_light_radius=drawn_rhalf[i],
                                         flux=inject[b][i]).shear(shear)
                render(galsim, img, prof, fake_psf[b], fx[i] + cfg.fake_offset, fy[i], convolve=cfg.fake_psf)
            arr = img.array
            if cfg.fake_shot_noise > 0:  # noise where the fakes' light is: variance fake_shot_noise x model
                model = np.maximum(arr - image[b], 0)
                arr = arr + nrng.normal(0, 1, arr.shape) * np.sqrt(cfg.fake_shot_noise * model)
            # no data stays no data: obiwan injects into exposures, not into gaps
            arr = np.where(nexp > 0, arr, 0.0).astype(np.float32)
            h = dict(header, BRICKNAM=brick, BUNIT="nanomaggy", FILTERX=b)
            _write_image(coadd / layout.coadd_name(brick, "image", b), arr, h, IMAGE_COMPRESSION,
                         dither_seed=1 + (cfg.seed * 7919 + int(brick_row["BRICKID"]) + 17 * (k + 1)) % 10000)
            _write_image(coadd / layout.coadd_name(brick, "invvar", b), invvar[b] * np.float32(cfg.fake_invvar_scale),
                         h, INVVAR_COMPRESSION)
        fakes = dict(x=fx, y=fy, flux={b: fflux[b] for b in BANDS}, fp=fp, rhalf=rhalf, nser=nser, ids=ids,
                     added=added, skipped=skipped)
        write_simcat(cfg, lay, injection_root, brick, rs, wcs, mw, fakes)
        # the rerun pipeline's catalogue of the injected sky: the same sources as the release's, measured anew,
        # and the fakes injected, measured alike (their flux as injected)
        # (as drawn: where it was drawn, at the size and flux it was drawn with)
        fsky = fake_truth(fp, fx + cfg.fake_offset, fy, fflux, drawn_rhalf, cfg.fake_flux_scale)
        fsky = {key: v[added] for key, v in fsky.items()}
        rerun = {key: np.concatenate([sky[key], fsky[key]]) for key in sky}
        rrng = np.random.default_rng(stream + [2000 + k])
        _write_table(lay.path(lay.tractor, injection_root, brick, rs),
                     tractor_table(cfg, brick_row, wcs, rerun, mw, fwhm, nexp, rrng))
        nfake_total += len(added)
    return {"brick": brick, "region": region, "galaxies": int(ngal), "stars": int(nstar), "fakes": nfake_total}


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
    _write_table(path, t)
    if lay.name == "obiwan2018":
        _write_table(layout.sim_ids_added_file(root, brick, rs), np.array(added, dtype=[("id", ">i8")]))
        _write_table(layout.skipped_ids_file(root, brick, rs), np.array(f["ids"][skipped], dtype=[("ids", ">i8")]))
        meta = np.zeros(1, dtype=[("brickname", "S8"), ("objtype", "S3"), ("seed", ">i8"), ("nobj", ">i4"),
                                  ("rs", "S24"), ("psf_convolved", "?"), ("model", "S8")])
        meta[0] = (brick, "elg", cfg.seed, nfake, rs, cfg.fake_psf, cfg.fake_model)
        _write_table(layout.metacat_file(root, brick, rs), meta)


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


def tractor_type(r_half, bt, is_star, schema: str) -> np.ndarray:
    """The Tractor type of each source: PSF for stars; galaxies by size and bulge fraction (DR5: COMP for SER)."""
    kind = np.select([is_star, r_half < 0.35, bt < 0.2, bt > 0.7], ["PSF", "REX", "EXP", "DEV"], "SER")
    if schema in ("dr5", "dr8"):
        kind = np.where(kind == "SER", "COMP", kind)
    return kind


def too_close(x, y, min_sep_pix):
    """Mask of sources within ``min_sep_pix`` of an earlier one (obiwan skips those)."""
    skip = np.zeros(len(x), dtype=bool)
    for i in range(len(x)):
        d2 = (x[:i] - x[i]) ** 2 + (y[:i] - y[i]) ** 2
        skip[i] = bool(np.any(d2[~skip[:i]] < min_sep_pix**2))
    return skip


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


def sky_truth(gal, gx, gy, gflux, star_g, sx, sy, sflux) -> dict:
    """The true parameters of every source of a brick's sky (galaxies, then stars), for tractor_table."""
    ngal, nstar = len(gx), len(sx)
    star = np.zeros(nstar)
    return dict(
        x=np.concatenate([gx, sx]), y=np.concatenate([gy, sy]),
        **{f"flux_{b}": np.concatenate([gflux[b], sflux[b]]) for b in BANDS},
        g=np.concatenate([gal["g"], star_g]),
        is_star=np.r_[np.zeros(ngal, bool), np.ones(nstar, bool)],
        r_half=np.concatenate([gal["disc_r"] * (1 - gal["bt"]) + gal["bulge_r"] * gal["bt"], star]),
        bt=np.concatenate([gal["bt"], star]), bulge_n=np.concatenate([gal["bulge_n"], star]),
        e1=np.concatenate([gal["e1"], star]), e2=np.concatenate([gal["e2"], star]),
    )


def fake_truth(fp, fx, fy, fflux, rhalf, flux_scale) -> dict:
    """The true parameters of a run's fakes as injected (flux x ``flux_scale``), in sky_truth's form; the ELG
    model's single exponential is a pure disc (bulge fraction 0)."""
    n = len(fx)
    bt = fp.get("bt", np.zeros(n))
    return dict(x=fx, y=fy, **{f"flux_{b}": fflux[b] * flux_scale for b in BANDS}, g=fp["g"],
                is_star=np.zeros(n, bool), r_half=rhalf, bt=bt, bulge_n=fp.get("bulge_n", np.ones(n)),
                e1=fp["e1"], e2=fp["e2"])


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


def _make_brick_star(args):
    return make_brick(*args)


def make_release(cfg: MockConfig, root: str | Path, workers: int = 1) -> dict:
    """Write the release under ``root/release`` and the injection run under ``root/injection``.

    The whole tree is built in a temporary directory and moved into place at the end.
    """
    root = Path(root)
    grid = brick_grid()
    names = np.char.strip(grid["BRICKNAME"].astype("U8"))
    missing = sorted(set(cfg.bricks) - set(names))
    if missing:
        raise ValueError(f"synthetic.bricks: not on the brick grid: {missing}")
    rows = {b: grid[np.flatnonzero(names == b)[0]] for b in cfg.bricks}
    with atomic_path(root, directory=True) as tmp:
        release, injection = tmp / "release", tmp / "injection"
        release.mkdir()
        write_survey_bricks(grid, layout.survey_bricks(release))
        if cfg.regions:  # DR9: each region its folder and its table of the bricks with data there
            jobs = [(cfg, rows[b], release / r, injection / r, r) for r, bricks in cfg.regions.items() for b in bricks]
            for r, bricks in cfg.regions.items():
                (release / r).mkdir()
                write_region_bricks(np.concatenate([rows[b][None] for b in bricks]) if bricks else grid[:0],
                                    release / r / f"survey-bricks-dr9-{r}.fits.gz")
        else:
            jobs = [(cfg, rows[b], release, injection) for b in cfg.bricks]
        counts = []
        with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
            for i, c in enumerate(pool.map(_make_brick_star, jobs), 1):
                log.info("brick %s%s (%d/%d): %d galaxies, %d stars, %d fakes", c["brick"],
                         f" ({c['region']})" if c["region"] else "", i, len(jobs), c["galaxies"], c["stars"],
                         c["fakes"])
                counts.append(c)
        summary = {"config": asdict(cfg), "bricks": counts, "release": "release", "injection": "injection"}
        (tmp / "synthetic.json").write_text(json.dumps(summary, indent=1))
    return summary


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
