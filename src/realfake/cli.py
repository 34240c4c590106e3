"""realfake command-line tools, usable outside Snakemake."""

from __future__ import annotations

import argparse
import logging
import sys

from realfake.synthetic.release import MockConfig


def _defect(text: str) -> tuple:
    from dataclasses import fields

    from realfake.synthetic.release import DEFECTS

    kinds = {f.name: type(f.default) for f in fields(MockConfig) if f.name in DEFECTS}
    key, _, value = text.partition("=")
    if key not in kinds or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE with KEY one of {', '.join(DEFECTS)}")
    try:
        return key, kinds[key](value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {key} takes a number") from None


def _mock_release(args) -> int:
    from realfake.synthetic.release import make_release

    cfg = MockConfig(
        bricks=tuple(args.bricks),
        image_size=args.size,
        seed=args.seed,
        schema=args.schema,
        rs=tuple(args.rs),
        fake_model=args.fake_model,
        fake_psf=not args.no_fake_psf,
        min_fake_separation=args.min_fake_separation,
        injection_layout=args.injection_layout,
        **{"fake_flux_scale": args.fake_flux_scale, **dict(args.defect)},
    )
    summary = make_release(cfg, args.out, workers=args.workers)
    n = sum(b["fakes"] for b in summary["bricks"])
    print(f"wrote {len(summary['bricks'])} bricks ({n} injected sources) to {args.out}/release and {args.out}/injection")
    return 0


def _cutouts(args) -> int:
    from pathlib import Path

    from realfake.cutouts.batches import CutoutSettings, cut_brick, rebuild_brick
    from realfake.inputs.bricks import batch_bricks, select_bricks
    from realfake.config import config_hash, cutout_inputs, load_config, uses_synthetic

    config = load_config(args.configfile)
    inputs = cutout_inputs(config)
    settings = CutoutSettings.from_config(config, config_hash(inputs))
    if args.out:
        rec = cut_brick(args.brick, str(Path(args.out)), settings)
    else:
        batches = batch_bricks(select_bricks(config["release"], uses_synthetic(config)),
                               config["cutouts"]["batch_size"])
        batch = next((name for name, bricks in batches.items() if args.brick in bricks), None)
        if batch is None:
            raise ValueError(f"brick {args.brick} is not in the selection of {args.configfile} (release.bricks)")
        rec = rebuild_brick(args.brick, Path(args.results) / "cutouts" / batch, settings)
    if rec["status"] != "ok":
        print(f"brick {args.brick} {rec['status']}: {rec['reason']}", file=sys.stderr)
        return 1
    print(f"brick {args.brick}: {int(rec['cuts']['kept'].sum())} cutouts in {rec['seconds']:.1f} s")
    return 0


def _verdict(args) -> int:
    import json
    from pathlib import Path

    from realfake.evaluation.verdict import at_a_glance, control_outcome

    path = Path(args.metrics)
    if not path.is_file():
        raise ValueError(f"{path}: no such metrics file (run the pipeline first: make run)")
    m = json.loads(path.read_text())
    print(m["verdict"] if args.full else "\n".join(at_a_glance(m, str(path.parent))))
    if args.control:
        ok, line = control_outcome(m, args.control)
        print(line)
        return 0 if ok else 1
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="realfake", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser(
        "mock-release",
        help="render a synthetic Data Release and obiwan injection run with GalSim",
        description="Render a synthetic Legacy Survey Data Release (OUT/release) and an obiwan injection run "
        "(OUT/injection) in the exact on-disk layout of the real ones. Deterministic from --seed.",
    )
    m.add_argument("--out", required=True, help="output directory (replaced atomically)")
    m.add_argument("--bricks", nargs="+", required=True, metavar="BRICK", help="brick names, e.g. 1210p060")
    m.add_argument("--size", type=int, default=800, help="image size in pixels (real releases: 3600) [%(default)s]")
    m.add_argument("--seed", type=int, default=42, help="random seed [%(default)s]")
    m.add_argument("--schema", choices=["dr9", "dr8", "dr5"], default="dr9", help="Tractor schema [%(default)s]")
    m.add_argument("--rs", nargs="+", default=["rs0"],
                   help="seed folders to write, in the layout's names (rs0, more_rs500, file0_rs0_skip0) [%(default)s]")
    m.add_argument("--injection-layout", choices=["obiwan2018", "obiwan2017", "obiwan2021"], default="obiwan2018",
                   help="the obiwan layout of the injection run [%(default)s]")
    m.add_argument("--fake-model", choices=["elg", "real"], default="elg",
                   help="'elg': single Sersic n=1 fakes; 'real': fakes drawn like the reals (null test)")
    m.add_argument("--no-fake-psf", action="store_true", help="do not convolve fakes with the PSF (positive control)")
    m.add_argument("--fake-flux-scale", type=float, default=1.0,
                   help="inject fakes with this times their catalogue flux (positive control) [%(default)s]")
    m.add_argument("--min-fake-separation", type=float, default=5.0,
                   help="arcsec: a fake closer than this to an earlier one is skipped [%(default)s]")
    m.add_argument("--defect", type=_defect, action="append", default=[], metavar="KEY=VALUE",
                   help="a graded defect of the fakes, as in the config's synthetic block: fake_psf_scale=1.1, "
                   "fake_rhalf_scale=1.2, fake_sersic_offset=0.5, fake_ellipticity=distortion, fake_shot_noise=0.05, "
                   "fake_invvar_scale=0.8, fake_offset=1 (repeatable)")
    m.add_argument("--workers", type=int, default=1, help="bricks rendered in parallel [%(default)s]")
    m.set_defaults(func=_mock_release)
    c = sub.add_parser(
        "cutouts",
        help="cut one brick again, alone, into its batch of the workflow's results",
        description="Cut one brick with the settings of a workflow config, replacing its file "
        "(RESULTS/cutouts/<batch>/<brick>.h5) and its rows in the batch's cuts.csv and failures.csv; "
        "the next `snakemake` run then rebuilds the shards and everything after them. "
        "With --out, write the brick's file into another directory instead and touch nothing else.",
    )
    c.add_argument("--brick", required=True, help="brick name, e.g. 1211p060")
    c.add_argument("--configfile", default="config/config.yaml", help="workflow config [%(default)s]")
    c.add_argument("--results", default="results", help="the workflow's results directory [%(default)s]")
    c.add_argument("--out", help="write OUT/<brick>.h5 instead of replacing the brick in the results")
    c.set_defaults(func=_cutouts)
    v = sub.add_parser(
        "verdict",
        help="a run's verdict at a glance (at most ten lines), or its full paragraph",
        description="Print the verdict of a run from its metrics.json: the answer, its number with its interval and "
        "p-value, what found the difference or the bound, the population and processing answers, where the rest is.",
    )
    v.add_argument("metrics", nargs="?", default="results/evaluation/metrics.json",
                   help="the run's metrics.json [%(default)s]")
    v.add_argument("--full", action="store_true", help="the full paragraph instead")
    v.add_argument("--control", choices=["null-test", "positive-control"],
                   help="also say whether a control came out as it must (exit status 1 if not)")
    v.set_defaults(func=_verdict)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as err:  # includes schema, brick and file errors
        print(f"realfake {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
