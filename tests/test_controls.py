"""The built-in controls (config/presets/), run end to end at the tests' scale, and the pieces they rest on.

Each run layers the preset on the tests' config and .test/config/controls.yaml (16 bricks of 400x400
pixels, 30 epochs) in its own working directory, as `make null-test` / `make positive-control` do on
the default config.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, snakemake
from realfake.evaluation.verdict import CONTROLS, control_outcome
from realfake.inputs.selection import select_fakes, select_real


def run_control(name, work):
    configs = [ROOT / ".test" / "config" / "config.yaml", ROOT / ".test" / "config" / "controls.yaml",
               ROOT / "config" / "presets" / f"{name}.yaml"]
    r = snakemake("-s", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", "2",
                  "--configfile", *map(str, configs), cwd=work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return json.loads((work / "results" / "evaluation" / "metrics.json").read_text())


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_control_comes_out_as_it_must(name, tmp_path):
    m = run_control(name, tmp_path)
    ok, line = control_outcome(m, name)
    print(line)
    assert ok, line
    cuts = pd.read_csv(tmp_path / "results" / "cutouts" / "cutflow.csv")
    if name == "null-test":  # the reals' cuts were applied to the fakes, and counted
        fakes = cuts[cuts["class"] == "fake"].sum(numeric_only=True)
        assert fakes["cut_type"] > 0 and fakes["cut_colour"] > 0, cuts.to_string()
        assert m["verdict_class"] != "distinguishable"
    else:
        assert m["auc"] > 0.9


def test_control_outcome_states_the_numbers_and_the_requirement():
    m = {"auc": 0.52, "ci95": {"auc": [0.45, 0.6]}, "p_value": 0.4, "n": 300, "bricks": 16,
         "verdict_class": "no_difference_detected"}
    ok, line = control_outcome(m, "null-test")
    assert ok and "AUC 0.520 (95% CI 0.450-0.600)" in line and "p = 0.4" in line and "300 test examples" in line
    # a null test that cannot state its bound has not shown what it must
    assert not control_outcome({**m, "verdict_class": "inconclusive"}, "null-test")[0]
    assert not control_outcome(m, "positive-control")[0]
    assert not control_outcome({**m, "p_value": 0.01, "verdict_class": "distinguishable"}, "null-test")[0]
    assert control_outcome({**m, "ci95": {"auc": [0.85, 0.9]}, "p_value": 1e-4, "verdict_class": "distinguishable"},
                           "positive-control")[0]
    with pytest.raises(ValueError, match="control must be one of"):
        control_outcome(m, "nul-test")


def _simcat(has_type: bool):
    mags = {"g": [22.0, 22.0, 26.0], "r": [21.6, 21.6, 25.6], "z": [21.0, 21.0, 25.0]}
    cat = pd.DataFrame({f"flux_{b}": 10 ** ((22.5 - np.array(m)) / 2.5) for b, m in mags.items()})
    for b in mags:
        cat[f"mw_transmission_{b}"] = 1.0
    cat["size"] = [0.5, 0.5, 0.5]
    cat["type"] = ["EXP", "PSF", "EXP"] if has_type else "SIM"
    cat.attrs["has_type"] = has_type
    return cat


def test_fakes_on_true_values_get_the_cuts_their_catalogue_allows(selection):
    keep, removed = select_fakes(_simcat(True), {**selection, "fakes": "none"}, measured=False)
    assert keep.all() and not removed  # fakes: none: every injected source is a candidate
    keep, removed = select_fakes(_simcat(True), {**selection, "fakes": "true"}, measured=False)
    assert keep.tolist() == [True, False, False] and removed["type"] == 1 and removed["faint"] == 1
    assert "brick_primary" not in removed and "nobs" not in removed  # a simulation catalogue has neither
    keep, removed = select_fakes(_simcat(False), {**selection, "fakes": "true"}, measured=False)
    assert keep.tolist() == [True, True, False] and "type" not in removed  # obiwan's simcat has no type
    with pytest.raises(KeyError):
        select_real(_simcat(True), selection)  # the reals' cuts need the Tractor columns


def test_null_preset_keeps_fakes_out_of_both_classes_stamps():
    """The reals are cut from an injection run's coadds: with fakes kept 20" apart, a real's stamp could hold a fake
    where a fake's holds none, unless the neighbour rule reaches the stamp's corners; config refuses the mismatch."""
    import copy

    import yaml
    from snakemake.utils import update_config

    from realfake.config import ConfigError, check_neighbour_rule

    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    null = copy.deepcopy(default)  # the preset layered on the config as --configfile layers it
    update_config(null, yaml.safe_load((ROOT / "config" / "presets" / "null-test.yaml").read_text()))
    check_neighbour_rule(default)
    check_neighbour_rule(null)
    null["cutouts"]["neighbour_radius"] = 6.0
    with pytest.raises(ConfigError, match=r"cutouts.neighbour_radius \(6\"\) and synthetic.min_fake_separation "
                                          r"\(20\"\).*at least 11.9"):
        check_neighbour_rule(null)
    null["cutouts"]["reals_from"] = "release"  # reals from the release's coadds hold no fakes
    check_neighbour_rule(null)
