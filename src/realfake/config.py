"""The workflow's config outside Snakemake: loaded safely, validated by the workflow's schema, hashed."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config that breaks the schema or points nowhere; the message names every offending key."""


def check_config(config, schema_path: str | Path = SCHEMA, max_errors: int = 5) -> None:
    """Check ``config`` against the workflow's JSON schema; ConfigError with one line per problem.

    Each line names the key (``shards.size``) and what is wrong with it. Where a key may take
    several forms (``release.bricks``: a list, a file or a box), the form that comes closest is
    the one explained, rather than a dump of the whole schema.
    """
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return
    lines = []
    for err in errors[:max_errors]:
        best = jsonschema.exceptions.best_match([err])
        key = ".".join(map(str, best.absolute_path)) or "(top level)"
        lines.append(f"config key {key}: {best.message}")
    more = f"\n(and {len(errors) - max_errors} more)" if len(errors) > max_errors else ""
    raise ConfigError("invalid config (schema workflow/schemas/config.schema.yaml):\n" + "\n".join(lines) + more)


def uses_synthetic(config: dict, key: str = "root") -> bool:
    """True when ``release.<key>`` lies inside ``synthetic.root``, which rule mock_release builds."""
    synthetic = Path(config["synthetic"]["root"]).resolve()
    return Path(config["release"][key]).resolve().is_relative_to(synthetic)


def check_release_roots(config: dict) -> None:
    """Refuse a real release with the synthetic injection run, or the reverse (real galaxies compared with fakes
    injected into another sky); ``release.root`` and ``release.injection_root`` must be directories, unless the
    synthetic release will write them, and ``release.region`` a region the release has. A few stats, never one per
    brick."""
    from realfake.inputs.layout import chosen_regions

    rel = config["release"]
    inside = {key: uses_synthetic(config, key) for key in ("root", "injection_root")}
    if inside["root"] != inside["injection_root"]:
        real, fake = ("injection_root", "root") if inside["root"] else ("root", "injection_root")
        raise ConfigError(
            f"config keys release.root ({rel['root']!r}) and release.injection_root ({rel['injection_root']!r}): "
            f"release.{fake} lies inside synthetic.root ({config['synthetic']['root']!r}), the built-in synthetic "
            f"release, and release.{real} does not: its galaxies would be compared with objects of another sky. "
            "Point both at a real release and the injection run made on it, or both at the synthetic release")
    if inside["root"]:
        return
    for key in ("root", "injection_root"):
        path = Path(rel[key])
        if not path.is_dir():
            raise ConfigError(f"config key release.{key}: not a directory: {str(path)!r}")
    try:
        chosen_regions(rel["root"], rel.get("region", "both"))
    except ValueError as err:
        raise ConfigError(f"config key {err}") from None


def check_neighbour_rule(config: dict) -> None:
    """Refuse a synthetic run whose real galaxies' stamps can hold fakes where the fakes' stamps cannot.

    The reals are cut from an injection run's coadds (``cutouts.reals_from: injection``), which hold that run's
    fakes; the neighbour rule drops a stamp of either class with an injected source within
    ``cutouts.neighbour_radius``. A run that keeps its fakes ``synthetic.min_fake_separation`` apart leaves no
    other fake in a fake's stamp out to that distance, so where it exceeds the radius, reals' stamps alone hold
    fakes between the two (up to the stamp's corners): the classes would differ in their neighbours, which the
    image statistics of the outskirts (noise, neighbours) see, not in the injected model.
    """
    from realfake.inputs.bricks import PIXSCALE_ARCSEC

    cut = config["cutouts"]
    if not uses_synthetic(config) or cut.get("reals_from", "injection") != "injection":
        return
    corner = cut["size"] / 2 * math.sqrt(2) * PIXSCALE_ARCSEC  # the stamp's half-diagonal (arcsec)
    separation = float(config["synthetic"].get("min_fake_separation", 0.0))
    needed = min(separation, corner)
    if cut["neighbour_radius"] < needed:
        raise ConfigError(
            f"config keys cutouts.neighbour_radius ({cut['neighbour_radius']:g}\") and "
            f"synthetic.min_fake_separation ({separation:g}\"): the injection runs keep their fakes {separation:g}\" "
            f"apart, so a fake's {cut['size']}-pixel stamp holds no other fake out to its corners ({corner:.1f}\"), "
            f"but a real's, cut from a run's coadds, can hold fakes from {cut['neighbour_radius']:g}\" on: the classes "
            f"would differ in their neighbours. Set cutouts.neighbour_radius to at least "
            f"{math.ceil(needed * 10) / 10:g}")


def load_config(path: str | Path) -> dict:
    """``config.yaml`` as Snakemake sees it: safe YAML, checked by the schema, defaults filled in."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:  # includes tags such as !!python/object, which safe_load never builds
        raise ConfigError(f"{path}: not plain YAML: {' '.join(str(err).split())}") from None
    if SCHEMA.exists():
        from snakemake.utils import validate

        check_config(config)
        validate(config, str(SCHEMA))  # fills in the defaults
    return config


def cutout_inputs(config: dict) -> dict:
    """The settings that decide a brick's cutouts: not which bricks are chosen, how they are batched, or the
    failure policy, so that adding a brick to the selection reruns only the batch it joins."""
    release = {k: v for k, v in config["release"].items() if k != "bricks"}
    cutouts = {k: v for k, v in config["cutouts"].items() if k not in ("batch_size", "on_missing", "on_error")}
    return {"release": release, "selection": config["selection"], "cutouts": cutouts}


def config_hash(settings: dict) -> str:
    """Hash of settings; stored in outputs so they can be traced to the config that made them."""
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def n_folds(requested: int, n_bricks: int) -> int:
    """The folds a run makes: ``evaluate.folds``, or fewer when there are fewer bricks (at least 2 for
    cross-fitting; 1 means one train/valid/test split). Recorded in the metrics, never silent."""
    if requested <= 1 or n_bricks < 2:
        return 1
    return min(requested, n_bricks)
