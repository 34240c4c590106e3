"""The synthetic release has the on-disk layout and formats of a real Legacy Survey release."""

from __future__ import annotations

import fitsio
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from realfake import BANDS
from realfake.inputs import layout
from realfake.inputs.bricks import read_survey_bricks

TRACTOR_DR9 = {"brickid", "brickname", "objid", "brick_primary", "type", "ra", "dec", "bx", "by", "maskbits",
               "shape_r", "shape_e1", "shape_e2", "sersic"}
def nchar(dtype) -> int:
    """Characters of a string column, whether fitsio returns bytes or str."""
    return dtype.itemsize // (4 if dtype.kind == "U" else 1)


TRACTOR_BAND = ["flux_{}", "flux_ivar_{}", "mw_transmission_{}", "nobs_{}", "allmask_{}", "anymask_{}", "psfsize_{}"]


def test_survey_bricks_columns_and_brick_names(mock_dr9):
    root, cfg = mock_dr9
    path = layout.survey_bricks(root / "release")
    with fits.open(path) as hdul:
        names = hdul[1].columns.names
        assert names == ["BRICKNAME", "BRICKID", "BRICKQ", "BRICKROW", "BRICKCOL", "RA", "DEC", "RA1", "RA2", "DEC1", "DEC2"]
        assert 600_000 < len(hdul[1].data) < 700_000
    bricks = read_survey_bricks(path)
    for b in cfg.bricks:
        ra, dec = bricks.loc[b, "RA"], bricks.loc[b, "DEC"]
        assert b == "%04d%s%03d" % (int(ra * 10), "p" if dec >= 0 else "m", int(abs(dec) * 10 + 1e-6))


def test_coadds_are_rice_compressed_with_tan_wcs_centred_on_brick(mock_dr9):
    root, cfg = mock_dr9
    brick = cfg.bricks[0]
    for kind, quant in (("image", "SUBTRACTIVE_DITHER_2"), ("invvar", "NO_DITHER")):
        for b in BANDS:
            for path in (layout.coadd_file(root / "release", brick, kind, b),
                         layout.coadd_file(root / "injection", brick, kind, b, "rs0")):
                with fits.open(path, disable_image_compression=True) as raw:
                    assert raw[0].header["NAXIS"] == 0  # empty primary
                    assert raw[1].header["ZCMPTYPE"] == "RICE_1"
                    assert raw[1].header["ZQUANTIZ"] == quant
                    assert raw[1].header["ZTILE1"] == raw[1].header["ZTILE2"] == 100  # as legacypipe writes them
                with fits.open(path) as hdul:
                    h = hdul[1].header
                    assert h["NAXIS1"] == h["NAXIS2"] == cfg.image_size
                    assert h["CTYPE1"] == "RA---TAN" and h["CTYPE2"] == "DEC--TAN"
                    assert h["CRPIX1"] == h["CRPIX2"] == (cfg.image_size + 1) / 2
                    assert np.isclose(h["CD1_1"], -7.2778e-5, rtol=1e-4) and np.isclose(h["CD2_2"], 7.2778e-5, rtol=1e-4)
                    assert h["FILTERX"] == b and "BAND" not in h  # as every release from DR5 to DR10
                    data = hdul[1].data
                    assert data.dtype.kind == "f" and data.shape == (cfg.image_size,) * 2
                # fitsio reads the same pixels
                assert np.allclose(fitsio.read(str(path)), data)


def test_invvar_has_no_data_pixels_and_noise_matches_it(mock_dr9):
    root, cfg = mock_dr9
    brick = cfg.bricks[0]
    img = fitsio.read(str(layout.coadd_file(root / "release", brick, "image", "z")))
    iv = fitsio.read(str(layout.coadd_file(root / "release", brick, "invvar", "z")))
    assert (iv == 0).any() and (iv > 0).mean() > 0.5
    assert np.all(img[iv == 0] == 0)
    # sky pixels (robustly, sources are sparse) scatter as 1/sqrt(invvar)
    chi = img[iv > 0] * np.sqrt(iv[iv > 0])
    mad = 1.4826 * np.median(np.abs(chi - np.median(chi)))
    assert 0.85 < mad < 1.2


def test_tractor_dr9_columns_and_wcs_round_trip(mock_dr9):
    root, cfg = mock_dr9
    brick = cfg.bricks[0]
    t = fitsio.read(str(layout.tractor_file(root / "release", brick)))
    cols = set(t.dtype.names)
    assert TRACTOR_DR9 <= cols
    assert all(c.format(b) in cols for c in TRACTOR_BAND for b in BANDS)
    assert nchar(t["type"].dtype) == 3 and set(np.char.strip(t["type"].astype("U3"))) <= {"PSF", "REX", "EXP", "DEV", "SER"}
    assert t["bx"].dtype.str[1:] == "f4" and t["ra"].dtype.str[1:] == "f8" and t["brick_primary"].dtype == bool
    with fits.open(layout.coadd_file(root / "release", brick, "image", "g")) as hdul:
        wcs = WCS(hdul[1].header)
    x, y = wcs.all_world2pix(t["ra"], t["dec"], 0)
    assert np.max(np.hypot(x - t["bx"], y - t["by"])) < 0.01


def test_tractor_dr5_schema(mock_dr5):
    root, cfg = mock_dr5
    t = fitsio.read(str(layout.tractor_file(root / "release", cfg.bricks[0])))
    cols = set(t.dtype.names)
    assert {"shapeexp_r", "shapeexp_e1", "shapedev_r", "fracdev"} <= cols
    assert "maskbits" not in cols and "shape_r" not in cols
    assert nchar(t["type"].dtype) == 4
    assert set(t["type"].astype("U4")) <= {"PSF ", "REX ", "EXP ", "DEV ", "COMP"}
    assert np.all(t["release"] == 5000)
    hdr = fitsio.read_header(str(layout.coadd_file(root / "release", cfg.bricks[0], "image", "r")), 1)
    assert hdr["FILTERX"].strip() == "r"


def test_simcat_obiwan_layout_and_one_indexed_pixels(mock_dr9):
    root, cfg = mock_dr9
    brick = cfg.bricks[1]
    inj = root / "injection"
    for rs in cfg.rs:
        sim = fitsio.read(str(layout.simcat_file(inj, brick, rs)))
        assert {"id", "ra", "dec", "x", "y", "gflux", "rflux", "zflux", "n", "rhalf", "e1", "e2"} <= set(sim.dtype.names)
        assert np.all(sim["n"] == 1)
        for f in (layout.sim_ids_added_file, layout.skipped_ids_file, layout.metacat_file):
            assert f(inj, brick, rs).exists()
        with fits.open(layout.coadd_file(inj, brick, "image", "g", rs)) as hdul:
            wcs = WCS(hdul[1].header)
        x, y = wcs.all_world2pix(sim["ra"], sim["dec"], 0)
        assert np.max(np.hypot(x - (sim["x"] - 1), y - (sim["y"] - 1))) < 0.01
        added = fitsio.read(str(layout.sim_ids_added_file(inj, brick, rs)), ext=1)["id"]
        skipped = fitsio.read(str(layout.skipped_ids_file(inj, brick, rs)), ext=1)["ids"]
        # the simcat lists the fakes injected; skippedids-elg (column ids) the randoms left out
        assert sorted(added) == sorted(sim["id"]) and not set(skipped) & set(sim["id"])
        # the run's rerun Tractor catalogue measures every injected fake, in the release's schema
        rerun = fitsio.read(str(layout.tractor_file(inj, brick, rs)))
        assert len(rerun) == len(fitsio.read(str(layout.tractor_file(root / "release", brick)))) + len(sim)


def test_fakes_are_added_to_the_same_sky(mock_dr9):
    root, cfg = mock_dr9
    brick = cfg.bricks[0]
    rel = fitsio.read(str(layout.coadd_file(root / "release", brick, "image", "r")))
    inj = fitsio.read(str(layout.coadd_file(root / "injection", brick, "image", "r", "rs0")))
    diff = inj - rel
    assert diff.sum() > 0  # flux was added
    assert np.median(np.abs(diff)) < 1e-3  # and only where the fakes are (quantisation aside)


def test_deterministic_from_seed(tmp_path):
    from realfake.synthetic.release import MockConfig, make_release

    cfg = MockConfig(bricks=("1210p060",), image_size=96, seed=5)
    make_release(cfg, tmp_path / "a")
    make_release(cfg, tmp_path / "b")
    for rel in ("release/tractor/121/tractor-1210p060.fits", "release/coadd/121/1210p060/legacysurvey-1210p060-image-g.fits.fz",
                "injection/obiwan/121/1210p060/rs0/simcat-elg-1210p060.fits"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_cli_help_and_bad_brick(capsys):
    from realfake.cli import main

    assert main(["mock-release", "--out", "/nonexistent/x", "--bricks", "12p6"]) == 2
    assert "not a brick name" in capsys.readouterr().err


def test_control_options_change_only_what_they_say(tmp_path):
    """fake_model real + wide separation (the null test), fake_flux_scale (a positive control)."""
    from realfake.inputs.bricks import PIXSCALE_ARCSEC
    from realfake.synthetic.release import MockConfig, make_release

    brick = "1210p060"
    base = dict(bricks=(brick,), image_size=256, seed=5)
    make_release(MockConfig(**base), tmp_path / "base")
    make_release(MockConfig(**base, fake_model="real", min_fake_separation=20.0), tmp_path / "null")
    make_release(MockConfig(**base, fake_flux_scale=10.0), tmp_path / "bright")
    tractor = {k: fitsio.read(str(layout.tractor_file(tmp_path / k / "release", brick))) for k in ("base", "null")}
    # the same galaxies, measured alike: the fakes' model does not touch the release
    assert np.array_equal(tractor["base"]["ra"], tractor["null"]["ra"])
    assert np.array_equal(tractor["base"]["flux_g"], tractor["null"]["flux_g"])
    inj = tmp_path / "null" / "injection"
    sim = fitsio.read(str(layout.simcat_file(inj, brick, "rs0")))
    assert set(np.char.strip(sim["type"].astype(str))) <= {"REX", "EXP", "DEV", "SER"}  # a Tractor type, as reals get
    assert np.array_equal(sim["id"], fitsio.read(str(layout.sim_ids_added_file(inj, brick, "rs0")), ext=1)["id"])
    x, y = sim["x"], sim["y"]  # (the simcat lists the fakes injected; skippedids-elg those too close)
    sep = np.hypot(x[:, None] - x[None], y[:, None] - y[None]) * PIXSCALE_ARCSEC
    assert len(x) >= 2 and sep[np.triu_indices(len(x), 1)].min() >= 20.0
    # ten times the flux injected, the catalogue unchanged
    flux = {}
    for k in ("base", "bright"):
        rel = fitsio.read(str(layout.coadd_file(tmp_path / k / "release", brick, "image", "r")))
        img = fitsio.read(str(layout.coadd_file(tmp_path / k / "injection", brick, "image", "r", "rs0")))
        flux[k] = (img - rel).sum()
    assert 8 < flux["bright"] / flux["base"] < 11
    sims = [fitsio.read(str(layout.simcat_file(tmp_path / k / "injection", brick, "rs0"))) for k in ("base", "bright")]
    assert np.array_equal(sims[0]["rflux"], sims[1]["rflux"])


def _fake_stamps(root, brick, half=20):
    """Per injected fake (far from the edges): the r-band difference injection - release around its catalogue
    position (the fake's drawn light alone: same sky, same noise), and that position in the stamp."""
    sim = fitsio.read(str(layout.simcat_file(root / "injection", brick, "rs0")))
    rel = fitsio.read(str(layout.coadd_file(root / "release", brick, "image", "r"))).astype(float)
    inj = fitsio.read(str(layout.coadd_file(root / "injection", brick, "image", "r", "rs0"))).astype(float)
    diff, out = inj - rel, []
    for x, y in zip(sim["x"] - 1, sim["y"] - 1):
        ix, iy = int(round(x)), int(round(y))
        if half <= ix < diff.shape[1] - half and half <= iy < diff.shape[0] - half:
            out.append((diff[iy - half : iy + half + 1, ix - half : ix + half + 1], x - ix + half, y - iy + half))
    return out


def _moments(stamp, x0, y0):
    """Flux-weighted centroid offset (x) and second moment about the catalogue position of a stamp."""
    yy, xx = np.mgrid[: stamp.shape[0], : stamp.shape[1]]
    w = stamp.sum()
    return ((xx - x0) * stamp).sum() / w, (((xx - x0) ** 2 + (yy - y0) ** 2) * stamp).sum() / w


def test_graded_defects_change_the_pixels_as_specified(tmp_path):
    """Each defect of the injected model changes what it says and by how much: a PSF scaled by f scales the second
    moment of a point-like fake by f^2; an offset moves its centroid; the invvar scale and the shot noise show."""
    from realfake.synthetic.release import MockConfig, make_release

    brick = "1210p060"
    base = dict(bricks=(brick,), image_size=240, seed=11, fake_density=20.0, min_fake_separation=12.0,
                fake_rhalf_scale=0.02)  # (nearly point sources: the moment is the PSF's)
    runs = {"base": {}, "psf": {"fake_psf_scale": 1.2}, "offset": {"fake_offset": 1.0},
            "invvar": {"fake_invvar_scale": 0.5}, "noise": {"fake_shot_noise": 0.05}}
    for name, defect in runs.items():
        make_release(MockConfig(**{**base, **defect}), tmp_path / name)
    stamps = {name: _fake_stamps(tmp_path / name, brick) for name in runs}
    assert len(stamps["base"]) >= 3
    m = {name: np.array([_moments(*s) for s in stamps[name]]) for name in ("base", "psf", "offset")}
    assert np.median(m["psf"][:, 1] / m["base"][:, 1]) == pytest.approx(1.2**2, rel=0.06)
    assert np.median(m["offset"][:, 0] - m["base"][:, 0]) == pytest.approx(1.0, abs=0.05)
    iv = {name: fitsio.read(str(layout.coadd_file(tmp_path / name / "injection", brick, "invvar", "g", "rs0")))
          for name in ("base", "invvar")}
    data = iv["base"] > 0
    assert np.allclose(iv["invvar"][data] / iv["base"][data], 0.5, rtol=1e-2)  # (invvar quantised to 1/16 of sigma)
    # shot noise: the extra pixel variance over the fakes is fake_shot_noise x their light
    model = np.concatenate([s[0].ravel() for s in stamps["base"]])
    extra = np.concatenate([n[0].ravel() - b[0].ravel() for n, b in zip(stamps["noise"], stamps["base"])])
    bright = model > 0.02
    assert np.var(extra[bright]) == pytest.approx(0.05 * model[bright].mean(), rel=0.2)


def _away_from_fakes(root, brick, shape, radius=10):
    """Pixels of a brick's coadd farther than ``radius`` pixels from every fake of its seed folder rs0."""
    sim = fitsio.read(str(layout.simcat_file(root / "injection", brick, "rs0")))
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    far = np.ones(shape, dtype=bool)
    for x, y in zip(sim["x"] - 1, sim["y"] - 1):
        far &= np.hypot(xx - x, yy - y) > radius
    return far


def test_rerun_processing_and_fake_mag_offset(tmp_path):
    """The rerun's processing differences change the injection coadds as specified: rerun_sky_offset a constant
    offset in units of the pixel noise, rerun_noise extra noise recorded in the invvar; fake_mag_offset draws the
    fakes brighter in every band, the same fakes otherwise."""
    from realfake.synthetic.release import MockConfig, make_release

    brick = "1210p060"
    base = dict(bricks=(brick,), image_size=96, seed=5, fake_density=30.0)  # (some 5 fakes)
    runs = {"sky": {"rerun_sky_offset": 0.1}, "noise": {"rerun_noise": 0.1},
            "real": {"fake_model": "real"}, "bright": {"fake_model": "real", "fake_mag_offset": -0.5}}
    for name, option in runs.items():
        make_release(MockConfig(**base, **option), tmp_path / name)

    def coadd(name, tree, kind, b):
        rs = "rs0" if tree == "injection" else None
        return fitsio.read(str(layout.coadd_file(tmp_path / name / tree, brick, kind, b, rs))).astype(float)

    for b in BANDS:
        rel, iv = coadd("sky", "release", "image", b), coadd("sky", "release", "invvar", b)
        far = _away_from_fakes(tmp_path / "sky", brick, rel.shape) & (iv > 0)
        chi = (coadd("sky", "injection", "image", b) - rel) * np.sqrt(iv)
        assert np.median(chi[far]) == pytest.approx(0.1, abs=0.02), b
        assert np.all(coadd("sky", "injection", "image", b)[iv == 0] == 0)  # no data stays no data
        assert np.array_equal(coadd("sky", "injection", "invvar", b), iv)

        rel, iv = coadd("noise", "release", "image", b), coadd("noise", "release", "invvar", b)
        inj_iv = coadd("noise", "injection", "invvar", b)
        assert np.array_equal(inj_iv > 0, iv > 0)
        assert np.allclose(inj_iv[iv > 0], iv[iv > 0] / 1.1, rtol=1e-6), b
        far = _away_from_fakes(tmp_path / "noise", brick, rel.shape) & (iv > 0)
        chi = (coadd("noise", "injection", "image", b) - rel) * np.sqrt(iv)
        assert np.std(chi[far]) == pytest.approx(np.sqrt(0.1), rel=0.1), b
        assert abs(np.median(chi[far])) < 0.03  # noise, no offset

    sims = {k: fitsio.read(str(layout.simcat_file(tmp_path / k / "injection", brick, "rs0")))
            for k in ("real", "bright")}
    assert len(sims["real"]) >= 2 and np.array_equal(sims["real"]["id"], sims["bright"]["id"])
    for b in BANDS:  # every band 0.5 mag brighter: colours unchanged
        assert np.allclose(sims["bright"][f"{b}flux"] / sims["real"][f"{b}flux"], 10**0.2, rtol=1e-5), b
    for key in ("x", "y", "rhalf", "e1", "e2", "type"):
        assert np.array_equal(sims["real"][key], sims["bright"][key]), key
    # injected and measured alike: the fakes' light in the coadds and their rerun fluxes brighter by the same factor
    light = {k: (coadd(k, "injection", "image", "r") - coadd(k, "release", "image", "r")).sum() for k in sims}
    assert light["bright"] / light["real"] == pytest.approx(10**0.2, rel=0.1)
    rerun = {k: fitsio.read(str(layout.tractor_file(tmp_path / k / "injection", brick, "rs0"))) for k in sims}
    assert rerun["bright"]["flux_r"].sum() - rerun["real"]["flux_r"].sum() == pytest.approx(
        (10**0.2 - 1) * sims["real"]["rflux"].sum(), rel=1e-3)


def test_rerun_options_validated():
    from realfake.synthetic.release import MockConfig

    with pytest.raises(ValueError, match="synthetic.rerun_noise must be >= 0, not -0.1"):
        MockConfig(bricks=("1210p060",), rerun_noise=-0.1)
