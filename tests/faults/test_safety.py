"""Safe by construction: YAML never builds Python objects, shards are never unpickled, rules run scripts (no shell
command is built from config strings), config paths are checked, and a foreign FITS header is only parsed.

Code inspection where a test can only read the code; a real attempt, with a canary file that must not appear,
where one can be made.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from faults.harness import ROOT, TRACEBACK, copy_run, snakemake, write_config

pytestmark = pytest.mark.faults

# the project's code (workflow/scripts/realfake is a link to src/realfake: not read twice)
CODE = sorted({*(ROOT / "src" / "realfake").glob("*.py"), *(ROOT / "workflow" / "scripts").glob("*.py"),
               *(ROOT / "workflow" / "rules").glob("*.smk"), ROOT / "Snakefile", *(ROOT / "benchmarks").glob("*.py"),
               *(ROOT / "tests").glob("**/*.py")})


def _calls(pattern):
    """(file, line number, line) of every match of ``pattern`` in the project's code."""
    out = []
    for path in CODE:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(pattern, line) and not line.lstrip().startswith("#"):
                out.append((path.relative_to(ROOT), n, line.strip()))
    return out


def test_yaml_is_only_ever_loaded_safely(record):
    unsafe = [c for c in _calls(r"yaml\.(load|unsafe_load|full_load|load_all)\(")]
    assert not unsafe, unsafe
    record(note=f"{len(_calls(r'yaml[.]safe_load'))} yaml.safe_load calls, no other yaml loader")


class Payload:
    """Unpickling this runs ``touch <canary>``."""

    def __init__(self, canary):
        self.canary = canary

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.canary)],))


def _pickled_npy(path, canary):
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = Payload(canary), 1.0
    np.save(path, arr, allow_pickle=True)


def test_np_load_never_unpickles(record, tmp_path):
    calls = _calls(r"np\.load\(")
    code = [c for c in calls if not str(c[0]).startswith("tests")]
    assert code and all("allow_pickle=False" in line for _, _, line in code), code
    from realfake.shards.shardset import load_shard

    canary = tmp_path / "CANARY"
    _pickled_npy(tmp_path / "xtest_0.npy", canary)
    for mmap in (None, "r"):
        with pytest.raises(ValueError, match=r"xtest_0.npy: not a plain numeric .npy array, refused"):
            load_shard(tmp_path / "xtest_0.npy", mmap_mode=mmap)
    assert not canary.exists(), "the shard was unpickled"
    record(note=f"{len(code)} np.load call(s) in the code, all allow_pickle=False (realfake.shards.shardset.load_shard)")


def test_a_pickled_shard_is_refused_by_the_workflow(reference, record, tmp_path):
    run = copy_run(reference.run, tmp_path / "run", without=["results/evaluation"])
    canary = tmp_path / "CANARY"
    shard = run / "results" / "shards" / "xfold0_0.npy"  # fold 0's test shard, fold 1's training shard
    shard.unlink()
    _pickled_npy(shard, canary)
    res = snakemake(run, "evaluate", "--cores", "2")
    assert res.rc != 0, res.explain()
    assert TRACEBACK not in res.out, res.explain()
    assert "xfold0_0.npy: not a plain numeric .npy array, refused" in res.out, res.explain()
    assert re.search(r"logs/\S+\.log", res.out), res.explain()  # the failed job's log is named
    assert not canary.exists(), "the shard was unpickled"
    record(note=next(ln for ln in res.out.splitlines() if "refused" in ln)[:150])


def test_yaml_python_tags_in_a_config_build_nothing(reference, record, tmp_path):
    canary = tmp_path / "CANARY"
    text = (reference.run / "config" / "config.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + f"\nevil: !!python/object/apply:subprocess.call [[touch, {canary}]]\n")
    run = tmp_path / "run"
    run.mkdir()
    res = snakemake(run, "-n", "--configfile", str(bad))
    assert res.rc != 0 and TRACEBACK not in res.out, res.explain()
    cli = subprocess.run([sys.executable, "-m", "realfake.cli", "cutouts", "--brick", "1210p060", "--configfile",
                          str(bad), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert cli.returncode == 2 and f"{bad}: not plain YAML" in cli.stderr, cli.stderr
    assert TRACEBACK not in cli.stderr
    assert not canary.exists(), "a YAML tag ran code"
    record(note="snakemake: " + next(ln for ln in res.out.splitlines() if "not valid JSON or YAML" in ln)[:80]
           + "; realfake cutouts: " + cli.stderr.strip()[:90])


def test_rules_run_scripts_never_shell_commands(record):
    rules = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    directives = [(p.name, n, ln.strip()) for p in rules for n, ln in enumerate(p.read_text().splitlines(), 1)
                  if re.match(r"\s+(shell|run|wrapper|notebook|cwl|template_engine):", ln)]
    assert not directives, directives
    n_script = sum(p.read_text().count("script:") for p in rules)
    shells = [c for c in _calls(r"shell=True|os\.system\(|os\.popen\(|\beval\(|\bexec\(")
              if not str(c[0]).startswith("tests")]
    assert not shells, shells
    record(note=f"{n_script} rules, all `script:`; no shell=True, os.system, eval or exec in the code")


def test_shell_metacharacters_in_config_paths_only_fail_to_be_found(reference, record, tmp_path):
    canary = tmp_path / "CANARY"
    cfg = yaml.safe_load((reference.run / "config" / "config.yaml").read_text())
    notes = []
    for key, value, words in (
        ("root", f"data; touch {canary} #", "config key release.root: not a directory"),
        ("bricks", f"$(touch {canary}).txt", "brick list file not found: $(touch"),
        ("injection_root", f"`touch {canary}`", "config key release.injection_root: not a directory"),
    ):
        c = yaml.safe_load(yaml.safe_dump(cfg))
        c["release"].update(root="data/release", injection_root="data/injection")
        c["release"][key] = value
        run = tmp_path / key
        write_config(run, c)
        (run / "data" / "release").mkdir(parents=True)
        (run / "data" / "injection").mkdir(parents=True)
        res = snakemake(run, "--cores", "2", "cutouts")
        assert res.rc != 0 and TRACEBACK not in res.out, res.explain()
        assert words in res.out, res.explain()
        notes.append(words)
    assert not canary.exists(), "a config string reached a shell"
    record(note="; ".join(notes))
