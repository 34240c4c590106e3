"""A synthetic Legacy Survey Data Release and obiwan injection run, rendered with GalSim.

The files have the exact on-disk layout of the real thing (docs/inputs.md, "Input
layout read"), so every reader in the pipeline runs on them unchanged:

- the release: ``survey-bricks.fits.gz``, RICE tile-compressed coadds (in
  100x100 tiles, as legacypipe writes them) with a TAN WCS centred on the
  brick, and Tractor catalogues in the DR9, DR8 or DR5 schema; one tree, or
  DR9's region folders (``north/``, ``south/``, each with its
  ``survey-bricks-dr9-<region>.fits.gz``; a brick may be in both);
- the injection run, in any obiwan layout (layout.LAYOUTS): simulation
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
parameters gets, a ``min_fake_separation`` larger than a cutout keeps
other fakes out of a fake's stamp, and a neighbour rule out to the stamp's
corners (``cutouts.neighbour_radius``) keeps them out of a real's, cut from an
injection run's coadds (config.check_neighbour_rule); both classes are
selected on their measured values (selection.fakes: measured).

``fake_mag_offset`` draws the fakes from a brighter (or fainter) population, its
colours unchanged, catalogued and injected alike; and two processing differences
of the rerun change the injection run's coadds, not the fakes: a constant sky
offset (``rerun_sky_offset``, in units of the pixel noise) and extra noise
recorded in their inverse variance (``rerun_noise``, a fraction of the variance).

Here the configuration, and the release put together brick by brick (in
parallel) in a temporary tree moved into place: the sky is rendered by
:mod:`realfake.synthetic.sky`, the files written by :mod:`realfake.synthetic.files`, the
catalogues by :mod:`realfake.synthetic.catalogs`.
"""

from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from realfake import BANDS
from realfake.inputs import layout
from realfake.atomic import atomic_path
from realfake.inputs.bricks import PIXSCALE_ARCSEC, brick_grid
from realfake.synthetic.catalogs import RELEASE, tractor_table, write_simcat
from realfake.synthetic.files import (
    astropy_wcs, wcs_header, write_coadd, write_region_bricks, write_survey_bricks, write_table
)
from realfake.synthetic.sky import draw_fakes, fake_truth, inject_band, render_sky

log = logging.getLogger(__name__)

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
    # the fakes' drawn magnitudes + this in every band (colours unchanged): a brighter (< 0) or fainter population
    fake_mag_offset: float = 0.0
    # Processing differences of the rerun: its coadds (every seed folder), not its fakes
    rerun_sky_offset: float = 0.0  # a constant sky offset of this x the pixel noise sigma (another sky subtraction)
    rerun_noise: float = 0.0  # extra Gaussian noise of this x the variance, recorded in invvar (fewer exposures)
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
        if not self.rerun_noise >= 0:
            raise ValueError(f"synthetic.rerun_noise must be >= 0, not {self.rerun_noise}")
        for key in ("rerun_sky_offset", "fake_mag_offset"):
            if not np.isfinite(getattr(self, key)):
                raise ValueError(f"synthetic.{key} must be a finite number, not {getattr(self, key)}")
        if self.min_fake_separation < 0:
            raise ValueError(f"synthetic.min_fake_separation must be >= 0, not {self.min_fake_separation}")
        if self.image_size < 64:
            raise ValueError(f"synthetic.image_size must be >= 64 pixels, not {self.image_size}")
        for b in self.bricks:
            layout.check_brick(b)
        from realfake.inputs.layout import LAYOUTS

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



def make_brick(cfg: MockConfig, brick_row: np.void, release_root: Path, injection_root: Path, region: str = "") -> dict:
    """Render one brick of the release (of ``region``: another survey's sky) and its injection runs; return counts
    for the log."""
    import galsim

    from realfake.inputs.layout import LAYOUTS

    lay = LAYOUTS[cfg.injection_layout]
    brick = brick_row["BRICKNAME"].decode().strip()
    stream = [cfg.seed, int(brick_row["BRICKID"])] + ([1 + layout.REGIONS.index(region)] if region else [])
    rng = np.random.default_rng(stream)
    header = wcs_header(float(brick_row["RA"]), float(brick_row["DEC"]), cfg.image_size)
    wcs = astropy_wcs(header)
    sky = render_sky(galsim, cfg, rng)
    for b in BANDS:
        write_coadd(layout.coadd_dir(release_root, brick), brick, b, sky.image[b], sky.invvar[b], header,
                    _dither_seed(cfg, brick_row))
    write_table(layout.tractor_file(release_root, brick),
                tractor_table(cfg, brick_row, wcs, sky.truth, sky.mw, sky.fwhm, sky.nexp, rng))
    nfake_total = 0
    for k, rs in enumerate(cfg.seeds(brick)):  # the injection runs: fakes added to the same sky
        nfake_total += _injection_run(galsim, cfg, lay, brick_row, sky, header, wcs, injection_root, stream, k, rs)
    return {"brick": brick, "region": region, "galaxies": sky.ngal, "stars": sky.nstar, "fakes": nfake_total}


def _dither_seed(cfg: MockConfig, brick_row: np.void, offset: int = 0) -> int:
    """The quantisation dither seed of a brick's images (``offset``: an injection run's)."""
    return 1 + (cfg.seed * 7919 + int(brick_row["BRICKID"]) + offset) % 10000


def _injection_run(galsim, cfg, lay, brick_row, sky, header, wcs, root, stream, k: int, rs: str) -> int:
    """Seed folder ``rs`` (the ``k``-th) of a brick's injection run under ``root``, in the layout ``lay``: its fakes
    drawn and added to the release's ``sky``, its coadds, simulation catalogue and rerun Tractor catalogue written;
    the number of fakes injected."""
    brick = brick_row["BRICKNAME"].decode().strip()
    fakes = draw_fakes(cfg, np.random.default_rng(stream + [1000 + k]))
    nrng = np.random.default_rng(stream + [3000 + k])  # the defects' noise: a stream of its own
    rerun_rng = np.random.default_rng(stream + [4000 + k])  # the rerun's extra noise: another
    if not (lay.name == "obiwan2017" and k > 0):  # obiwan's 2017 runs kept the coadds of their first seed only
        coadd = lay.path(lay.coadd, root, brick, rs)
        for b in BANDS:
            image = _rerun_processing(cfg, inject_band(galsim, cfg, sky, fakes, b, nrng), sky.invvar[b], rerun_rng)
            # the recorded invvar: the rerun's extra noise in it, the invvar defect on top
            write_coadd(coadd, brick, b, image,
                        sky.invvar[b] * np.float32(cfg.fake_invvar_scale / (1 + cfg.rerun_noise)), header,
                        _dither_seed(cfg, brick_row, 17 * (k + 1)))
    write_simcat(cfg, lay, root, brick, rs, wcs, sky.mw, fakes)
    # the rerun pipeline's catalogue of the injected sky: the same sources as the release's, measured anew,
    # and the fakes injected, measured alike (their flux as injected)
    # (as drawn: where it was drawn, at the size and flux it was drawn with)
    fsky = fake_truth(fakes["fp"], fakes["x"] + cfg.fake_offset, fakes["y"], fakes["flux"], fakes["drawn_rhalf"],
                      cfg.fake_flux_scale)
    rerun = {key: np.concatenate([sky.truth[key], fsky[key][fakes["added"]]]) for key in sky.truth}
    rrng = np.random.default_rng(stream + [2000 + k])
    write_table(lay.path(lay.tractor, root, brick, rs),
                tractor_table(cfg, brick_row, wcs, rerun, sky.mw, sky.fwhm, sky.nexp, rrng))
    return len(fakes["added"])


def _rerun_processing(cfg: MockConfig, image: np.ndarray, invvar: np.ndarray, rng) -> np.ndarray:
    """An injection coadd ``image`` as the rerun processed it: extra Gaussian noise of ``rerun_noise`` x the pixel
    variance (1/``invvar``, the release's), then a constant sky offset of ``rerun_sky_offset`` x the pixel noise
    sigma; pixels without data (invvar 0) stay as they are. At the defaults ``image`` unchanged."""
    if cfg.rerun_noise == 0 and cfg.rerun_sky_offset == 0:
        return image
    data = invvar > 0
    sigma = np.where(data, 1 / np.sqrt(np.where(data, invvar, 1)), 0.0)
    out = image.astype(np.float64)
    if cfg.rerun_noise > 0:
        out += rng.normal(0.0, 1.0, image.shape) * np.sqrt(cfg.rerun_noise) * sigma
    out += cfg.rerun_sky_offset * sigma
    return np.where(data, out, image).astype(np.float32)


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

