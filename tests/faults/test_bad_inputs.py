"""Bad inputs through `snakemake`, as a user meets them: each gives a clear error naming the file, brick, column or
config key, or a skip recorded in results/cutouts/failures.csv (cutouts.on_missing / on_error, default skip); never
a bare Python traceback on the terminal, and the good bricks' cutouts are never lost."""

from __future__ import annotations

import shutil

import fitsio
import numpy as np
import pandas as pd
import pytest
import yaml

from faults.harness import TRACEBACK, Check, same, snakemake, write_config

pytestmark = pytest.mark.faults

GOOD = ["1210p060", "1212p060"]
# brick (a copy of 1210p060, then damaged) -> (damage, expected status, words its reason must hold)
DAMAGES = {
    "1211p060": ("truncated .fits.fz", "failed", ["legacysurvey-1211p060-image-z.fits.fz", "truncated"]),
    "1213p060": ("corrupt .fits.fz header", "failed", ["legacysurvey-1213p060-invvar-g.fits.fz"]),
    "1214p060": ("garbage in the compressed pixels", None, ["legacysurvey-1214p060-image-r.fits.fz"]),
    "1216p060": ("wrong HDU (a table)", "failed", ["legacysurvey-1216p060-image-g.fits.fz", "HDU 1"]),
    "1217p060": ("missing band", "failed", ["missing invvar for band r", "legacysurvey-1217p060-invvar-r.fits.fz"]),
    "1218p060": ("Tractor catalogue lacks a column", "failed", ["tractor-1218p060.fits", "flux_r"]),
    "1219p060": ("simulation catalogue lacks a column", "failed", ["simcat-elg-1219p060.fits", "rhalf"]),
    "1215p062": ("NaN and infinite pixels", "ok", []),
    "1216p062": ("empty catalogues", "ok", []),
    "1217p062": ("hostile FITS header (code in CTYPE1)", "failed", ["legacysurvey-1217p062-image-g.fits.fz"]),
    "1219p062": ("unknown brick (not in the release)", "missing", ["no coadd directory", "no Tractor catalogue"]),
}


def _rewrite_table(path, table):
    path.unlink()
    fitsio.write(str(path), table)


def _rewrite_image(path, edit):
    with fitsio.FITS(str(path)) as f:
        data, hdr = f[1].read(), f[1].read_header()
    data, hdr = edit(data, hdr)
    path.unlink()
    fitsio.write(str(path), data, header=hdr, compress="RICE")


def damage(root, canary):
    """Copies of brick 1210p060, one per kind of damage, in a release laid out as a real one."""
    from realfake.inputs import layout
    from realfake.testing import clone_brick

    rel, inj = root / "release", root / "injection"
    for brick in DAMAGES:
        if brick != "1219p062":
            clone_brick(root, "1210p060", brick, ["rs0"])
    z = layout.coadd_file(rel, "1211p060", "image", "z")
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 3])
    g = layout.coadd_file(rel, "1213p060", "invvar", "g")
    raw = bytearray(g.read_bytes())
    raw[2880:2880 + 400] = b"\x00\xff junk " * 40  # the image HDU's header
    g.write_bytes(bytes(raw))
    r = layout.coadd_file(rel, "1214p060", "image", "r")
    raw = bytearray(r.read_bytes())
    rng = np.random.default_rng(1)
    start = len(raw) // 2
    raw[start:start + 4096] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    r.write_bytes(bytes(raw))
    g = layout.coadd_file(rel, "1216p060", "image", "g")
    g.unlink()
    fitsio.write(str(g), np.zeros(3, dtype=[("a", "f4")]))
    layout.coadd_file(rel, "1217p060", "invvar", "r").unlink()
    t = fitsio.read(str(layout.tractor_file(rel, "1218p060")))
    _rewrite_table(layout.tractor_file(rel, "1218p060"), t[[n for n in t.dtype.names if n != "flux_r"]])
    s = fitsio.read(str(layout.simcat_file(inj, "1219p060", "rs0")))
    _rewrite_table(layout.simcat_file(inj, "1219p060", "rs0"), s[[n for n in s.dtype.names if n != "rhalf"]])

    def nan_invvar(data, hdr):
        data[:] = np.nan
        return data, hdr

    def inf_block(data, hdr):
        data[100:200, 100:200] = np.inf
        return data, hdr

    _rewrite_image(layout.coadd_file(inj, "1215p062", "invvar", "g", "rs0"), nan_invvar)
    _rewrite_image(layout.coadd_file(rel, "1215p062", "image", "r"), inf_block)
    _rewrite_table(layout.tractor_file(rel, "1216p062"), fitsio.read(str(layout.tractor_file(rel, "1216p062")))[:0])
    _rewrite_table(layout.simcat_file(inj, "1216p062", "rs0"),
                   fitsio.read(str(layout.simcat_file(inj, "1216p062", "rs0")))[:0])

    def hostile(data, hdr):
        hdr["CTYPE1"] = f"__import__('os').system('touch {canary}')"
        hdr["CRVAL1"] = "$(touch " + str(canary) + ")"
        return data, hdr

    _rewrite_image(layout.coadd_file(rel, "1217p062", "image", "g"), hostile)


def release_config(reference_run, **cutouts) -> dict:
    cfg = yaml.safe_load((reference_run / "config" / "config.yaml").read_text())
    cfg["release"].update(root="data/release", injection_root="data/injection")
    cfg["cutouts"].update(cutouts)
    return cfg


@pytest.fixture(scope="module")
def damaged(reference, tmp_path_factory):
    """One `snakemake cutouts` over the two good bricks and every damaged one (default policy: skip)."""
    run = tmp_path_factory.mktemp("damaged")
    shutil.copytree(reference.run / "resources" / "synthetic", run / "data")
    damage(run / "data", run / "CANARY")
    cfg = release_config(reference.run, batch_size=100)
    cfg["release"]["bricks"] = "bricks.txt"
    (run / "bricks.txt").write_text("# good bricks, then damaged copies\n" + "\n".join(GOOD + list(DAMAGES)) + "\n")
    write_config(run, cfg)
    res = snakemake(run, "cutouts", "--cores", "2")
    failures = pd.read_csv(run / "results" / "cutouts" / "failures.csv", dtype=str) if res.rc == 0 else None
    return run, res, failures


def test_damaged_release_completes_without_traceback_and_keeps_the_good_bricks(reference, damaged, record):
    run, res, failures = damaged
    assert res.rc == 0, res.explain()
    assert TRACEBACK not in res.out, res.explain()
    assert not (run / "CANARY").exists(), "a FITS header's content was executed"
    # nothing lost: the good bricks' cutouts are those of the uninterrupted run, dataset by dataset
    c = Check()
    for b in GOOD:
        ours, theirs = run / "results" / "cutouts" / "121-0" / f"{b}.h5", next((reference.run / "results").glob(f"cutouts/*/{b}.h5"))
        c.checked += 1
        if not ours.exists():
            c.lost.append(str(ours.relative_to(run)))
        elif same(theirs, ours):
            c.corrupted.append(f"{ours.relative_to(run)}: {same(theirs, ours)}")
    record(c)
    assert not c.lost and not c.corrupted
    summary = (run / "results" / "cutouts" / "summary.txt").read_text()
    assert f"bricks selected: {len(GOOD) + len(DAMAGES)};" in summary, summary


@pytest.mark.parametrize("brick", list(DAMAGES), ids=[v[0].replace(" ", "_") for v in DAMAGES.values()])
def test_damaged_brick(damaged, record, brick):
    run, res, failures = damaged
    what, status, words = DAMAGES[brick]
    assert res.rc == 0, res.explain()
    rows = failures[failures["brick"] == brick]
    h5 = run / "results" / "cutouts" / "121-0" / f"{brick}.h5"
    got = rows["status"].iloc[0] if len(rows) else "ok"
    reason = rows["reason"].iloc[0] if len(rows) else ""
    record(note=f"{got}: {reason[:110]}" if reason else got)
    if status is None:  # random bytes in compressed tiles: either refused naming the file, or decoded into pixels
        status = got
        if got == "ok":
            words = []
    assert got == status, f"{brick} ({what}): {got} {reason}"
    for w in words:
        assert w in reason, f"{brick} ({what}): reason {reason!r} lacks {w!r}"
    if status in ("failed", "missing"):
        assert not h5.exists(), "a skipped brick left a file"
        assert brick in (run / "results" / "cutouts" / "summary.txt").read_text()
        return
    import h5py

    with h5py.File(h5, "r") as f:
        x, n = f["cutouts"][()], len(f["labels"])
    assert np.isfinite(x).all(), "non-finite pixels reached the cutouts"
    cuts = pd.read_csv(run / "results" / "cutouts" / "121-0" / "cuts.csv", dtype={"brick": str, "rs": str})
    mine = cuts[cuts["brick"] == brick]
    if brick == "1215p062":  # every fake lies where g has no data: dropped, and counted
        fake = mine[mine["label"] == 1]
        assert fake["kept"].sum() == 0 and fake["cut_nodata"].sum() > 0
        # every fake accounted for: cut on its measured values, off the edge, or without data
        assert (fake.filter(like="cut_").sum(axis=1) + fake["offedge"] == fake["n_in"]).all()
        record(note=f"{int(mine['cut_nodata'].sum())} cutouts dropped for no data, counted in cuts.csv")
    if brick == "1216p062":
        assert n == 0 and mine["n_in"].sum() == 0


def _run_cfg(reference, tmp_path, cfg, *args):
    run = tmp_path / "run"
    shutil.copytree(reference.run / "resources" / "synthetic", run / "data")
    write_config(run, cfg)
    return run, snakemake(run, *args)


@pytest.mark.parametrize("policy, brick, expected", [
    ("on_error", "1211p060", ["brick 1211p060 failed", "legacysurvey-1211p060-image-z.fits.fz",
                              "cutouts.on_error is 'fail'"]),
    ("on_missing", "1219p062", ["brick 1219p062 missing", "no coadd directory", "cutouts.on_missing is 'fail'"]),
])
def test_policy_fail_stops_the_job_naming_brick_file_and_key(reference, record, tmp_path, policy, brick, expected):
    run = tmp_path / "run"
    shutil.copytree(reference.run / "resources" / "synthetic", run / "data")
    if brick != "1219p062":
        damage_one_truncated(run / "data", brick)
    cfg = release_config(reference.run, batch_size=100, **{policy: "fail"})
    cfg["release"]["bricks"] = ["1210p060", brick]
    write_config(run, cfg)
    res = snakemake(run, "cutouts", "--cores", "2")
    assert res.rc != 0, res.explain()
    assert TRACEBACK not in res.out, res.explain()
    for w in expected:
        assert w in res.out, f"terminal lacks {w!r}:\n{res.explain()}"
    assert "logs/cutouts/121-0.log" in res.out
    assert not (run / "results" / "cutouts" / "121-0").exists(), "a failed batch left its directory"
    record(note=next(ln.strip() for ln in res.out.splitlines() if "BrickError" in ln)[:150])


def damage_one_truncated(root, brick):
    from realfake.inputs import layout
    from realfake.testing import clone_brick

    clone_brick(root, "1210p060", brick, ["rs0"])
    z = layout.coadd_file(root / "release", brick, "image", "z")
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 3])


def test_only_empty_bricks_stop_the_shards_with_a_clear_error(reference, record, tmp_path):
    from realfake.inputs import layout
    from realfake.testing import clone_brick

    run = tmp_path / "run"
    shutil.copytree(reference.run / "resources" / "synthetic", run / "data")
    root = run / "data"
    clone_brick(root, "1210p060", "1216p062", ["rs0"])
    _rewrite_table(layout.tractor_file(root / "release", "1216p062"),
                   fitsio.read(str(layout.tractor_file(root / "release", "1216p062")))[:0])
    s = layout.simcat_file(root / "injection", "1216p062", "rs0")
    _rewrite_table(s, fitsio.read(str(s))[:0])
    cfg = release_config(reference.run)
    cfg["release"]["bricks"] = ["1216p062"]
    write_config(run, cfg)
    res = snakemake(run, "shards", "--cores", "2")
    assert res.rc != 0 and TRACEBACK not in res.out, res.explain()
    assert "no cutouts in any of the 1 brick files: nothing to shard" in res.out, res.explain()
    assert "logs/shards/plan.log" in res.out
    assert not (run / "results" / "shards").exists()
    record(note="plan_shards: no cutouts in any of the 1 brick files: nothing to shard")


# --------------------------------------------------------------------------- refused when the run is planned


def _edit(cfg, dotted, value):
    *keys, last = dotted.split(".")
    d = cfg
    for k in keys:
        d = d[k]
    if value is DELETE:
        del d[last]
    else:
        d[last] = value


DELETE = object()
PARSE_CASES = {
    # case: (config edits, files to write, words the terminal must show)
    "duplicate brick in a list file": ({"release.bricks": "bricks.txt"}, {"bricks.txt": "1210p060\n1212p060\n1210p060\n"},
                                       ["bricks.txt:3: brick 1210p060 listed twice (first on line 1)"]),
    "bad brick name in a list file": ({"release.bricks": "bricks.txt"}, {"bricks.txt": "1210p060\n121p060\n"},
                                      ["bricks.txt:2: not a brick name: '121p060'"]),
    "brick list file not there": ({"release.bricks": "nope.txt"}, {}, ["brick list file not found: nope.txt"]),
    "duplicate brick in the config list": ({"release.bricks": ["1210p060", "1210p060"]}, {},
                                           ["config key release.bricks:", "non-unique"]),
    "bad brick name in the config list": ({"release.bricks": ["1210p060", "121p060"]}, {},
                                          ["config key release.bricks.1:", "'121p060' does not match"]),
    "RA/Dec box holding no brick": ({"release.bricks": {"ra": [10, 10.5], "dec": [50.01, 50.02]}}, {},
                                    ["release.bricks: no brick of", "is centred in the box"]),
    "release root not there": ({"release.root": "no/such/release"}, {},
                               ["config key release.root: not a directory: 'no/such/release'"]),
    "wrong type": ({"shards.size": "sixteen"}, {}, ["config key shards.size: 'sixteen' is not of type 'integer'"]),
    "out of range": ({"shards.test_fraction": 1.5}, {},
                     ["config key shards.test_fraction: 1.5 is greater than or equal to the maximum of 1"]),
    "unknown key (typo)": ({"train.epoch": 3}, {}, ["config key train:", "'epoch' was unexpected"]),
    "missing key": ({"train.learning_rate": DELETE}, {}, ["config key train: 'learning_rate' is a required property"]),
    "bad policy value": ({"cutouts.on_error": "ignore"}, {},
                         ["config key cutouts.on_error: 'ignore' is not one of ['skip', 'fail']"]),
}


@pytest.mark.parametrize("case", list(PARSE_CASES), ids=[c.replace(" ", "_") for c in PARSE_CASES])
def test_refused_at_parse_time(reference, record, tmp_path, case):
    edits, files, words = PARSE_CASES[case]
    cfg = release_config(reference.run)
    for key, value in edits.items():
        _edit(cfg, key, value)
    run = tmp_path / "run"
    write_config(run, cfg)
    (run / "data" / "release").mkdir(parents=True)
    (run / "data" / "injection").mkdir(parents=True)
    (run / "data" / "release" / "survey-bricks.fits.gz").symlink_to(
        reference.run / "resources" / "synthetic" / "release" / "survey-bricks.fits.gz")
    for name, text in files.items():
        (run / name).write_text(text)
    res = snakemake(run, "-n", "--cores", "2")
    assert res.rc != 0, res.explain()
    assert TRACEBACK not in res.out, res.explain()
    for w in words:
        assert w in res.out, f"terminal lacks {w!r}:\n{res.explain()}"
    record(note=" ... ".join(words))
