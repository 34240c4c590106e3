"""Shared fixtures: small synthetic releases (real files, written once per session)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from realfake.synthetic.release import MockConfig, make_release

BRICKS = ("1210p060", "1212p060")


@pytest.fixture(scope="session")
def mock_dr9(tmp_path_factory):
    root = tmp_path_factory.mktemp("dr9") / "synthetic"
    cfg = MockConfig(bricks=BRICKS, image_size=256, seed=7, schema="dr9", rs=("rs0", "rs1"))
    make_release(cfg, root, workers=2)
    return root, cfg


@pytest.fixture(scope="session")
def mock_dr5(tmp_path_factory):
    root = tmp_path_factory.mktemp("dr5") / "synthetic"
    cfg = MockConfig(bricks=BRICKS[:1], image_size=200, seed=3, schema="dr5")
    make_release(cfg, root)
    return root, cfg


@pytest.fixture(scope="session")
def selection():
    import yaml
    from pathlib import Path

    cfg = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    return cfg["selection"]


@pytest.fixture(scope="session")
def brick_files(mock_dr9, selection, tmp_path_factory):
    from realfake.cutouts.brickfile import DEFAULT_CHANNELS
    from realfake.cutouts.cut import make_brick_file

    root, cfg = mock_dr9
    out = tmp_path_factory.mktemp("cutouts")
    files = []
    for b in cfg.bricks:
        path = out / f"{b}.h5"
        make_brick_file(path, b, root / "release", root / "injection", cfg.rs, selection, 64, DEFAULT_CHANNELS)
        files.append(path)
    return files


ROOT = Path(__file__).parents[1]


def assert_same_brick_file(path, other) -> None:
    """Two brick files hold the same bytes in every dataset (NaN included, where no stamp was cut)."""
    import h5py

    with h5py.File(path) as a, h5py.File(other) as b:
        assert len(a["cutouts"]) > 0
        for key in ("cutouts", "labels", "sources", "offedge", "cuts"):
            assert a[key][()].tobytes() == b[key][()].tobytes(), (path, key)


def module_imports(module: str) -> set[str]:
    """The realfake modules ``module`` imports itself: at its top, inside a function, or for type checking only."""
    import ast

    path = ROOT / "src" / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = path.with_suffix("") / "__init__.py"
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            # a relative import's package: ``package`` less its last level - 1 parts
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            base = ".".join(p for p in (base, node.module) if p)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith("realfake.") and is_module(n)}
    return found - {module}


def is_module(name: str) -> bool:
    path = ROOT / "src" / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def realfake_imports(module: str) -> set[str]:
    """The realfake modules ``module`` imports, at its top or inside a function, and theirs in turn."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += module_imports(name)
    return seen


def snakemake(*args, cwd=ROOT, env=None, timeout=900):
    """Run the venv's snakemake; the completed process."""
    exe = Path(sys.executable).parent / "snakemake"
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The .test scenario run locally end to end (2 bricks, one epoch): its working directory."""
    work = tmp_path_factory.mktemp("run")
    shutil.copytree(ROOT / ".test" / "config", work / "config")
    r = snakemake("-s", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", "2", cwd=work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return work
