"""The conda environments a cluster user gets pin the same versions as pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]


def _pins_from_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(re.match(r"([A-Za-z0-9_.-]+)==(\S+)", d).groups() for d in deps)


def test_env_pins_agree_with_pyproject():
    pins = {k.lower(): v for k, v in _pins_from_pyproject().items()}
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
                name, version = m.group(1).lower(), m.group(2)
                assert name in pins, f"{env.name}: {name} is not pinned in pyproject.toml"
                assert pins[name] == version, f"{env.name}: {name} {version} != pyproject {pins[name]}"
