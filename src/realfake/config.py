"""The workflow's config outside Snakemake: loaded safely, validated by the workflow's schema, hashed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_config(path: str | Path) -> dict:
    """``config.yaml`` as Snakemake sees it: safe YAML, checked by the schema, defaults filled in."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    config = yaml.safe_load(path.read_text())
    if SCHEMA.exists():
        from snakemake.utils import validate

        validate(config, str(SCHEMA))
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
