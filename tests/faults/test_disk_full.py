"""A full disk: the results on a tmpfs too small for the shards. The job fails naming what it was writing and
leaves nothing half-written; with space again, a rerun completes with shards equal to the uninterrupted run's."""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import pytest

from faults.harness import TRACEBACK, check_complete, check_present, copy_run, files_under, is_temporary, rerun, snakemake

pytestmark = pytest.mark.faults


def _mb(path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def test_full_disk_fails_cleanly_and_a_rerun_with_space_completes(reference, record, tmp_path):
    ref = reference.run
    run = copy_run(ref, tmp_path / "run", without=["results"])
    results = run / "results"
    results.mkdir()
    # room for the cutouts and the shuffle's buckets, not for the shards as well
    size = math.ceil(_mb(ref / "results" / "cutouts") + 1.5 * _mb(ref / "results" / "shards"))
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}m", "tmpfs", str(results)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mount.stderr.strip()}")
    try:
        shutil.copytree(ref / "results" / "cutouts", results / "cutouts", symlinks=True)
        res = snakemake(run, "shards", "--cores", "2")
        assert res.rc != 0, res.explain()
        assert TRACEBACK not in res.out, res.explain()
        assert "no space left on the device" in res.out and "results" in res.out, res.explain()
        assert re.search(r"Error in rule (plan|scatter|gather|build)_shards", res.out), res.explain()
        assert "logs/shards/" in res.out, res.explain()
        line = next(ln for ln in res.out.splitlines() if "no space left" in ln)
        record(note=f"{size} MB tmpfs: " + line[:160])
        present = check_present(ref, run, ["results/shards", "results/cutouts"])
        record(present)
        assert not present.corrupted, present.corrupted
        left = [k for k in files_under(run, ["results"]) if is_temporary(k)]
        assert not left, f"partial temporaries left on the full disk: {left}"
        subprocess.run(["mount", "-o", "remount,size=256m", str(results)], check=True)
        res, asked = rerun(run, "shards", "--cores", "2")
        assert res.rc == 0, res.explain()
        after = check_complete(ref, run, ["results/shards", "results/cutouts"])
        record(after)
        assert not after.lost and not after.corrupted and not after.litter, after
    finally:
        subprocess.run(["umount", "-l", str(results)], capture_output=True)
