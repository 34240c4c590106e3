"""Bricks to per-brick cutout HDF5 files, on real FITS files of the synthetic release."""

from __future__ import annotations

import json
import shutil
import sysconfig

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import assert_same_brick_file

from realfake.inputs import layout
from realfake.cutouts.brickfile import DEFAULT_CHANNELS, read_sources, read_table
from realfake.inputs.catalogs import CatalogError, read_tractor
from realfake.inputs.coadds import read_coadd
from realfake.inputs.injection import LAYOUTS, Run, read_fakes
from realfake.inputs.selection import select_real


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
    # the reals are cut from the brick's first injection run's coadds, as its fakes are
    assert set(src["coadds"]) == {"rs0", "rs1"} and set(src.loc[src["label"] == 0, "coadds"]) == {"rs0"}
    coadd = read_coadd(root / "injection", "1210p060", "rs0")
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
    sim = read_fakes(Run(root / "injection", "1212p060", "rs0", LAYOUTS["obiwan2018"]))
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
    src = read_sources(brick_files[0])
    ivar = [DEFAULT_CHANNELS.index(c) for c in ("ivar_g", "ivar_r", "ivar_z")]
    assert (x[:, 32, 32][:, ivar] > 0).all()
    assert (src["frac_nodata"] <= 0.5).all()
    # the synthetic release has a corner and a column without data: fakes land there and are dropped, counted (by
    # the nobs cut on their measured values, as reals are, or by the no-data cut)
    n_dropped = 0
    for path in brick_files:
        with h5py.File(path, "r") as f:
            fakes = pd.DataFrame(f["cuts"][()]).query("label == 1")
            n_dropped += fakes["cut_nodata"].sum() + fakes["cut_nobs"].sum()
    assert n_dropped > 0


def test_tile_regions_cover_every_stamp_tile_once():
    from realfake.inputs.coadds import tile_regions

    rng = np.random.default_rng(1)
    iy, ix = rng.integers(0, 3600 - 64, 40), rng.integers(0, 3600 - 64, 40)
    for tile in [(100, 100), (1, 3600), (37, 250)]:
        regions = tile_regions((3600, 3600), tile, iy, ix, 64)
        count = np.zeros((3600, 3600), np.int8)
        for y0, y1, x0, x1 in regions:
            assert y0 % tile[0] == 0 and x0 % tile[1] == 0  # whole tiles
            count[y0:y1, x0:x1] += 1
        assert count.max() == 1  # no tile decompressed twice
        for y0, x0 in zip(iy, ix):
            assert count[y0 : y0 + 64, x0 : x0 + 64].all()
        assert count.mean() < 0.75  # 40 stamps need a fraction of the brick
    # runs of needed tiles at most `gap` apart are one rectangle (one decompression call)
    assert tile_regions((400, 1000), (100, 100), [0, 0], [0, 350], 64) == [(0, 100, 0, 100), (0, 100, 300, 500)]
    assert tile_regions((400, 1000), (100, 100), [0, 0], [0, 350], 64, gap=2) == [(0, 100, 0, 500)]
    # a row-tiled image is read in bands of consecutive rows, not one call per row
    assert tile_regions((3600, 3600), (1, 3600), [10, 50], [0, 3000], 64) == [(10, 114, 0, 3600)]


def _retiled_release(root, brick, out, tile, compress=None):
    """The release's coadds of ``brick`` compressed again in ``tile`` tiles (with ``compress``: RICE by default),
    under ``out``; ``out``."""
    from realfake.testing import retile

    for src, dst in zip(layout.coadd_files(root / "release", brick), layout.coadd_files(out, brick)):
        retile(src, dst, tile, compress)
    return out


def _two_stamps_inside(root, brick):
    """x, y of two real sources whose stamps lie well inside the 256-pixel brick: they need a part of the tiles."""
    cat = read_tractor(root / "release", brick)
    inside = cat[cat["x"].between(40, 215) & cat["y"].between(40, 215)]
    return inside["x"].to_numpy()[[0, -1]], inside["y"].to_numpy()[[0, -1]]


@pytest.mark.parametrize("tile, compress", [(None, None), ([32, 32], None), ([1, 256], None), ([32, 32], "GZIP_2")],
                         ids=["legacypipe 100x100", "32x32", "rows", "GZIP_2 32x32 (astropy's sections)"])
def test_reading_only_the_tiles_under_the_stamps_gives_the_same_stamps(mock_dr9, tmp_path, tile, compress):
    import fitsio
    from astropy.io import fits

    from realfake.inputs.coadds import stamp_origins
    from realfake.cutouts.stamps import cut_stamps
    from realfake.inputs.fitstiles import TiledImage

    root, _ = mock_dr9
    brick, release = "1210p060", root / "release"
    if tile is not None:
        release = _retiled_release(root, brick, tmp_path, tile, compress)
    g = layout.coadd_file(release, brick, "image", "g")
    h = fitsio.read_header(str(g), ext=1)
    assert [h["ZTILE2"], h["ZTILE1"]] == (tile or [100, 100]) and h["ZCMPTYPE"] == (compress or "RICE_1")
    with fits.open(g) as f:
        assert (TiledImage.of(f) is None) == (compress is not None)  # read by fitstiles, or by astropy
    x, y = _two_stamps_inside(root, brick)
    full = read_coadd(release, brick)
    part = read_coadd(release, brick, around=(x, y, 64))
    if tile is not None:  # (of a 256-pixel image's nine 100x100 tiles, the two stamps touch most)
        assert (part.planes["ivar_g"] == 0).mean() > (full.planes["ivar_g"] == 0).mean() + 0.2  # the rest unread
    iy, ix, on = stamp_origins(x, y, 64, full.shape)
    assert on.all()
    for whole, partial in zip(cut_stamps(full, iy, ix, 64, DEFAULT_CHANNELS), cut_stamps(part, iy, ix, 64, DEFAULT_CHANNELS)):
        np.testing.assert_array_equal(whole, partial)


def test_pixels_without_data_are_zeroed_and_counted_per_stamp():
    from realfake.cutouts.stamps import clean_stamps

    stamps = np.ones((3, 6, 8, 8), np.float32)  # channel-first
    c = list(DEFAULT_CHANNELS)
    stamps[0, c.index("ivar_r"), :2, :] = 0  # no exposure in r: 2 rows of 8
    stamps[1, c.index("z"), 4, 4] = np.nan  # the centre, one band
    stamps[2, c.index("ivar_g"), 0, 0] = np.inf
    stamps[2, c.index("ivar_g"), 0, 1] = -1
    frac, centred = clean_stamps(stamps, c)
    np.testing.assert_allclose(frac, [16 / 64, 1 / 64, 2 / 64])
    assert centred.tolist() == [True, False, True]
    assert np.isfinite(stamps).all()
    assert (stamps[0, c.index("r"), :2, :] == 0).all() and (stamps[0, c.index("g"), :2, :] == 1).all()
    assert stamps[1, c.index("ivar_z"), 4, 4] == 0 and (stamps[2, c.index("g"), 0, :2] == 0).all()


def test_stamps_are_cut_channels_last_in_the_configured_order(mock_dr9):
    from realfake.cutouts.stamps import cut_stamps

    root, _ = mock_dr9
    coadd = read_coadd(root / "release", "1210p060")
    channels = ("z", "ivar_z", "g", "ivar_g", "r", "ivar_r")
    iy, ix = np.array([3, 100]), np.array([7, 50])
    coadd.planes["r"][100 + 32, 50 + 32] = np.nan  # the second stamp's centre has no data in r
    stamps, frac, centred = cut_stamps(coadd, iy, ix, 64, channels)
    assert stamps.shape == (2, 64, 64, 6) and stamps.dtype == np.float32
    for k, (y0, x0) in enumerate(zip(iy, ix)):
        for c, name in enumerate(channels):
            band = name[-1]
            cut = {n: coadd.planes[n][y0 : y0 + 64, x0 : x0 + 64] for n in (band, f"ivar_{band}")}
            data = (cut[f"ivar_{band}"] > 0) & np.isfinite(cut[band])
            np.testing.assert_array_equal(stamps[k, :, :, c], np.where(data, cut[name], 0))
    assert centred.tolist() == [True, False] and frac[1] >= 1 / 4096


@pytest.mark.skipif(not shutil.which(str(sysconfig.get_config_var("CC") or "cc").split()[0]),
                    reason="no C compiler: the install falls back to numpy")
def test_the_c_kernels_are_built_where_a_compiler_is():
    """setup.py builds them optionally (an install without a compiler falls back to numpy): here they must be."""
    from realfake.cutouts import stamps

    assert stamps._stamps is not None, "realfake.cutouts._stamps was not built: pip install -e . -v shows why"


@pytest.mark.parametrize("size", [64, 8, 5], ids=["64", "8", "odd 5 (the kernel's scalar tail)"])
@pytest.mark.parametrize("channels", [DEFAULT_CHANNELS, ("ivar_z", "r", "g", "ivar_r", "z", "ivar_g")],
                         ids=["default order", "shuffled"])
def test_the_c_kernels_cut_what_numpy_cuts_bit_for_bit(mock_dr9, size, channels):
    """Every way a pixel can lack data (invvar 0, negative, NaN or inf; image NaN or inf), in a corner, the centre
    and a whole stamp: the stamps, their fraction without data and their centre flag agree exactly."""
    from realfake.inputs.coadds import stamp_origins
    from realfake.cutouts.stamps import cut_stamps

    pytest.importorskip("realfake.cutouts._stamps")
    root, _ = mock_dr9
    coadd = read_coadd(root / "release", "1210p060")
    rng = np.random.default_rng(11)
    for name, value in [("ivar_g", 0), ("ivar_r", -1), ("ivar_z", np.nan), ("ivar_g", np.inf), ("r", np.nan),
                        ("z", -np.inf), ("g", np.inf), ("ivar_z", -0.0), ("g", -0.0), ("ivar_r", 1e-45)]:
        plane = coadd.planes[name]
        plane[rng.integers(0, plane.shape[0], 400), rng.integers(0, plane.shape[1], 400)] = value
    coadd.planes["ivar_r"][:110, :110] = 0  # whole stamps without data
    x, y = rng.uniform(0, 256, 300), rng.uniform(0, 256, 300)
    iy, ix, on = stamp_origins(x, y, size, coadd.shape)
    c_cut = cut_stamps(coadd, iy[on], ix[on], size, channels)
    numpy_cut = cut_stamps(coadd, iy[on], ix[on], size, channels, kernels=False)
    np.testing.assert_array_equal(c_cut[0].view(np.uint32), numpy_cut[0].view(np.uint32))  # (-0.0 kept as -0.0)
    np.testing.assert_array_equal(c_cut[1], numpy_cut[1])
    np.testing.assert_array_equal(c_cut[2], numpy_cut[2])
    assert 0 < numpy_cut[1].mean() and (numpy_cut[1] == 1).any() and not numpy_cut[2].all()


def test_the_c_kernels_refuse_what_would_take_them_out_of_bounds():
    _stamps = pytest.importorskip("realfake.cutouts._stamps")
    plane, staged = np.zeros((100, 100), np.float32), np.zeros((1, 6, 8, 8), np.float32)
    one, two = np.array([0]), np.array([0, 0])
    with pytest.raises(ValueError, match=r"stamp 0 at \(95, 0\) is not on the 100x100 plane"):
        _stamps.gather(plane, 100, 100, np.array([95]), one, staged, 1, 8, 0)
    with pytest.raises(ValueError, match=r"stamp 0 at \(0, 0\) is not on the 100x100 plane"):
        _stamps.gather(plane, 100, 100, one, one, np.zeros((1, 6, 101, 101), np.float32), 1, 101, 0)  # too large
    with pytest.raises(ValueError, match="out: .* bytes"):
        _stamps.gather(plane, 100, 100, two, two, staged, 2, 8, 0)
    with pytest.raises(ValueError, match="cannot be"):  # counts whose bytes overflow, negative counts
        _stamps.gather(plane, 100, 100, two, two, staged, 2**61, 8, 0)
    with pytest.raises(ValueError, match="plane of -1 x 100 pixels"):
        _stamps.gather(plane, -1, 100, one, one, staged, 1, 8, 0)
    flags = np.zeros(1, np.int32), np.zeros(1, np.uint8)
    with pytest.raises(ValueError, match="stamp size 0"):
        _stamps.interleave(staged, 1, 0, (0, 2, 4), (1, 3, 5), np.zeros((1, 8, 8, 6), np.float32), *flags)
    with pytest.raises(ValueError, match="cannot be"):
        _stamps.interleave(staged, -1, 8, (0, 2, 4), (1, 3, 5), np.zeros((1, 8, 8, 6), np.float32), *flags)


def test_planes_read_in_parts_into_a_reused_buffer_give_the_stamps_of_whole_planes(mock_dr9, tmp_path):
    """The job's one buffer for planes read in parts holds the last plane's pixels outside the parts: stamps never
    see them (the buffer is filled with NaN first, and the coadd retiled in 32x32 tiles so that it is read in
    parts)."""
    from realfake.cutouts import stamps
    from realfake.inputs.coadds import stamp_origins

    root, _ = mock_dr9
    brick = "1210p060"
    _retiled_release(root, brick, tmp_path, [32, 32])
    x, y = _two_stamps_inside(root, brick)
    stamps._BUFFERS.get("plane", (256, 256), np.float32)[...] = np.nan
    [(index, staged, _, files)] = stamps.coadd_stamps(layout.coadd_dir(tmp_path, brick), brick, x, y, 64,
                                                      list(DEFAULT_CHANNELS))
    assert np.isnan(stamps._BUFFERS.get("plane", (256, 256), np.float32)).mean() > 0.2  # read in parts
    whole = read_coadd(tmp_path, brick)
    iy, ix, on = stamp_origins(x, y, 64, whole.shape)
    assert index.tolist() == [0, 1] and len(files) == 6
    for c, name in enumerate(DEFAULT_CHANNELS):
        for k in range(2):
            np.testing.assert_array_equal(staged[k, c], whole.planes[name][iy[k] : iy[k] + 64, ix[k] : ix[k] + 64])


def test_a_coadd_with_more_stamps_than_staged_at_once_is_read_in_passes(mock_dr9, selection, tmp_path, monkeypatch,
                                                                          brick_files):
    """The bound on staged memory: room for 7 stamps at a time gives the brick file of a single pass."""
    from realfake.cutouts import stamps
    from realfake.cutouts.cut import make_brick_file

    root, cfg = mock_dr9
    read = []
    iter_planes = stamps.iter_planes
    monkeypatch.setattr(stamps, "iter_planes", lambda *a, **k: read.append(a[:2]) or iter_planes(*a, **k))
    monkeypatch.setattr(stamps, "STAGED_BYTES", 7 * 64 * 64 * 6 * 4)
    path = tmp_path / "1210p060.h5"
    make_brick_file(path, "1210p060", root / "release", root / "injection", cfg.rs, selection, 64, DEFAULT_CHANNELS)
    assert_same_brick_file(path, brick_files[0])
    with h5py.File(path) as passes, h5py.File(brick_files[0]) as one:
        assert len(one["cutouts"]) > 7
        assert list(passes.attrs["source_files"]) == list(one.attrs["source_files"])
    assert len(read) > 3  # more than one pass over some of the three coadds


def test_a_truncated_coadd_is_named_even_when_the_stamps_lie_before_the_cut(mock_dr9, tmp_path):
    from realfake.inputs.coadds import CoaddError

    root, _ = mock_dr9
    brick = "1210p060"
    for src, dst in zip(layout.coadd_files(root / "release", brick), layout.coadd_files(tmp_path, brick)):
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    z = layout.coadd_file(tmp_path, brick, "image", "z")
    z.write_bytes(z.read_bytes()[: int(z.stat().st_size * 0.9)])
    with pytest.raises(CoaddError, match=r"legacysurvey-1210p060-image-z.fits.fz: truncated"):
        read_coadd(tmp_path, brick, around=([40.0], [40.0], 64))  # the first tiles only


def test_stamps_appended_in_blocks_read_back_in_order(tmp_path):
    """brick_writer's blocks of any size, an empty one too, make one dataset of one-stamp chunks, in order."""
    from realfake.cutouts.brickfile import brick_writer

    rng = np.random.default_rng(3)
    stamps = rng.normal(size=(3000, 16, 16, 6)).astype(np.float32)
    empty = pd.DataFrame({"label": np.zeros(len(stamps), np.int8)})
    path = tmp_path / "b.h5"
    with brick_writer(path, 16, DEFAULT_CHANNELS, {}) as (append, finish):
        for lo, hi in [(0, 256), (256, 256), (256, 257), (257, 1500), (1500, 3000)]:  # an empty block too
            append(stamps[lo:hi])
        finish(empty, empty.iloc[:0], pd.DataFrame({"kept": [len(stamps)]}), [])
    with h5py.File(path) as f:
        d = f["cutouts"]
        assert d.chunks == (1, 16, 16, 6) and d.compression is None and d.dtype == np.float32
        np.testing.assert_array_equal(d[()], stamps)
    assert path.stat().st_size < stamps.nbytes + 2**20


def test_every_cutout_carries_the_observing_conditions_at_its_source(brick_files, mock_dr9):
    """Reals: their Tractor row's PSF size, exposures and E(B-V); fakes: their row of the run's rerun catalogue."""
    from scipy.spatial import cKDTree

    from realfake.cutouts.brickfile import read_sources
    from realfake.inputs.catalogs import CONDITIONS, read_tractor

    root, _ = mock_dr9
    src = read_sources(brick_files[0])
    brick = src["brick"].iloc[0]
    tractor = read_tractor(root / "release", brick)
    assert src[CONDITIONS].notna().all().all() and (src["psfsize_r"] > 0).all() and (src["ebv"] > 0).all()
    for rs, fakes in src[src["label"] == 1].groupby("rs"):
        rerun = read_tractor(None, brick, path=layout.tractor_file(root / "injection", brick, rs))
        dist, nearest = cKDTree(rerun[["x", "y"]].to_numpy()).query(fakes[["x", "y"]].to_numpy())
        assert dist.max() < 1e-3  # (cut out around the measured position)
        np.testing.assert_array_equal(fakes[CONDITIONS].to_numpy(np.float32),
                                      rerun[CONDITIONS].iloc[nearest].to_numpy(np.float32))
    reals = src[src["label"] == 0].merge(tractor[["id", *CONDITIONS]], on="id", suffixes=("", "_t"))
    for c in CONDITIONS:
        np.testing.assert_array_equal(reals[c].to_numpy(np.float32), reals[f"{c}_t"].to_numpy(np.float32))


def _cut_one(mock_dr9, selection, out, **kw):
    from realfake.cutouts.cut import make_brick_file

    root, cfg = mock_dr9
    make_brick_file(out, "1210p060", root / "release", root / "injection", cfg.rs, selection, 64, DEFAULT_CHANNELS,
                    **kw)
    with h5py.File(out, "r") as f:
        attrs, has_processing = dict(f.attrs), "processing" in f
    processing = read_table(out, "processing") if has_processing else None
    return read_sources(out), read_table(out, "cuts"), attrs, processing


def test_reals_cut_from_the_release_where_asked_or_where_no_run_has_coadds(mock_dr9, selection, tmp_path):
    src, cuts, attrs, processing = _cut_one(mock_dr9, selection, tmp_path / "a.h5", reals_from="release")
    assert set(src.loc[src["label"] == 0, "coadds"]) == {"release"} and attrs["reals_coadds"] == "release"
    assert processing is None and attrs["reals_fallback"] == ""
    # an injection run without coadds: its fakes cannot be cut, and the reals fall back to the release's, said
    root, cfg = mock_dr9
    copy = tmp_path / "syn"
    shutil.copytree(root, copy)
    for rs in cfg.rs:
        shutil.rmtree(LAYOUTS["obiwan2018"].path(LAYOUTS["obiwan2018"].coadd, copy / "injection", "1210p060", rs))
    src, cuts, attrs, _ = _cut_one((copy, cfg), selection, tmp_path / "b.h5")
    assert set(src["label"]) == {0} and set(src["coadds"]) == {"release"}
    assert "no seed folder of its injection run has coadds" in attrs["reals_fallback"]
    assert cuts.loc[cuts["label"] == 0, "reals_fallback"].sum() == 1


def test_one_neighbour_rule_for_both_classes(mock_dr9, selection, tmp_path):
    from realfake.inputs.bricks import PIXSCALE_ARCSEC
    from realfake.inputs.injection import plan_brick

    root, cfg = mock_dr9
    src, cuts, attrs, _ = _cut_one(mock_dr9, selection, tmp_path / "n.h5", neighbour_radius=6.0)
    assert attrs["neighbour_radius"] == 6.0
    # counted in the cut flow, for the reals (near the fakes of the run they are cut from) and for the fakes
    assert (cuts.loc[cuts["label"] == 0, "cut_neighbour"] > 0).all()
    assert (cuts["cut_neighbour"] >= 0).all()
    plan = plan_brick("1210p060", root / "release", root / "injection", cfg.rs)
    for label, rs in ((0, "rs0"), (1, "rs0"), (1, "rs1")):
        injected = read_fakes(next(r for r in plan.runs if r.rs == rs))
        kept = src[(src["label"] == label) & (src["coadds"] == rs)]
        d = np.hypot(kept["x"].to_numpy()[:, None] - injected["x"].to_numpy()[None],
                     kept["y"].to_numpy()[:, None] - injected["y"].to_numpy()[None])
        if label == 1:  # a fake's own injection is no neighbour of it
            d[kept["id"].to_numpy()[:, None] == injected["id"].to_numpy()[None]] = np.inf
        assert len(kept) and (d.min(axis=1) >= 6.0 / PIXSCALE_ARCSEC).all(), (label, rs)


def test_a_run_whose_coadds_disagree_with_the_release_is_set_aside_and_named(mock_dr9, selection, tmp_path):
    from astropy.io import fits

    root, cfg = mock_dr9
    copy = tmp_path / "syn"
    shutil.copytree(root, copy)
    folder = LAYOUTS["obiwan2018"].path(LAYOUTS["obiwan2018"].coadd, copy / "injection", "1210p060", "rs0")
    path = folder / layout.coadd_name("1210p060", "image", "g")
    with fits.open(path, mode="update") as f:
        f[1].header["CRVAL1"] += 2 * 0.262 / 3600  # two pixels off
    src, cuts, attrs, processing = _cut_one((copy, cfg), selection, tmp_path / "w.h5")
    assert "rs0" not in set(src["coadds"]) and set(src.loc[src["label"] == 0, "coadds"]) == {"rs1"}
    absent = dict(map(tuple, json.loads(attrs["absent_runs"])))
    assert "WCS" in absent["rs0"] and str(path) in absent["rs0"]
    assert cuts.loc[cuts["rs"] == "rs0", "runs_absent"].sum() == 1


def test_the_processing_check_sees_the_same_reals_in_both_coadds(tmp_path, selection):
    from realfake.cutouts.brickfile import DEFAULT_CHANNELS as CH
    from realfake.cutouts.cut import make_brick_file
    from realfake.synthetic.release import MockConfig, make_release
    from realfake.cutouts.processing import check_bricks

    files = {}
    for name, kw in (("same", {}), ("sky", {"rerun_sky_offset": 0.1}), ("depth", {"rerun_noise": 0.1})):
        cfg = MockConfig(bricks=("1210p060", "1212p060"), image_size=400, seed=11, fake_density=2.0, **kw)
        make_release(cfg, tmp_path / name, workers=2)
        files[name] = []
        for b in cfg.bricks:
            out = tmp_path / name / f"{b}.h5"
            make_brick_file(out, b, tmp_path / name / "release", tmp_path / name / "injection", "all", selection, 64,
                            CH, neighbour_radius=6.0)
            files[name].append(out)
    same, _ = check_bricks(files["same"], None, 0.05)
    assert same["n"] > 20 and not same["differs"]
    sky, _ = check_bricks(files["sky"], None, 0.05)
    assert sky["differs"] and any("sky" in r for r in sky["reasons"])
    depth, _ = check_bricks(files["depth"], None, 0.05)
    assert depth["differs"] and any("inverse variance" in r for r in depth["reasons"])
