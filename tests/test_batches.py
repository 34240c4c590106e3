"""Brick selection, batching, and cutout jobs that meet bad bricks: real FITS files, damaged on purpose."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys

import fitsio
import numpy as np
import pandas as pd
import pytest
from conftest import assert_same_brick_file

from realfake.inputs import layout
from realfake.atomic import Settler, settle
from realfake.cutouts.batches import BrickError, CutoutSettings, brick_files, format_summary, rebuild_brick, run_batch, summarise
from realfake.cutouts.brickfile import read_sources
from realfake.inputs.bricks import BrickSelectionError, batch_bricks, bricks_in_box, brick_grid, select_bricks
from realfake.shards.build import build
from realfake.testing import clone_brick


def test_brick_list_file_with_comments(tmp_path):
    f = tmp_path / "bricks.txt"
    f.write_text("# my bricks\n1210p060\n1212p060  1215p060 # two on a line\n\n")
    assert select_bricks({"bricks": str(f), "root": "x"}) == ["1210p060", "1212p060", "1215p060"]


@pytest.mark.parametrize(
    "text, message",
    [("1210p060\n1210p060\n", "bricks.txt:2: brick 1210p060 listed twice (first on line 1)"),
     ("1210p060\n121p060\n", "bricks.txt:2: not a brick name: '121p060'"),
     ("# nothing\n", "no brick names")],
)
def test_brick_list_file_errors_name_file_and_line(tmp_path, text, message):
    f = tmp_path / "bricks.txt"
    f.write_text(text)
    with pytest.raises(BrickSelectionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        select_bricks({"bricks": str(f), "root": "x"})


def test_missing_list_file_is_named(tmp_path):
    with pytest.raises(BrickSelectionError, match="brick list file not found: .*nope.txt"):
        select_bricks({"bricks": str(tmp_path / "nope.txt"), "root": "x"})


def test_radec_box_over_survey_bricks(mock_dr9):
    root, _ = mock_dr9
    names = select_bricks({"bricks": {"ra": [120.9, 121.3], "dec": [5.9, 6.1]}, "root": str(root / "release")})
    assert names == ["1210p060", "1212p060"]
    grid = brick_grid()
    wrapped = bricks_in_box(grid, [359.5, 0.5], [-0.2, 0.2])
    assert {b[:4] for b in wrapped} == {"3596", "3598", "0001", "0003"}
    with pytest.raises(BrickSelectionError, match="brick table is not there: .*survey-bricks.fits.gz"):
        select_bricks({"bricks": {"ra": [0, 1], "dec": [0, 1]}, "root": "/nonexistent"})


def test_batches_are_bounded_stable_and_never_span_two_ra_degrees():
    bricks = [f"{ra:04d}p{dec:03d}" for ra in range(1200, 1240, 2) for dec in (60, 62, 65)]
    batches = batch_bricks(bricks, 7)
    assert sorted(b for v in batches.values() for b in v) == sorted(bricks)
    assert all(len(v) <= 7 and len({b[:3] for b in v}) == 1 for v in batches.values())
    # adding a brick in RA degree 121 leaves the other columns' batches as they were
    more = batch_bricks(bricks + ["1215p070"], 7)
    assert {k: v for k, v in more.items() if not k.startswith("121")} == {
        k: v for k, v in batches.items() if not k.startswith("121")}


@pytest.fixture
def damaged_release(mock_dr9, tmp_path):
    """A copy of the two-brick release with one brick per kind of damage (copies of brick 1210p060)."""
    src, cfg = mock_dr9
    root = tmp_path / "synthetic"
    shutil.copytree(src, root)
    good = "1210p060"
    damages = {"1211p060": "truncated", "1213p060": "missing_band", "1214p060": "nan_invvar",
               "1216p060": "missing_column", "1217p060": "empty_catalogue", "1219p060": "wrong_hdu"}
    for brick in damages:
        clone_brick(root, good, brick, cfg.rs)
    rel, inj = root / "release", root / "injection"
    z = layout.coadd_file(rel, "1211p060", "image", "z")
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 3])
    layout.coadd_file(rel, "1213p060", "invvar", "r").unlink()
    path = layout.coadd_file(inj, "1214p060", "invvar", "g", "rs0")
    with fitsio.FITS(str(path)) as f:
        data, hdr = f[1].read(), f[1].read_header()
    data[:] = np.nan
    path.unlink()
    fitsio.write(str(path), data, header=hdr, compress="RICE")
    t = fitsio.read(str(layout.tractor_file(rel, "1216p060")))
    names = [n for n in t.dtype.names if n != "flux_r"]
    _rewrite(layout.tractor_file(rel, "1216p060"), t[names])
    for rs in cfg.rs:
        s = fitsio.read(str(layout.simcat_file(inj, "1217p060", rs)))
        _rewrite(layout.simcat_file(inj, "1217p060", rs), s[:0])
    t = fitsio.read(str(layout.tractor_file(rel, "1217p060")))
    _rewrite(layout.tractor_file(rel, "1217p060"), t[:0])
    g = layout.coadd_file(rel, "1219p060", "image", "g")
    g.unlink()
    fitsio.write(str(g), np.zeros(3, dtype=[("a", "f4")]))  # HDU 1 is a table, not the image
    return root, cfg, damages


def _rewrite(path, table):
    path.unlink()
    fitsio.write(str(path), table)


def _settings(root, cfg, selection, **kw):
    return CutoutSettings(release_root=str(root / "release"), injection_root=str(root / "injection"),
                          rs=list(cfg.rs), selection=selection, **kw)


def test_bad_bricks_are_skipped_with_a_reason_naming_the_file(damaged_release, selection, tmp_path):
    root, cfg, damages = damaged_release
    bricks = ["1210p060", "1218p060", *damages]  # 1218p060 does not exist at all
    out = tmp_path / "batch"
    cuts, failures = run_batch(bricks, out, _settings(root, cfg, selection), workers=2)
    why = dict(zip(failures["brick"], failures["reason"]))
    status = dict(zip(failures["brick"], failures["status"]))
    assert status == {"1218p060": "missing", "1211p060": "failed", "1213p060": "failed", "1216p060": "failed",
                      "1219p060": "failed"}
    assert "no coadd directory" in why["1218p060"] and "no Tractor catalogue" in why["1218p060"]
    assert "legacysurvey-1211p060-image-z.fits.fz" in why["1211p060"]
    assert "missing invvar for band r" in why["1213p060"] and "legacysurvey-1213p060-invvar-r" in why["1213p060"]
    assert "tractor-1216p060.fits" in why["1216p060"] and "flux_r" in why["1216p060"]
    assert "legacysurvey-1219p060-image-g.fits.fz" in why["1219p060"] and "HDU 1" in why["1219p060"]
    # nothing half-written: a file for every brick cut, none for the others, no temporaries
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["cuts.csv", "failures.csv", "1210p060.h5", "1214p060.h5", "1217p060.h5"])
    # NaN inverse variances are no data: every fake of that brick lies on them and is dropped, counted
    nan = cuts[(cuts["brick"] == "1214p060") & (cuts["rs"] == "rs0")]
    # every fake accounted for: removed by a cut on its measured values, off the edge, or without data
    assert nan["kept"].sum() == 0 and nan["cut_nodata"].sum() > 0
    assert (nan.filter(like="cut_").sum(axis=1) + nan["offedge"] == nan["n_in"]).all()
    # an empty catalogue is an empty brick, not a failure
    empty = cuts[cuts["brick"] == "1217p060"]
    assert empty["n_in"].sum() == 0 and len(read_sources(out / "1217p060.h5")) == 0
    # the good brick is cut exactly as on its own
    good = cuts[cuts["brick"] == "1210p060"]
    alone, _ = run_batch(["1210p060"], tmp_path / "alone", _settings(root, cfg, selection))
    pd.testing.assert_frame_equal(good.reset_index(drop=True), alone.reset_index(drop=True))
    # the summary counts every brick and names the bad ones
    _, f2, flow = summarise([out])
    text = format_summary(flow, f2, len(bricks))
    assert "bricks selected: 8; cut: 3; missing: 1; failed: 4" in text and "1219p060" in text


@pytest.mark.parametrize("brick, key", [("1218p060", "on_missing"), ("1211p060", "on_error")])
def test_policy_fail_stops_the_job_naming_brick_and_key(damaged_release, selection, tmp_path, brick, key):
    root, cfg, _ = damaged_release
    s = _settings(root, cfg, selection, **{key: "fail"})
    with pytest.raises(BrickError, match=f"brick {brick} .*cutouts.{key} is 'fail'"):
        run_batch(["1210p060", brick], tmp_path / "batch", s)
    assert not (tmp_path / "batch" / "failures.csv").exists()


def test_rebuilding_one_brick_replaces_its_rows_only(mock_dr9, selection, tmp_path):
    root, cfg = mock_dr9
    s = _settings(root, cfg, selection)
    out = tmp_path / "batch"
    run_batch(list(cfg.bricks), out, s)
    cuts = pd.read_csv(out / "cuts.csv").sort_values(["brick", "rs"]).reset_index(drop=True)
    before = (out / "1212p060.h5").stat().st_mtime_ns
    rec = rebuild_brick("1210p060", out, s)
    assert rec["status"] == "ok" and (out / "1212p060.h5").stat().st_mtime_ns == before
    again = pd.read_csv(out / "cuts.csv").sort_values(["brick", "rs"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(again, cuts)


def test_without_the_c_kernels_a_job_says_so_and_writes_the_same_files(mock_dr9, selection, tmp_path, monkeypatch,
                                                                       caplog):
    from realfake.cutouts import stamps

    pytest.importorskip("realfake.cutouts._stamps")
    root, cfg = mock_dr9
    s = _settings(root, cfg, selection)
    run_batch(list(cfg.bricks), tmp_path / "c", s)
    monkeypatch.setattr(stamps, "_stamps", None)
    with caplog.at_level("WARNING", logger="realfake.cutouts.batches"):
        run_batch(list(cfg.bricks), tmp_path / "numpy", s)
    assert "realfake.cutouts._stamps (C) was not built" in caplog.text
    for brick in cfg.bricks:
        assert_same_brick_file(tmp_path / "c" / f"{brick}.h5", tmp_path / "numpy" / f"{brick}.h5")


def test_shards_do_not_depend_on_the_batching(mock_dr9, selection, tmp_path):
    root, cfg = mock_dr9
    s = _settings(root, cfg, selection)
    outputs = []
    for size in (1, 2):
        dirs = []
        for name, bricks in batch_bricks(cfg.bricks, size).items():
            run_batch(bricks, tmp_path / f"b{size}" / name, s)
            dirs.append(tmp_path / f"b{size}" / name)
        out = tmp_path / f"shards{size}"
        build(brick_files(dirs), out, s.channels, split_by="example", size=16, test_fraction=0.25, seed=3,
              balance="brick")
        outputs.append({p.name: p.read_bytes() for p in out.glob("*.npy")})
    assert len(outputs[0]) > 2 and outputs[0] == outputs[1]


def test_dr5_release_through_a_batch(mock_dr5, selection, tmp_path):
    root, cfg = mock_dr5
    cuts, failures = run_batch(list(cfg.bricks), tmp_path / "b", _settings(root, cfg, selection))
    real = cuts[cuts["label"] == 0]
    assert len(failures) == 0 and (real["kept"] + real["offedge"] + real["cut_nodata"]).sum() > 0
    src = read_sources(tmp_path / "b" / f"{cfg.bricks[0]}.h5")
    assert set(src["type"]) <= set(selection["types"]) | {"SIM"} and (src["label"] == 1).any()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_a_cutout_job_reuses_the_memory_of_freed_planes():
    """After keep_freed_memory, the next coadd's 52 MB plane lands in the freed one's pages: no page faults."""
    code = """
import resource, sys, numpy as np
from realfake.cutouts.batches import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
np.ones(3600 * 3600, np.float32)  # a plane, freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(3600 * 3600, np.float32)  # the next coadd's
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {m: int(subprocess.run([sys.executable, "-c", code, m], capture_output=True, text=True,
                                    check=True).stdout) for m in ("keep", "default")}
    assert faults["keep"] * 10 < faults["default"], faults


def _resident_pages(path) -> tuple[int, int]:
    """(pages of ``path`` in the page cache, pages in all), by mincore(2) on a read-only map of it."""
    import ctypes
    import mmap

    size = path.stat().st_size
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as m:
        vec = ctypes.create_string_buffer(-(-size // mmap.PAGESIZE))
        assert libc.mincore(np.frombuffer(m, np.uint8).ctypes.data, size, vec) == 0, ctypes.get_errno()
        return sum(b & 1 for b in vec.raw), len(vec.raw)


@pytest.mark.skipif(platform.system() != "Linux", reason="mincore and posix_fadvise as Linux has them")
def test_a_cutout_job_leaves_its_brick_files_on_disk_not_in_memory(mock_dr9, selection, tmp_path):
    """Settled: each brick's file flushed to disk and dropped from the page cache (a job writes tens of GB)."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"x" * 2**20)
    settle(probe)
    if _resident_pages(probe)[0]:
        pytest.skip(f"the file system of {tmp_path} keeps written pages in memory (tmpfs?)")
    root, cfg = mock_dr9
    run_batch(list(cfg.bricks), tmp_path / "b", _settings(root, cfg, selection))
    for brick in cfg.bricks:
        resident, pages = _resident_pages(tmp_path / "b" / f"{brick}.h5")
        assert pages > 10 and resident == 0, (brick, resident, pages)


def test_settling_names_the_file_it_cannot_flush(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.h5"):
        settle(tmp_path / "gone.h5")
    with Settler() as settler:
        settler.add(tmp_path / "gone.h5")
        with pytest.raises(FileNotFoundError, match="gone.h5"):
            settler.add(tmp_path / "other.h5")  # waits for the previous one and raises its error


def test_bricks_of_one_class_are_listed_in_the_cut_flow():
    import pandas as pd

    from realfake.cutouts.batches import one_class_bricks

    cuts = pd.DataFrame({"brick": ["a", "a", "a", "b", "b", "c"], "rs": ["", "rs0", "rs1", "", "rs0", ""],
                         "label": [0, 1, 1, 0, 1, 0], "kept": [5, 0, 0, 3, 2, 4]})
    lone = one_class_bricks(cuts)
    assert lone.to_dict("records") == [{"brick": "a", "real": 5, "fake": 0}, {"brick": "c", "real": 4, "fake": 0}]
    flow = cuts.groupby(["label", "rs"])[["kept"]].sum().reset_index()
    flow.insert(0, "class", flow["label"].map({0: "real", 1: "fake"}))
    text = format_summary(flow, pd.DataFrame(columns=["brick", "status", "reason"]), 3, cuts)
    assert "bricks with cutouts of one class only" in text and "a     5     0" in text
