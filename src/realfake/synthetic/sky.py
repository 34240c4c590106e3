"""The synthetic sky of one brick, rendered with GalSim: its observing conditions (extinction, seeing, exposures),
the real galaxies (bulge plus disc with colour gradients and clumps) and stars, and an injection run's fakes
(ELG-like single Sersic, or the real population for the null test) added to it, with the graded defects of the
injected model; and the true parameters of every source, for the catalogues."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from realfake import BANDS
from realfake.inputs.bricks import PIXSCALE_ARCSEC

# Galactic extinction coefficients A_b / E(B-V) for DECam (DR9)
EXTINCTION = {"g": 3.214, "r": 2.165, "z": 1.211}
PSF_FWHM = {"g": 1.5, "r": 1.35, "z": 1.25}  # arcsec, typical seeing
# Per-pixel noise of one exposure (nanomaggies): ~ 5-sigma depths g 24.0, r 23.4, z 22.5
SKY_SIGMA = {"g": 0.0065, "r": 0.011, "z": 0.025}


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


def positions(rng, n, size):
    """n positions uniform over an image of size x size pixels (0-indexed pixel centres)."""
    return rng.uniform(-0.5, size - 0.5, n), rng.uniform(-0.5, size - 0.5, n)


def too_close(x, y, min_sep_pix):
    """Mask of sources within ``min_sep_pix`` of an earlier one (obiwan skips those)."""
    skip = np.zeros(len(x), dtype=bool)
    for i in range(len(x)):
        d2 = (x[:i] - x[i]) ** 2 + (y[:i] - y[i]) ** 2
        skip[i] = bool(np.any(d2[~skip[:i]] < min_sep_pix**2))
    return skip


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



@dataclass
class Sky:
    """A brick's sky as the release sees it: its conditions, its coadd planes and the truth of its sources."""

    mw: dict  # Galactic transmission per band
    fwhm: dict  # PSF FWHM per band (arcsec)
    nexp: np.ndarray  # exposures per pixel
    image: dict  # per band, float32 (nanomaggies; 0 where no exposure)
    invvar: dict  # per band, float32
    truth: dict  # sky_truth
    ngal: int
    nstar: int


def render_sky(galsim, cfg, rng) -> Sky:
    """The sky of one brick of ``cfg.image_size`` pixels: conditions drawn, galaxies and stars placed and drawn
    through the band's PSF, and the noise of the exposures added (``rng`` in that order)."""
    size = cfg.image_size
    ebv = rng.uniform(0.01, 0.08)
    mw = {b: 10 ** (-0.4 * EXTINCTION[b] * ebv) for b in BANDS}
    fwhm = {b: PSF_FWHM[b] * rng.uniform(0.85, 1.15) for b in BANDS}
    psf = {b: galsim.Moffat(beta=3.5, fwhm=fwhm[b]) for b in BANDS}
    nexp = exposure_map(rng, size)

    ngal = rng.poisson(cfg.galaxy_density * cfg.area_arcmin2)
    nstar = rng.poisson(cfg.star_density * cfg.area_arcmin2)
    gal = real_population(rng, ngal)
    gx, gy = positions(rng, ngal, size)
    clumps = [(rng.normal(0, 0.8, (3, 2)), rng.dirichlet(np.ones(3))) for _ in range(ngal)]
    star_g = rng.uniform(16.0, 22.5, nstar)
    star_gr, star_rz = rng.uniform(0.2, 1.4, nstar), rng.uniform(0.0, 1.5, nstar)
    sx, sy = positions(rng, nstar, size)
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
    return Sky(mw=mw, fwhm=fwhm, nexp=nexp, image=image, invvar=invvar,
               truth=sky_truth(gal, gx, gy, gflux, star_g, sx, sy, sflux), ngal=int(ngal), nstar=int(nstar))


def draw_fakes(cfg, rng) -> dict:
    """One injection run's fakes as obiwan draws them: positions, parameters and catalogue fluxes (``flux``, before
    extinction), the radius they are drawn with (``drawn_rhalf``: the catalogue's x fake_rhalf_scale for the ELG
    model), and which are injected (``added``, ids) and which skipped (too close to an earlier one). The population's
    magnitudes are shifted by ``fake_mag_offset`` in every band (its colours unchanged): fluxes x 10^(-0.4 offset)
    wherever the fake's flux is used (simcat, injected light, rerun truth)."""
    nfake = rng.poisson(cfg.fake_density * cfg.area_arcmin2)
    x, y = positions(rng, nfake, cfg.image_size)
    clumps = None
    if cfg.fake_model == "real":
        fp = real_population(rng, nfake)
        clumps = [(rng.normal(0, 0.8, (3, 2)), rng.dirichlet(np.ones(3))) for _ in range(nfake)]
        rhalf = fp["disc_r"] * (1 - fp["bt"]) + fp["bulge_r"] * fp["bt"]
        nser = np.where(fp["bt"] < 0.5, 1.0, fp["bulge_n"])
    else:
        fp = elg_population(rng, nfake)
        rhalf, nser = fp["rhalf"], fp["n"]
    fp["g"] = fp["g"] + cfg.fake_mag_offset  # a brighter (< 0) or fainter population, the same draws
    ids = np.arange(nfake, dtype=np.int64)
    skipped = too_close(x, y, cfg.min_fake_separation / PIXSCALE_ARCSEC)
    return dict(x=x, y=y, flux=band_fluxes(fp["g"], fp["gr"], fp["rz"]), fp=fp, clumps=clumps, rhalf=rhalf,
                drawn_rhalf=rhalf * (cfg.fake_rhalf_scale if cfg.fake_model == "elg" else 1.0), nser=nser, ids=ids,
                added=ids[~skipped], skipped=skipped)


def inject_band(galsim, cfg, sky: Sky, fakes: dict, band: str, rng) -> np.ndarray:
    """The image of ``band`` with the injected fakes (draw_fakes) added to the sky, with the defects of ``cfg``
    (``rng``: the shot noise's); no data stays no data: obiwan injects into exposures, not into gaps."""
    fp, added = fakes["fp"], fakes["added"]
    flux = fakes["flux"][band] * sky.mw[band] * cfg.fake_flux_scale  # the simcat keeps flux * mw
    psf = galsim.Moffat(beta=3.5, fwhm=sky.fwhm[band] * cfg.fake_psf_scale)
    img = galsim.Image(sky.image[band].copy(), scale=PIXSCALE_ARCSEC)
    for i in added:
        if cfg.fake_model == "real":
            prof = real_galaxy_profile(galsim, fp, i, band, flux[i], fakes["clumps"][i])
        else:
            shear = (galsim.Shear(e1=fp["e1"][i], e2=fp["e2"][i]) if cfg.fake_ellipticity == "distortion"
                     else galsim.Shear(g1=fp["e1"][i], g2=fp["e2"][i]))
            prof = galsim.Sersic(n=1 + cfg.fake_sersic_offset, half_light_radius=fakes["drawn_rhalf"][i],
                                 flux=flux[i]).shear(shear)
        render(galsim, img, prof, psf, fakes["x"][i] + cfg.fake_offset, fakes["y"][i], convolve=cfg.fake_psf)
    arr = img.array
    if cfg.fake_shot_noise > 0:  # noise where the fakes' light is: variance fake_shot_noise x model
        model = np.maximum(arr - sky.image[band], 0)
        arr = arr + rng.normal(0, 1, arr.shape) * np.sqrt(cfg.fake_shot_noise * model)
    return np.where(sky.nexp > 0, arr, 0.0).astype(np.float32)
