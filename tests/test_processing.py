"""The processing check on synthetic stamps (numpy, seconds): Gaussian galaxies on noise of known inverse variance,
cut "from the release" and "from an injection run" that differs in one known way at a time (sky, depth, centroid,
PSF), 20 bricks of 30 galaxies; the check must find each difference, in every band, and nothing else."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from realfake.cutouts.processing import (check_bricks, compare, compare_table, processing_figure, stamp_statistics,
                                 summarise)

CHANNELS = ["g", "ivar_g", "r", "ivar_r", "z", "ivar_z"]
BANDS = ("g", "r", "z")
N_BRICKS, PER_BRICK, SIZE = 20, 30, 64
PIXSCALE = 0.262
SIGMA_GAL = 2.0  # pixels
NOISE = {"g": 0.5, "r": 0.8, "z": 2.0}  # pixel sigma per band (times a brick's depth factor)
COLOUR = {"g": 0.6, "r": 1.0, "z": 2.2}  # flux per band, relative


class Sky:
    """The release's stamps of N galaxies and what made them, to render an injection run's copy with one change."""

    def __init__(self, seed=11, n_bricks=N_BRICKS):
        rng = np.random.default_rng(seed)
        self.n = n_bricks * PER_BRICK
        self.bricks = np.repeat([f"b{i:02d}" for i in range(n_bricks)], PER_BRICK)
        depth = np.repeat(rng.uniform(0.8, 1.25, n_bricks), PER_BRICK)  # the bricks' noise differs
        self.sigma = {b: NOISE[b] * depth for b in BANDS}
        self.level = {b: np.repeat(rng.normal(0, 0.5, n_bricks), PER_BRICK) * NOISE[b] for b in BANDS}
        self.flux = rng.lognormal(np.log(300), 0.6, self.n)
        self.noise = {b: rng.standard_normal((self.n, SIZE, SIZE), dtype=np.float32) for b in BANDS}
        self.rng = rng
        self.stamps = self.render()

    def galaxy(self, sigma=SIGMA_GAL, shift=0.0):
        """Unit-flux Gaussian galaxies at the stamp's centre (+ ``shift`` pixels along x)."""
        c = np.arange(SIZE) - (SIZE - 1) / 2
        yy, xx = np.meshgrid(c, c, indexing="ij")
        return (np.exp(-0.5 * ((xx - shift) ** 2 + yy**2) / sigma**2) / (2 * np.pi * sigma**2)).astype(np.float32)

    def render(self, sigma=SIGMA_GAL, shift=0.0, sky=0.0, ivar_scale=1.0, extra=None):
        """Stamps (N, S, S, 6), channels interleaved: the galaxies plus the release's noise realisation, ``sky``
        (release sigma) added, the inverse variance times ``ivar_scale``, ``extra`` noise (N, S, S) per band
        (in release sigma) added."""
        out = np.empty((self.n, SIZE, SIZE, 6), np.float32)
        gal = self.galaxy(sigma, shift)
        for i, b in enumerate(BANDS):
            s = self.sigma[b][:, None, None].astype(np.float32)
            img = self.noise[b] * s if extra is None else (self.noise[b] + extra[b]) * s
            img += (self.flux * COLOUR[b]).astype(np.float32)[:, None, None] * gal
            img += (self.level[b] + sky * self.sigma[b]).astype(np.float32)[:, None, None]
            out[..., 2 * i] = img
            out[..., 2 * i + 1] = ivar_scale / s**2
        return out


@pytest.fixture(scope="module")
def sky():
    return Sky()


@pytest.fixture(scope="module")
def release(sky):
    return stamp_statistics(sky.stamps, CHANNELS)


def check(summary, quantity, band):
    (entry,) = [e for e in summary["checks"] if e["quantity"] == quantity and e["band"] == band]
    return entry


def run(sky, release, stamps, psf=True):
    psfsize = {b: np.full(sky.n, 2.3548 * SIGMA_GAL * PIXSCALE) for b in BANDS} if psf else None
    diffs = compare(release, stamp_statistics(stamps, CHANNELS), sky.bricks, psfsize=psfsize)
    return diffs, summarise(diffs, {}, pixscale=PIXSCALE)


def test_statistics_known_values():
    """sigma, sky and chi of noisy stamps, and centroid and moment of nearly noiseless ones (their pixel noise 0.001
    of what the inverse variance says), agree with what made them."""
    sky = Sky(seed=3, n_bricks=6)
    stats = stamp_statistics(sky.stamps, CHANNELS)
    quiet = stamp_statistics(sky.render(shift=0.4, extra={b: -0.999 * sky.noise[b] for b in BANDS}), CHANNELS)
    assert len(stats) == len(quiet) == sky.n
    w = 2.5  # the weighted moment of a Gaussian: 2 s^2 w^2 / (s^2 + w^2)
    for b in BANDS:
        np.testing.assert_allclose(stats[f"sigma_{b}"], sky.sigma[b], rtol=1e-5)
        assert np.abs((stats[f"sky_{b}"] - sky.level[b]) / sky.sigma[b]).max() < 0.1
        assert abs(stats[f"chi_{b}"].mean() - 1) < 0.01 and quiet[f"chi_{b}"].mean() == pytest.approx(1e-3, rel=0.02)
        assert stats[f"x_{b}"].notna().mean() > 0.9 and abs(stats[f"x_{b}"].mean()) < 0.02
        np.testing.assert_allclose(quiet[f"x_{b}"], 0.4, atol=1e-3)
        np.testing.assert_allclose(quiet[f"y_{b}"], 0.0, atol=1e-3)
        np.testing.assert_allclose(quiet[f"t_{b}"], 2 * SIGMA_GAL**2 * w * w / (SIGMA_GAL**2 + w * w), rtol=1e-3)
    # any channel order gives the same statistics
    order = [4, 1, 5, 0, 3, 2]
    again = stamp_statistics(sky.stamps[..., order], [CHANNELS[i] for i in order])
    pd.testing.assert_frame_equal(stats[again.columns.sort_values()], again[again.columns.sort_values()])


def test_statistics_without_data():
    """A stamp without data, or without data in its annulus, gives NaN where undefined, not an error."""
    sky = Sky(seed=5, n_bricks=1)
    stamps = sky.stamps[:4].copy()
    stamps[0, ..., 1::2] = 0  # no data at all
    yy, xx = np.indices((SIZE, SIZE)) - (SIZE - 1) / 2
    stamps[1][np.hypot(xx, yy) > 0.6 * SIZE / 2] = 0  # nothing in the annulus
    stamps[2, ..., 0] *= -1  # g galaxy negative: no centroid
    stats = stamp_statistics(stamps, CHANNELS)
    assert stats.iloc[0].isna().drop([c for c in stats.columns if c.startswith(("snr_", "k_"))]).all()
    assert np.isnan(stats.loc[1, "sky_r"]) and np.isnan(stats.loc[1, "chi_r"]) and np.isnan(stats.loc[1, "x_r"])
    assert np.isfinite(stats.loc[1, "sigma_r"])
    assert np.isnan(stats.loc[2, "x_g"]) and np.isfinite(stats.loc[2, "x_r"])
    assert stats.iloc[3].notna().all()


def test_identical_coadds_do_not_differ(sky, release):
    diffs, summary = run(sky, release, sky.stamps)
    assert not summary["differs"] and summary["reasons"] == []
    assert summary["n"] == sky.n and summary["bricks"] == N_BRICKS and summary["clustered"]
    assert len(summary["checks"]) == 15
    for e in summary["checks"]:
        assert e["estimate"] == pytest.approx(e["null"], abs=1e-9)
        assert not e["differs"] and e["bricks"] == N_BRICKS
    assert set(diffs.columns) >= {f"{q}_{b}" for q in ("dsky", "depth", "dchi", "dx", "dy", "dt") for b in BANDS}


def test_sky_offset(sky, release):
    _, summary = run(sky, release, sky.render(sky=0.1))
    assert summary["differs"]
    for b in BANDS:
        e = check(summary, "sky_offset", b)
        assert e["estimate"] == pytest.approx(0.1, abs=0.005) and e["differs"]
        assert e["ci95"][0] < e["estimate"] < e["ci95"][1]
        assert any("sky" in r and f"{b}-band" in r and "above" in r for r in summary["reasons"])
    assert {e["quantity"] for e in summary["checks"] if e["differs"]} == {"sky_offset"}


def test_depth(sky, release):
    extra = {b: sky.rng.standard_normal((sky.n, SIZE, SIZE), dtype=np.float32) * np.sqrt(0.1) for b in BANDS}
    _, summary = run(sky, release, sky.render(ivar_scale=1 / 1.1, extra=extra))
    for b in BANDS:
        depth, noise = check(summary, "depth", b), check(summary, "noise", b)
        assert depth["estimate"] == pytest.approx(1 / 1.1, abs=0.005) and depth["differs"]
        assert abs(noise["estimate"]) < 0.01 and not noise["differs"]
        assert any("inverse variance is 0.909 times" in r and f"{b}-band" in r for r in summary["reasons"])
    assert {e["quantity"] for e in summary["checks"] if e["differs"]} == {"depth"}


def test_unrecorded_noise(sky, release):
    """Noise added but the inverse variance left as it was: chi grows by sqrt(1.1)."""
    extra = {b: sky.rng.standard_normal((sky.n, SIZE, SIZE), dtype=np.float32) * np.sqrt(0.1) for b in BANDS}
    _, summary = run(sky, release, sky.render(extra=extra))
    for b in BANDS:
        noise = check(summary, "noise", b)
        assert noise["estimate"] == pytest.approx(np.sqrt(1.1) - 1, abs=0.01) and noise["differs"]
        assert not check(summary, "depth", b)["differs"]


def test_astrometry(sky, release):
    _, summary = run(sky, release, sky.render(shift=0.3))
    for b in BANDS:
        e = check(summary, "astrometry", b)
        assert e["estimate"] == pytest.approx(0.3 * PIXSCALE, abs=0.003) and e["differs"]
        assert e["dx_arcsec"] == pytest.approx(0.3 * PIXSCALE, abs=0.003) and abs(e["dy_arcsec"]) < 0.003
        assert e["ci95"][0] < e["estimate"] < e["ci95"][1]
    assert {e["quantity"] for e in summary["checks"] if e["differs"]} == {"astrometry"}
    assert len(summary["reasons"]) == 3
    assert all(re.search(r"-band astrometry is offset by 0\.07[89] arcsec", r) for r in summary["reasons"])


def test_psf(sky, release):
    wider = sky.render(sigma=2.2)
    _, summary = run(sky, release, wider)
    for b in BANDS:
        e = check(summary, "psf", b)
        assert e["estimate"] == pytest.approx(1.1, abs=0.01) and e["differs"]
        assert any("PSF is 10% wider" in r and f"{b}-band" in r for r in summary["reasons"])
    assert {e["quantity"] for e in summary["checks"] if e["differs"]} == {"psf"}
    # without the catalogue's PSF size: the mean moment change, reported, not judged
    _, bare = run(sky, release, wider, psf=False)
    e = check(bare, "psf", "r")
    assert e["estimate"] > 0.3 and e["p_holm"] < 1e-6 and not e["differs"] and "note" in e
    assert not bare["differs"]


def test_brick_clustering(sky, release):
    """Sky offsets that differ from brick to brick and average zero: the interval is as wide as the bricks'
    scatter (0.05 sigma), not the examples' (far narrower), and the check does not call them a difference."""
    stats = release
    offset = np.repeat(np.random.default_rng(2).normal(0, 0.05, N_BRICKS), PER_BRICK)
    offset -= offset.mean()
    inj = stats.copy()
    for b in BANDS:
        inj[f"sky_{b}"] += offset * stats[f"sigma_{b}"]
    diffs = compare(release, inj, sky.bricks)
    summary = summarise(diffs, {"sky_offset": 0.0})
    e = check(summary, "sky_offset", "g")
    half = (e["ci95"][1] - e["ci95"][0]) / 2
    assert 0.01 < half < 0.05 and e["p_value"] > 0.5 and not e["differs"]
    one = summarise(diffs[diffs["brick"] == "b00"], {})
    assert not one["clustered"] and one["bricks"] == 1 and not check(one, "sky_offset", "g")["clustered"]


def test_check_bricks(sky, release, tmp_path):
    """Brick files: the ``processing`` tables of those that have one compared; a brick whose reals fell back to
    the release's coadds is listed."""
    h5py = pytest.importorskip("h5py")
    from realfake.cutouts.brickfile import _records

    inj = release.copy()
    inj["sky_g"] += 0.1 * release["sigma_g"]
    paths = []
    for i, brick in enumerate(map(str, np.unique(sky.bricks))):
        rows = sky.bricks == brick
        table = pd.concat([pd.DataFrame({"id": np.arange(rows.sum()), "brick": brick, "rs": "rs0",
                                         **{f"psfsize_{b}": 1.2 for b in BANDS}}),
                           release[rows].reset_index(drop=True).add_prefix("rel_"),
                           inj[rows].reset_index(drop=True).add_prefix("inj_")], axis=1)
        paths.append(tmp_path / f"{brick}.h5")
        with h5py.File(paths[-1], "w") as f:
            if i:
                f.create_dataset("processing", data=_records(table))
            f.attrs.update(brick=brick, reals_fallback="" if i else "no seed folder of its injection run has coadds")
    summary, diffs = check_bricks(paths, {"sky_offset": 0.05})
    assert summary["reals_from_release"] == ["b00"] and len(diffs) == sky.n - PER_BRICK
    assert summary["bricks"] == N_BRICKS - 1 and summary["tolerances"]["sky_offset"] == 0.05
    assert [(e["quantity"], e["band"]) for e in summary["checks"] if e["differs"]] == [("sky_offset", "g")]


def test_empty():
    summary = summarise(pd.DataFrame(columns=["brick"]), {})
    assert summary["n"] == 0 and not summary["differs"] and summary["checks"] == [] and summary["reasons"] == []
    assert summary["note"].startswith("no real galaxy compared")
    empty = stamp_statistics(np.zeros((0, SIZE, SIZE, 6), np.float32), CHANNELS)
    assert len(compare(empty, empty, [])) == 0


def test_brick_file_table(sky, release):
    """The brick file's ``processing`` table (``rel_`` and ``inj_`` statistics side by side, the catalogue's PSF
    size) is compared as it is; a quantity without any value is reported as NaN, not judged."""
    inj = release.copy()
    inj["x_g"] = np.nan
    table = pd.concat([pd.DataFrame({"id": np.arange(sky.n), "brick": sky.bricks, "rs": "rs0",
                                     **{f"psfsize_{b}": 1.2 for b in BANDS}}),
                       release.add_prefix("rel_"), inj.add_prefix("inj_")], axis=1)
    diffs = compare_table(table)
    assert len(diffs) == sky.n and (diffs["psfsize_r"] == 1.2).all()
    summary = summarise(diffs, {})
    e = check(summary, "astrometry", "g")
    assert e["n"] == 0 and np.isnan(e["estimate"]) and np.isnan(e["p_value"]) and not e["differs"]
    assert check(summary, "psf", "g")["estimate"] == 1.0 and not summary["differs"]


def test_figure(sky, release, tmp_path):
    """The figure is written, PNG and PDF: the r-band sky 0.1 sigma up and the z-band PSF 5% wider (red), a g-band
    centroid shift below the tolerance (black)."""
    inj = release.copy()
    inj["sky_r"] += 0.1 * release["sigma_r"]
    inj["t_z"] += 0.10 * 2 * SIGMA_GAL**2 * release["k_z"] + np.random.default_rng(1).normal(0, 0.05, sky.n)
    inj["x_g"] += 0.03
    psfsize = pd.DataFrame({f"psfsize_{b}": np.full(sky.n, 2.3548 * SIGMA_GAL * PIXSCALE) for b in BANDS})
    diffs = compare(release, inj, sky.bricks, psfsize=psfsize)
    summary = summarise(diffs, {}, pixscale=PIXSCALE)
    assert {(e["quantity"], e["band"]) for e in summary["checks"] if e["differs"]} == {("sky_offset", "r"),
                                                                                       ("psf", "z")}
    out = tmp_path / "processing.png"
    processing_figure(summary, diffs, out)
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.with_suffix(".pdf").stat().st_size > 1_000
