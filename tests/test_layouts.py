"""Real releases as they lie on disk: DR9's regions, every obiwan layout, fakes measured like reals, refusals.

Each case renders a small synthetic release in the layout under test (real-format files: tile-compressed
coadds, Tractor and obiwan FITS tables) and checks that the cut flow counts what was put there.
"""

from __future__ import annotations

import json

import fitsio
import h5py
import numpy as np
import pandas as pd
import pytest

from realfake.inputs import layout
from realfake.cutouts.batches import CutoutSettings, run_batch
from realfake.inputs.bricks import brick_grid, select_bricks
from realfake.inputs.catalogs import CatalogError, read_tractor
from realfake.config import ConfigError, check_release_roots
from realfake.inputs.injection import LAYOUTS, choose_seeds, detect_layout, match_detections, plan_brick, read_fakes
from realfake.synthetic.release import MockConfig, make_release
from realfake.inputs.selection import select_real

SELECTION = dict(brick_primary=False, min_nobs=0, types=["REX", "EXP", "SER", "SIMP", "COMP", "DEV", "PSF"],
                 maskbits=0, colour_pad=5.0, size_min=0.0, size_max=50.0, mag_faint={"g": 30, "r": 30, "z": 30},
                 mag_bright={"g": 10, "r": 10, "z": 10}, fakes="measured", match_radius=1.0)
SMALL = dict(image_size=160, galaxy_density=30.0, star_density=2.0, fake_density=30.0, min_fake_separation=2.0)


def _grid_names(dec: float, n: int, ra0: float = 180.0) -> list[str]:
    grid = brick_grid()
    row = grid[(grid["DEC"] == dec) & (grid["RA"] >= ra0)][:n]
    return [b.decode().strip() for b in row["BRICKNAME"]]


def _cut(tmp_path, bricks, release_root, injection_root, **kw):
    kw.setdefault("neighbour_radius", 0.0)  # SMALL's fakes are 2" apart: the neighbour rule (tested apart) would drop them
    settings = CutoutSettings(release_root=str(release_root), injection_root=str(injection_root),
                              rs=kw.pop("rs", "all"), selection={**SELECTION, **kw.pop("selection", {})}, **kw)
    return run_batch(bricks, tmp_path / "out", settings)


def _sources(tmp_path, brick) -> tuple[pd.DataFrame, dict]:
    from realfake.cutouts.brickfile import read_sources

    path = tmp_path / "out" / f"{brick}.h5"
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
    return read_sources(path), attrs


@pytest.fixture(scope="module")
def dr9(tmp_path_factory):
    """A DR9-like release with both regions: the south's bricks at Dec 32.25, the north's at 32.5, one brick in
    both at each of these Decs, and the injection runs per region."""
    south, north = _grid_names(32.25, 2), _grid_names(32.5, 2)
    cfg = MockConfig(bricks=tuple(south + north), regions={"south": (*south, north[0]), "north": (south[1], *north)},
                     **SMALL)
    root = tmp_path_factory.mktemp("dr9")
    make_release(cfg, root)
    return root, south, north


def test_regions_box_overlap_and_region_recorded(dr9, tmp_path):
    root, south, north = dr9
    rel = root / "release"
    assert set(layout.regions_of(rel)) == {"north", "south"}
    # a box over the release: the bricks with data in the chosen regions (their own brick tables), not the sky's
    box = {"ra": [179.0, 182.0], "dec": [32.0, 33.0]}
    assert select_bricks({"root": str(rel), "bricks": box}) == sorted(south + north)
    assert select_bricks({"root": str(rel), "bricks": box, "region": "north"}) == sorted([south[1], *north])
    # one region folder as the root: its own table
    assert select_bricks({"root": str(rel / "south"), "bricks": box}) == sorted([*south, north[0]])
    # a brick in both regions is taken once, by release.region_overlap
    regions = layout.chosen_regions(rel)
    assert layout.resolve_region(south[1], regions, "dec") == ("south", ["north", "south"])
    assert layout.resolve_region(north[0], regions, "dec") == ("north", ["north", "south"])
    assert layout.resolve_region(north[0], regions, "south")[0] == "south"

    cuts, failures = _cut(tmp_path, south + north, rel, root / "injection")
    assert failures.empty, failures
    made = json.loads((root / "synthetic.json").read_text())["bricks"]
    for brick, region in [(south[0], "south"), (south[1], "south"), (north[0], "north"), (north[1], "north")]:
        src, attrs = _sources(tmp_path, brick)
        assert attrs["region"] == region and set(src["region"]) == {region}
        n_tractor = len(fitsio.read(str(layout.tractor_file(rel / region, brick)), columns=["objid"]))
        row = cuts[(cuts["brick"] == brick) & (cuts["label"] == 0)].iloc[0]
        assert row["n_in"] == n_tractor and row["region"] == region
        fakes = cuts[(cuts["brick"] == brick) & (cuts["label"] == 1)]
        expected = next(c["fakes"] for c in made if c["brick"] == brick and c["region"] == region)
        assert fakes["n_in"].sum() - fakes["cut_not_injected"].sum() == expected
        # every injected fake is found in the rerun catalogue, which measures it as the release measures reals
        assert fakes["cut_not_detected"].sum() == 0 and fakes["runs_measured"].sum() == 1
    # the brick in both regions, cut from the other one when the rule says so
    cuts, _ = _cut(tmp_path, [north[0]], rel, root / "injection", region_overlap="south")
    assert _sources(tmp_path, north[0])[1]["region"] == "south"
    # release.region: north leaves the south's bricks missing, saying where it looked
    _, failures = _cut(tmp_path, [south[0]], rel, root / "injection", region="north")
    assert failures["status"].tolist() == ["missing"] and "north" in failures["reason"].iloc[0]


@pytest.mark.parametrize("lay,seeds", [("obiwan2018", {"a": ("rs0", "rs500", "more_rs0"), "b": ("rs0",)}),
                                       ("obiwan2017", {"a": ("rs0", "rs1"), "b": ("rs0",)}),
                                       ("obiwan2021", {"a": ("file0_rs0_skip0", "file0_rs500_skip0"),
                                                       "b": ("file0_rs0_skip0",)})])
def test_every_obiwan_layout_detected_and_counted(tmp_path, lay, seeds):
    a, b = _grid_names(6.0, 2, ra0=121.0)
    cfg = MockConfig(bricks=(a, b), injection_layout=lay, rs=seeds["b"], brick_rs={a: seeds["a"]},
                     **{**SMALL, "min_fake_separation": 10.0})  # (so that some collide)
    make_release(cfg, tmp_path / "syn")
    inj = tmp_path / "syn" / "injection"
    assert detect_layout(inj, a).name == lay and detect_layout(inj, b).name == lay
    assert LAYOUTS[lay].seed_folders(inj, a) == sorted(seeds["a"], key=lambda s: list(seeds["a"]).index(s))
    with pytest.raises(ValueError, match="release.injection_layout is obiwan"):
        detect_layout(inj, a, "obiwan2021" if lay != "obiwan2021" else "obiwan2018")

    cuts, failures = _cut(tmp_path, [a, b], tmp_path / "syn" / "release", inj)
    assert failures.empty, failures
    made = {c["brick"]: c for c in json.loads((tmp_path / "syn" / "synthetic.json").read_text())["bricks"]}
    for brick in (a, b):
        src, attrs = _sources(tmp_path, brick)
        assert attrs["injection_layout"] == lay
        fakes = cuts[(cuts["brick"] == brick) & (cuts["label"] == 1)].fillna(0)
        runs = fakes[fakes["runs_absent"] == 0]
        # obiwan's 2017 runs kept only their first seed's coadds: the others are recorded absent, the reals stay
        absent = seeds[("a" if brick == a else "b")][1:] if lay == "obiwan2017" else ()
        assert sorted(fakes.loc[fakes["runs_absent"] == 1, "rs"]) == sorted(absent)
        assert (src["label"] == 0).sum() > 0
        if lay == "obiwan2017":
            assert len(runs) == 1
        else:
            assert runs["n_in"].sum() - runs["cut_not_injected"].sum() == made[brick]["fakes"]
        # 2017 and 2021 catalogues carry no extinction: derived from the release, and said so
        assert runs["runs_mw_derived"].sum() == (0 if lay == "obiwan2018" else len(runs))
        assert runs["cut_not_detected"].sum() == 0
        fake = src[src["label"] == 1]
        assert len(fake) and set(fake["rs"]) <= set(runs["rs"])
    if lay != "obiwan2018":  # a seed folder name of another layout is refused, naming the layout's
        with pytest.raises(ValueError, match=f"not seed folders of the {lay} layout"):
            plan_brick(a, tmp_path / "syn" / "release", inj, rs=["more_rs0"])
    if lay == "obiwan2021":  # collided randoms are listed but were not injected
        run = plan_brick(a, tmp_path / "syn" / "release", inj).runs[0]
        table = fitsio.read(str(run.simcat))
        assert read_fakes(run, read_tractor(tmp_path / "syn" / "release", a)).attrs["n_not_injected"] == \
            int(table["collided"].sum()) > 0


def test_seed_folders_chosen_by_name_or_pattern_and_absent_ones_recorded(tmp_path):
    found = ["rs0", "rs500", "rs1000", "skip_rs0", "more_rs0", "more_skip_rs0"]
    assert choose_seeds(sorted(found), "all")[0] == sorted(found)
    assert choose_seeds(found, ["rs*"]) == (["rs0", "rs500", "rs1000"], [])
    assert choose_seeds(found, ["more_*", "rs0", "rs9"]) == (["rs0", "more_rs0", "more_skip_rs0"], ["rs9"])
    # a listed seed folder a brick lacks: recorded, its real galaxies cut all the same
    (a,) = _grid_names(6.0, 1, ra0=121.0)
    make_release(MockConfig(bricks=(a,), rs=("rs0",), **SMALL), tmp_path / "syn")
    cuts, failures = _cut(tmp_path, [a], tmp_path / "syn" / "release", tmp_path / "syn" / "injection",
                          rs=["rs0", "rs500"])
    assert failures.empty
    absent = cuts[cuts["runs_absent"] == 1]
    assert absent["rs"].tolist() == ["rs500"] and absent["kept"].tolist() == [0]
    assert cuts.loc[cuts["label"] == 0, "kept"].iloc[0] > 0
    assert json.loads(_sources(tmp_path, a)[1]["absent_runs"])[0][0] == "rs500"


def test_fakes_measured_like_reals_and_true_values_where_no_rerun(tmp_path, caplog):
    (a,) = _grid_names(6.0, 1, ra0=121.0)
    make_release(MockConfig(bricks=(a,), **SMALL), tmp_path / "syn")
    rel, inj = tmp_path / "syn" / "release", tmp_path / "syn" / "injection"
    # a faint limit that noise moves sources across: the fakes' measured magnitudes decide, as the reals' do
    sel = {"mag_faint": {"g": 23.0, "r": 30, "z": 30}}
    cuts, _ = _cut(tmp_path, [a], rel, inj, selection=sel)
    run = plan_brick(a, rel, inj).runs[0]
    fakes = read_fakes(run, read_tractor(rel, a))
    rerun = read_tractor(None, a, path=run.rerun_tractor)
    src, _ = _sources(tmp_path, a)
    fake_src = src[src["label"] == 1].set_index("id")
    # each fake's cutout row holds its rerun measurement, not its catalogue value
    match = pd.Series(match_detections(fakes, rerun, 1.0 / 0.262), index=fakes["id"].to_numpy())
    m = rerun.iloc[match.loc[fake_src.index].to_numpy()]
    assert np.allclose(fake_src["flux_g"].to_numpy(), m["flux_g"].to_numpy())
    assert not np.allclose(fake_src["flux_g"].to_numpy(), fakes.set_index("id").loc[fake_src.index, "flux_g"])
    row = cuts[cuts["label"] == 1].iloc[0]
    assert row["runs_measured"] == 1 and row["cut_faint"] > 0
    # no rerun catalogue: the true values, said so in the log and the cut flow
    run.rerun_tractor.unlink()
    cuts, _ = _cut(tmp_path, [a], rel, inj, selection=sel)
    assert cuts.loc[cuts["label"] == 1, "runs_measured"].iloc[0] == 0
    assert "no rerun Tractor catalogue" in caplog.text


def test_refusals_and_schemas(tmp_path):
    (a,) = _grid_names(6.0, 1, ra0=121.0)
    # DR5: no maskbits. A maskbits cut is refused, or mapped from allmask_* when asked
    make_release(MockConfig(bricks=(a,), schema="dr5", **SMALL), tmp_path / "dr5")
    cat = read_tractor(tmp_path / "dr5" / "release", a)
    assert cat.attrs["schema"] == "dr5" and not cat.attrs["has_maskbits"]
    with pytest.raises(CatalogError, match="no maskbits column"):
        select_real(cat, {**SELECTION, "maskbits": 2})
    select_real(cat, {**SELECTION, "maskbits": 32, "maskbits_from_allmask": True})
    # DR8: DR5's shapes and types, with maskbits
    make_release(MockConfig(bricks=(a,), schema="dr8", **SMALL), tmp_path / "dr8")
    cat = read_tractor(tmp_path / "dr8" / "release", a)
    assert cat.attrs["schema"] == "dr8" and cat.attrs["has_maskbits"] and cat["type"].str.len().max() <= 4
    # upper-case column names are read
    path = layout.tractor_file(tmp_path / "dr8" / "release", a)
    t = fitsio.read(str(path))
    t.dtype.names = [n.upper() for n in t.dtype.names]
    path.unlink()
    fitsio.write(str(path), t)
    assert len(read_tractor(tmp_path / "dr8" / "release", a)) == len(cat)
    # the facts of the real files: the band keyword, the skipped ids' column
    hdr = fitsio.read_header(str(layout.coadd_file(tmp_path / "dr8" / "release", a, "image", "r")), 1)
    assert hdr["FILTERX"].strip() == "r" and "BAND" not in hdr
    with fitsio.FITS(str(layout.skipped_ids_file(tmp_path / "dr8" / "injection", a, "rs0"))) as f:
        assert f[1].get_colnames() == ["ids"]
    # a real release with the synthetic injection run, or the reverse: refused when the run is planned
    base = {"synthetic": {"root": str(tmp_path / "dr8")}}
    with pytest.raises(ConfigError, match="release.injection_root lies inside synthetic.root"):
        check_release_roots({**base, "release": {"root": str(tmp_path / "dr5" / "release"),
                                                 "injection_root": str(tmp_path / "dr8" / "injection")}})
    with pytest.raises(ConfigError, match="release.root lies inside synthetic.root"):
        check_release_roots({**base, "release": {"root": str(tmp_path / "dr8" / "release"),
                                                 "injection_root": str(tmp_path / "dr5" / "injection")}})
