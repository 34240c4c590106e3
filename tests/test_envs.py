"""pyproject.toml declares compatible ranges; constraints.txt is the exact set the tests ran with, inside those ranges;
the conda environments a cluster user gets pin the versions of constraints.txt."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[1]
# The CUDA build of TensorFlow (the `gpu` extra, envs/tf-gpu.yaml) is pinned like the CPU build the tests ran with
SAME_RELEASE_AS = {"tensorflow": "tensorflow-cpu"}


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


def _pin(pins: dict, name: str) -> str:
    return pins[name] if name in pins else pins[SAME_RELEASE_AS[name]]


def test_pyproject_declares_ranges_with_both_ends():
    for name, req in _requirements().items():
        ops = {s.operator for s in req.specifier}
        assert ops == {">=", "<"}, f"pyproject.toml: {req} is not a range from a tested version to below a major"


def test_every_constraint_lies_inside_pyprojects_range():
    pins, reqs = _constraints(), _requirements()
    for name, req in reqs.items():
        assert name in pins or SAME_RELEASE_AS.get(name) in pins, \
            f"constraints.txt lacks {name}, a dependency in pyproject.toml"
        assert req.specifier.contains(_pin(pins, name), prereleases=True), \
            f"constraints.txt: {name}=={_pin(pins, name)} lies outside pyproject.toml's {req}"


def test_tensorflow_is_an_extra_of_one_build_or_the_other():
    """`pip install '.[gpu]'` must not bring tensorflow-cpu too: both install the module `tensorflow`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {canonicalize_name(Requirement(d).name) for d in project["dependencies"]}
    assert not base & {"tensorflow", "tensorflow-cpu"}, "TensorFlow belongs in the cpu or gpu extra, not the base"
    cpu, gpu = (list(map(Requirement, project["optional-dependencies"][e])) for e in ("cpu", "gpu"))
    assert [canonicalize_name(r.name) for r in cpu] == ["tensorflow-cpu"] and cpu[0].extras == set()
    assert [canonicalize_name(r.name) for r in gpu] == ["tensorflow"] and gpu[0].extras == {"and-cuda"}
    assert cpu[0].specifier == gpu[0].specifier, "the two builds' ranges differ"
    for extra, deps in project["optional-dependencies"].items():
        if extra not in ("cpu", "gpu"):
            assert not {canonicalize_name(Requirement(d).name) for d in deps} & {"tensorflow", "tensorflow-cpu"}


def test_make_setup_installs_with_the_constraints():
    setup = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*-c constraints\.txt -e '\.\[cpu,dev,slurm\]'", setup)
    assert re.search(r"^\$\(STAMP\):.*constraints\.txt", setup, re.M)


def test_env_pins_agree_with_the_constraints():
    pins = _constraints()
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert {e.stem for e in envs} >= {"io", "tf", "tf-gpu", "plot"}
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        for dep in spec["dependencies"]:
            items = dep["pip"] if isinstance(dep, dict) else [dep]
            for item in items:
                m = re.match(r"([A-Za-z0-9_.-]+)(\[[\w,-]+\])?\s*=?=\s*(\S+)", item)  # name[extras]==version
                if not m or m.group(1) == "python":
                    continue
                name, version = canonicalize_name(m.group(1)), m.group(3)
                assert name in pins or name in SAME_RELEASE_AS, f"{env.name}: {name} is not in constraints.txt"
                assert _pin(pins, name) == version, \
                    f"{env.name}: {name} {version} != constraints.txt {_pin(pins, name)}"


def test_the_gpu_env_is_the_tf_env_with_the_cuda_build():
    def deps(name):
        spec = yaml.safe_load((ROOT / "envs" / name).read_text())
        return spec["channels"], [d for d in spec["dependencies"] if not isinstance(d, dict)], \
            next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))

    (chan, conda, pip), (gchan, gconda, gpip) = deps("tf.yaml"), deps("tf-gpu.yaml")
    assert (gchan, gconda) == (chan, conda)
    swap = {"tensorflow-cpu==": "tensorflow[and-cuda]=="}
    assert gpip == [next((item.replace(a, b) for a, b in swap.items() if item.startswith(a)), item) for item in pip]
    assert any(item.startswith("tensorflow[and-cuda]==") for item in gpip)


def test_without_tensorflow_training_names_both_extras():
    """An environment installed without the cpu or gpu extra: importing realfake.training.train says which to add."""
    code = "import sys; sys.modules['tensorflow'] = None; import realfake.training.train"  # as if TensorFlow were absent
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: TensorFlow is not installed"), r.stderr
    for hint in ("pip install '.[cpu]'", "pip install '.[gpu]'", "envs/tf-gpu.yaml", "docs/install.md"):
        assert hint in last, hint
