"""Confounds: releases whose truth is known, each differing from a perfect injection in one way that is *not* the
injected model, run through the real-release path; does the verdict blame the model?

Each scenario renders a release of its own with the synthetic generator (realfake.synthetic.release) into a folder outside
``synthetic.root``, so that the pipeline reads it as it reads a real Data Release and obiwan run, then runs the
default config on it. The fakes are drawn and rendered like the real galaxies (``fake_model: real``) unless the
scenario says otherwise:

- ``sky``: the injection run's coadds carry a sky offset of 0.1 x the pixel noise (another sky subtraction);
- ``depth``: they have 10% more noise, recorded in their inverse variance (another CCD list);
- ``neighbours``: fakes 5" apart, as obiwan places them (the null preset's 20" hides other fakes);
- ``population``: the fakes drawn 0.5 mag brighter than the real galaxies' population, rendered like them;
- ``default``: the default synthetic release (single Sersic fakes against bulge + disc + clumps): a real
  difference of appearance, which must be found.

Prints one row per scenario: the appearance verdict, its paired AUC and p, the population answer, the processing
check's flag and reasons, the wall time. Not part of ``make test`` (several minutes a scenario on 2 cores):

    python benchmarks/confounds.py [--scenarios sky depth ...] [--out runs/confounds] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NULL = dict(fake_model="real", rs=("rs0", "rs1", "rs2"), min_fake_separation=20.0)
SCENARIOS = {
    "sky": ({**NULL, "rerun_sky_offset": 0.1}, "not distinguishable; processing differs (sky)"),
    "depth": ({**NULL, "rerun_noise": 0.1}, "not distinguishable; processing differs (depth)"),
    "neighbours": ({**NULL, "rs": ("rs0", "rs1"), "min_fake_separation": 5.0}, "not distinguishable"),
    "population": ({**NULL, "fake_mag_offset": -0.5}, "population differs; appearance not distinguishable"),
    "default": ({}, "distinguishable; concentration named"),
}


def scenario(name: str, out: Path, cores: int) -> dict:
    from realfake.config import load_config
    from realfake.synthetic.release import MockConfig, make_release

    work = out / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    base = load_config(ROOT / "config" / "config.yaml")
    mock, expected = SCENARIOS[name]
    t0 = time.time()
    syn = base["synthetic"]
    scene = {"image_size": syn["image_size"], "seed": syn["seed"], "galaxy_density": syn["galaxy_density"],
             "rs": tuple(syn["rs"]), **mock}
    make_release(MockConfig(bricks=tuple(base["release"]["bricks"]), **scene), work / "data", workers=cores)
    rendered = time.time() - t0
    overlay = {"release": {"root": str(work / "data" / "release"), "injection_root": str(work / "data" / "injection"),
                           "rs": "all"}}
    (work / "scenario.yaml").write_text(yaml.safe_dump(overlay))
    r = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"),
                        "--directory", str(work), "--cores", str(cores), "--configfile",
                        str(ROOT / "config" / "config.yaml"), str(work / "scenario.yaml")],
                       cwd=work, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"scenario {name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    m = json.loads((work / "results" / "evaluation" / "metrics.json").read_text())
    stats = json.loads((work / "results" / "evaluation" / "image_statistics.json").read_text())
    shutil.rmtree(work / "data", ignore_errors=True)  # the release: the largest part
    pop, proc = m.get("population", {}), m.get("processing", {})
    return {"scenario": name, "expected": expected, "verdict": m["verdict_class"], "pairs": m["n"] // 2,
            "auc": m["auc"], "ci": m["ci95"]["auc"], "p": m["p_value"],
            "population_auc": pop.get("auc"), "population_p": pop.get("p_value"),
            "population_differs": pop.get("differs"), "carried_by": pop.get("carried_by", []),
            "processing_differs": proc.get("differs"), "processing": proc.get("reasons", []),
            "image_statistics": stats, "verdict_text": m["verdict"], "render_s": rendered,
            "seconds": time.time() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS))
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "confounds", help="working directories")
    p.add_argument("--cores", type=int, default=2)
    a = p.parse_args(argv)
    rows = []
    print(f"{'scenario':<11} {'verdict':<24} {'pairs':>5} {'paired AUC':>10} {'95% CI':>13} {'p':>7} "
          f"{'pop. AUC':>8} {'pop. p':>7} {'processing':<40} {'s':>5}", flush=True)
    for name in a.scenarios:
        r = scenario(name, a.out, a.cores)
        rows.append(r)
        print(f"{name:<11} {r['verdict']:<24} {r['pairs']:>5} {r['auc']:10.3f} {r['ci'][0]:6.3f}-{r['ci'][1]:.3f} "
              f"{r['p']:7.3g} {r['population_auc']:8.3f} {r['population_p']:7.2g} "
              f"{'; '.join(r['processing'])[:40] or '-':<40} {r['seconds']:5.0f}", flush=True)
        print(f"    expected: {r['expected']}; population carried by: {', '.join(r['carried_by']) or '-'}",
              flush=True)
    (a.out / "confounds.json").write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
