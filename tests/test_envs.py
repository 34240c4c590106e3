"""pyproject.toml declares compatible ranges; constraints.txt is the exact set the tests ran with, inside those ranges;
the conda environments a cluster user gets pin the versions of constraints.txt."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[1]


def _requirements():
    """Every requirement of pyproject.toml, its extras' included: name -> Requirement."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    return {canonicalize_name(r.name): r for r in map(Requirement, deps)}


def _constraints():
    """constraints.txt: name -> exact version."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
            pins[canonicalize_name(name)] = version
    return pins


def test_pyproject_declares_ranges_with_both_ends():
    for name, req in _requirements().items():
        ops = {s.operator for s in req.specifier}
        assert ops == {">=", "<"}, f"pyproject.toml: {req} is not a range from a tested version to below a major"


def test_every_constraint_lies_inside_pyprojects_range():
    pins, reqs = _constraints(), _requirements()
    for name, req in reqs.items():
        assert name in pins, f"constraints.txt lacks {name}, a dependency in pyproject.toml"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt: {name}=={pins[name]} lies outside pyproject.toml's {req}"


def test_make_setup_installs_with_the_constraints():
    setup = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*-c constraints\.txt -e '\.\[dev,slurm\]'", setup)
    assert re.search(r"^\$\(STAMP\):.*constraints\.txt", setup, re.M)


def test_env_pins_agree_with_the_constraints():
    pins = _constraints()
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert {e.stem for e in envs} >= {"io", "tf", "plot"}
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        for dep in spec["dependencies"]:
            items = dep["pip"] if isinstance(dep, dict) else [dep]
            for item in items:
                m = re.match(r"([A-Za-z0-9_.-]+)\s*=?=\s*(\S+)", item)
                if not m or m.group(1) == "python":
                    continue
                name, version = canonicalize_name(m.group(1)), m.group(2)
                assert name in pins, f"{env.name}: {name} is not in constraints.txt"
                assert pins[name] == version, f"{env.name}: {name} {version} != constraints.txt {pins[name]}"
