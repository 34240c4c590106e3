"""Bricks to per-brick cutout HDF5 files, on real FITS files of the synthetic release."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from realfake import layout
from realfake.catalogs import CatalogError, read_simcat, read_tractor
from realfake.cutouts import DEFAULT_CHANNELS, read_coadd, read_sources
from realfake.selection import select_real


def test_hdf5_layout(brick_files):
    with h5py.File(brick_files[0], "r") as f:
        x = f["cutouts"]
        assert x.dtype == np.float32 and x.shape[1:] == (64, 64, 6)
        assert x.chunks == (1, 64, 64, 6)
        assert list(f.attrs["channels"]) == list(DEFAULT_CHANNELS)
        labels = f["labels"][()]
        assert set(np.unique(labels)) == {0, 1}
        assert len(f["sources"]) == len(x) == len(labels)
        assert f.attrs["cutout_size"] == 64 and f.attrs["brick"] == "1210p060"
        assert any(s.endswith("tractor-1210p060.fits") for s in f.attrs["source_files"])
    src = read_sources(brick_files[0])
    assert set(src["rs"][src["label"] == 1]) == {"rs0", "rs1"} and set(src["rs"][src["label"] == 0]) == {""}
    assert src["frac_nodata"].between(0, 1).all()


def test_cutout_is_centred_on_the_source_pixel(mock_dr9, brick_files):
    root, _ = mock_dr9
    src = read_sources(brick_files[0])
    coadd = read_coadd(root / "release", "1210p060")
    with h5py.File(brick_files[0], "r") as f:
        for i in np.flatnonzero(src["label"].to_numpy() == 0)[:5]:
            ix, iy = int(np.floor(src["x"][i] + 0.5)), int(np.floor(src["y"][i] + 0.5))
            stamp = f["cutouts"][i]
            assert stamp[32, 32, 0] == coadd.planes["g"][iy, ix]
            assert stamp[32, 32, 5] == coadd.planes["ivar_z"][iy, ix]


def test_offedge_sources_are_set_aside_and_counted(brick_files):
    with h5py.File(brick_files[0], "r") as f:
        cuts = pd.DataFrame(f["cuts"][()])
        offedge = f["offedge"][()]
        n = len(f["sources"])
    assert cuts["offedge"].sum() == len(offedge) > 0
    assert cuts["kept"].sum() == n
    removed = [c for c in cuts.columns if c.startswith("cut_")]
    assert (cuts["n_in"] == cuts[removed].sum(axis=1) + cuts["offedge"] + cuts["kept"]).all()


def test_selection_counts_each_cut(mock_dr9, selection):
    root, _ = mock_dr9
    cat = read_tractor(root / "release", "1210p060")
    keep, removed = select_real(cat, selection)
    assert list(removed) == ["brick_primary", "nobs", "type", "positive_flux", "size", "faint", "bright", "colour"]
    assert len(cat) - keep.sum() == sum(removed.values())
    kept = cat[keep]
    assert kept["type"].isin(selection["types"]).all()
    assert kept["size"].between(selection["size_min"], selection["size_max"]).all()
    assert not kept["type"].isin(["PSF", "DEV"]).any()


def test_dr5_schema_is_detected(mock_dr5, selection):
    root, cfg = mock_dr5
    cat = read_tractor(root / "release", cfg.bricks[0])
    assert cat.attrs["schema"] == "dr5"
    assert set(cat["type"]) <= {"PSF", "REX", "EXP", "DEV", "COMP"}
    keep, _ = select_real(cat, selection)
    assert keep.any()


def test_simcat_positions_are_zero_indexed_after_reading(mock_dr9):
    root, _ = mock_dr9
    sim = read_simcat(root / "injection", "1212p060", "rs0")
    import fitsio

    raw = fitsio.read(str(layout.simcat_file(root / "injection", "1212p060", "rs0")))
    first = raw[raw["id"] == sim["id"][0]][0]
    assert sim["x"][0] == pytest.approx(first["x"] - 1)
    assert sim.attrs["n_listed"] >= len(sim)


def test_missing_column_is_named(tmp_path, mock_dr9):
    import fitsio

    root, _ = mock_dr9
    t = fitsio.read(str(layout.tractor_file(root / "release", "1210p060")))
    bad = tmp_path / "tractor" / "121"
    bad.mkdir(parents=True)
    names = [n for n in t.dtype.names if n != "flux_r"]
    fitsio.write(str(bad / "tractor-1210p060.fits"), t[names])
    with pytest.raises(CatalogError, match=r"tractor-1210p060.fits.*flux_r"):
        read_tractor(tmp_path, "1210p060")


def test_no_cutout_is_centred_on_missing_data_real_or_fake(brick_files):
    with h5py.File(brick_files[0], "r") as f:
        x = f["cutouts"][()]
        cuts = pd.DataFrame(f["cuts"][()])
    src = read_sources(brick_files[0])
    ivar = [DEFAULT_CHANNELS.index(c) for c in ("ivar_g", "ivar_r", "ivar_z")]
    assert (x[:, 32, 32][:, ivar] > 0).all()
    assert (src["frac_nodata"] <= 0.5).all()
    # the synthetic release has a corner and a column without data: fakes land there and are dropped, counted
    n_dropped = 0
    for path in brick_files:
        with h5py.File(path, "r") as f:
            n_dropped += pd.DataFrame(f["cuts"][()])["cut_nodata"].sum()
    assert n_dropped > 0
