"""The sensitivity grid: planted perturbations exact on known stamps, the table and the verdict's sentence, and the
grid's bookkeeping run at tiny scale on real files (the curve itself is a measurement, not a test)."""

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, snakemake
from realfake import FAKE, REAL
from realfake.evaluation.plant import (add_noise, halves, match_flux_noise, perturb, plant_brick, psf_sigma_px, scale_flux,
                            shift, widen_psf)
from realfake.evaluation.sensitivity import quote, scenarios, synthetic_defect, table

CHANNELS = ["g", "ivar_g", "r", "ivar_r", "z", "ivar_z"]


def gaussian(shape, sigma, cy=None, cx=None, flux=100.0):
    yy, xx = np.indices(shape, dtype=float)
    cy = (shape[0] - 1) / 2 if cy is None else cy
    cx = (shape[1] - 1) / 2 if cx is None else cx
    g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return flux * g / g.sum()


def moments(img):
    yy, xx = np.indices(img.shape, dtype=float)
    f = img.sum()
    cy, cx = (img * yy).sum() / f, (img * xx).sum() / f
    return cy, cx, (img * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / (2 * f)


def spectrum(planes) -> np.ndarray:
    """The mean power of stamps at each discrete frequency (1 = white noise of unit variance)."""
    return np.mean([np.abs(np.fft.fft2(p)) ** 2 for p in planes], axis=0) / planes[0].size


def test_psf_widening_scales_a_gaussian_psf_and_keeps_the_noise_white():
    rng = np.random.default_rng(1)
    sigma_src, sigma_psf = 1.5, psf_sigma_px(1.3)  # 1.3" FWHM: 2.1 px
    img = gaussian((96, 96), np.hypot(sigma_src, sigma_psf))
    quiet = np.full(img.shape, 1e14, np.float32)  # noiseless: the noise restored is negligible
    for f in (0.05, 0.2, 0.5):
        *_, m2 = moments(widen_psf(img, quiet, sigma_psf, f, rng))
        assert m2 == pytest.approx(sigma_src**2 + (sigma_psf * (1 + f)) ** 2, rel=0.005)
    # noise: still white at 1/ivar after the blur, at every frequency (the smallest blur's is the hardest case)
    ivar = np.full((64, 64), 4.0, np.float32)
    for f in (0.05, 0.3):
        out = [widen_psf(rng.standard_normal((64, 64)) * 0.5, ivar, sigma_psf, f, rng) for _ in range(300)]
        power = spectrum(out) / 0.25
        assert power.mean() == pytest.approx(1.0, rel=0.01)
        assert np.abs(power - 1).max() < 0.45 and np.abs(power[32, :].mean() - 1) < 0.1  # Nyquist row too
    assert widen_psf(img, quiet, sigma_psf, 0.0, rng).tobytes() == img.astype(np.float32).tobytes()


def test_flux_scale_shows_in_the_aperture_flux_and_both_halves_get_the_same_noise():
    img = gaussian((64, 64), 2.5)
    ivar = np.ones(img.shape, np.float32)
    for s in (0.05, 0.25):
        assert scale_flux(img, ivar, 2.0, s).sum() / img.sum() == pytest.approx(1 + s, rel=1e-3)
    # the noise the added light brings, and the noise the other half is given: the same spectrum
    rng = np.random.default_rng(2)
    centre = (slice(16, 48), slice(16, 48))  # where the taper is flat (the network's crop)
    scaled = [scale_flux(rng.standard_normal((64, 64)), ivar, 2.0, 0.3)[centre] for _ in range(400)]
    matched = [match_flux_noise(rng.standard_normal((64, 64)), ivar, 2.0, 0.3, rng)[centre] for _ in range(400)]
    a, b = spectrum(scaled), spectrum(matched)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32)))
    bands = [(k < 0.08), (k >= 0.08) & (k < 0.2), (k >= 0.2)]
    assert a[bands[0]].mean() > 1.5 and a[bands[2]].mean() < 1.05  # the low frequencies gained power ...
    for band in bands:  # ... in both halves alike
        assert a[band].mean() == pytest.approx(b[band].mean(), rel=0.04)
    assert np.var(scaled) == pytest.approx(np.var(matched), rel=0.02)


def test_noise_recorded_or_not():
    rng = np.random.default_rng(3)
    img = np.zeros((256, 256), np.float32)
    ivar = np.full(img.shape, 25.0, np.float32)
    out, new = add_noise(img, ivar, 0.3, rng, record=True)
    assert (out * np.sqrt(ivar)).var() == pytest.approx(0.3, rel=0.03)
    assert np.array_equal(new, ivar / np.float32(1.3))
    out, new = add_noise(img, ivar, 0.3, rng, record=False)
    assert np.array_equal(new, ivar)
    ivar[:10] = 0  # no data stays untouched
    out, _ = add_noise(img, ivar, 0.3, rng, record=True)
    assert not out[:10].any()


def test_offset_moves_the_centroid_exactly_and_keeps_the_noise_power():
    img = gaussian((64, 64), 2.0)
    cy, cx, _ = moments(img)
    for dy, dx in ((0.5, 0.0), (0.3, -0.4), (0.0, 1.0)):
        y, x, _ = moments(shift(img, dy, dx))
        assert (y - cy, x - cx) == pytest.approx((dy, dx), abs=1e-3)
    noise = np.random.default_rng(4).standard_normal((64, 64)).astype(np.float32)
    assert np.sum(shift(noise, 0.37, 0.81) ** 2) == pytest.approx(np.sum(noise**2), rel=1e-5)  # a phase shift
    # through perturb: the direction drawn from the source's stream, the size exact, every band the same
    stamp = np.stack([img, np.ones_like(img)] * 3, axis=-1).astype(np.float32)
    angle = np.random.default_rng(9).uniform(0, 2 * np.pi)
    out = perturb(stamp, CHANNELS, "offset", 0.75, {}, np.random.default_rng(9))
    for i in (0, 2, 4):
        y, x, _ = moments(out[..., i])
        assert (y - cy, x - cx) == pytest.approx((0.75 * np.sin(angle), 0.75 * np.cos(angle)), abs=1e-3)
        assert np.array_equal(out[..., i + 1], stamp[..., i + 1])  # inverse variance in place


def test_null_and_bad_kind():
    stamp = np.random.default_rng(5).standard_normal((64, 64, 6)).astype(np.float32)
    for kind, size in (("none", 0.0), ("psf", 0.0), ("noise", 0.0)):
        assert perturb(stamp, CHANNELS, kind, size, {}, np.random.default_rng(0)).tobytes() == stamp.tobytes()
    with pytest.raises(ValueError, match="kind must be one of"):
        perturb(stamp, CHANNELS, "blur", 0.1, {}, np.random.default_rng(0))


def test_halves_are_brick_balanced_and_a_function_of_identity_only():
    src = pd.DataFrame({"brick": ["a"] * 7 + ["b"] * 10, "id": list(range(7)) + list(range(100, 110))})
    lab = halves(src, seed=3)
    assert [(lab[src["brick"] == b] == FAKE).sum() for b in ("a", "b")] == [3, 5]
    shuffled = src.sample(frac=1, random_state=1)
    assert np.array_equal(halves(shuffled, 3), lab[shuffled.index])  # row order does not matter
    assert not np.array_equal(halves(src, 4), lab)


def test_plant_brick_on_a_real_brick_file(brick_files, tmp_path):
    from realfake.cutouts.brickfile import read_sources

    path = brick_files[0]
    src = read_sources(path)
    out = tmp_path / path.name
    r = plant_brick(path, out, "noise", 0.5, seed=2)
    planted = read_sources(out)
    assert r["reals"] == (src["label"] == REAL).sum() == len(planted)
    assert abs((planted["label"] == FAKE).sum() * 2 - len(planted)) <= 1
    assert (planted[["brick", "id"]].to_numpy() == src.loc[src["label"] == REAL, ["brick", "id"]].to_numpy()).all()
    with h5py.File(path) as f, h5py.File(out) as g:
        before = f["cutouts"][()][src["label"].to_numpy() == REAL]
        after = g["cutouts"][()]
        assert json.loads(g.attrs["planted"])["kind"] == "noise"
        assert np.array_equal(g["labels"][()], planted["label"].to_numpy())
    changed = np.abs(after - before).reshape(len(after), -1).max(axis=1) > 0
    assert np.array_equal(changed, planted["label"].to_numpy() == FAKE)  # the perturbed half only, all of it
    # the inverse variance updated: divided by 1.5 where perturbed
    ivar = [1, 3, 5]
    fake = planted["label"].to_numpy() == FAKE
    assert np.allclose(after[fake][..., ivar], before[fake][..., ivar] / 1.5)


def metrics(auc, p, found, n=1000, passed=True):
    return {"ci95": {"auc": [auc - 0.03, auc + 0.03]}, "auc": auc, "p_value": p, "n": n, "bricks": 16,
            "verdict_class": "distinguishable" if found else "no_difference_detected",
            "training": {"passed": passed}, "power": {"min_detectable_auc": 0.55}}


def test_table_and_the_sentence_the_verdict_quotes():
    grid = {("planted", "none", "0"): metrics(0.5, 0.6, False), ("planted", "psf", "0.05"): metrics(0.52, 0.3, False),
            ("planted", "psf", "0.15"): metrics(0.6, 0.001, True), ("planted", "psf", "0.3"): metrics(0.7, 0.0005, True),
            ("planted", "offset", "1"): metrics(0.51, 0.4, False)}
    df = table(grid)
    assert list(df["kind"]) == ["none", "offset", "psf", "psf", "psf"]  # the null row first
    s = quote(df)
    assert "A PSF 15% too wide: found (AUC 0.60" in s and "a PSF 5% too wide: not found (AUC 0.52" in s
    assert "Centres 1 pixel (0.26\") off: not found" in s and "With no defect: AUC 0.50" in s
    assert "WARNING" not in s
    grid[("planted", "none", "0")] = metrics(0.58, 0.01, True)
    assert "WARNING: the null row (no defect) was found" in quote(table(grid))
    grid[("planted", "offset", "1")] = metrics(0.51, 0.4, False, passed=False)
    assert "training" not in quote(table(grid))  # the training diagnostics bound nothing either way


def test_scenarios_and_synthetic_keys():
    cfg = {"source": "planted", "grid": {"psf": [0.1, 0.2], "offset": [1]}, "null_row": True}
    assert scenarios(cfg) == [("planted", "none", "0"), ("planted", "psf", "0.1"), ("planted", "psf", "0.2"),
                              ("planted", "offset", "1")]
    with pytest.raises(ValueError, match="'sersic' is not a defect of the planted source"):
        scenarios({**cfg, "grid": {"sersic": [1]}})
    syn = synthetic_defect({"seed": 1, "fake_psf_scale": 1.0}, "psf", "0.2")
    assert syn["fake_psf_scale"] == pytest.approx(1.2)
    assert synthetic_defect({}, "ellipticity", "1") == {"fake_ellipticity": "distortion"}
    assert synthetic_defect({"seed": 1}, "none", "0") == {"seed": 1}


def test_grid_bookkeeping_at_tiny_scale(tiny_run, tmp_path):
    """A one-scenario planted grid on the tiny run's cutouts: the scenario a pipeline of its own, the table, the
    figure and the verdict's sentence; the main run's training is not redone. (One scenario: the null row and the
    grid's other rows are the same rules with other wildcards; their bookkeeping is the table's, tested above.)"""
    work = tmp_path / "grid"
    shutil.copytree(tiny_run, work, symlinks=True)
    (work / "config" / "grid.yaml").write_text(
        "sensitivity: {enabled: true, null_row: false, folds: 2,\n"
        "              grid: {noise_unrecorded: [1.0], psf: [], flux: [], offset: []}}\n")
    args = ("-s", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", "2", "--configfile",
            str(work / "config" / "config.yaml"), str(work / "config" / "grid.yaml"))
    r = snakemake(*args, cwd=work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    jobs = r.stdout + r.stderr  # the job table: the run's own models are kept, the scenario's trained
    assert "\ntrain_cnn " not in jobs and "sensitivity_train_cnn" in jobs
    s = work / "results" / "sensitivity"
    df = pd.read_csv(s / "sensitivity.csv")
    assert list(zip(df["kind"], df["size"])) == [("noise_unrecorded", 1.0)]
    assert set(df.columns) >= {"examples", "auc", "auc_lo", "auc_hi", "p_value", "detected", "training_passed"}
    assert (s / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    man = pd.read_csv(s / "planted" / "noise_unrecorded" / "1" / "shards" / "manifest.csv")
    assert man["rs"].isna().all()  # reals only (no seed folder), half of them labelled fake in every brick
    assert man.groupby("brick")["label"].mean().between(0.4, 0.6).all()
    m = json.loads((work / "results" / "evaluation" / "metrics.json").read_text())
    assert "Sensitivity (defects planted on half of this run's real galaxies" in m["verdict"]
    assert m["sensitivity"]["sentence"] in m["verdict"]
