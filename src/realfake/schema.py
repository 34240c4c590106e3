"""The defaults of the config, from the workflow's schema, their one home: for code called without Snakemake, whose
validation fills in the same (the schema itself: workflow/schemas/config.schema.yaml, realfake.config validates)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

# The schema as package data: a link to workflow/schemas/config.schema.yaml in the source tree, a copy in an installed
# wheel, so that an install that is not editable has the defaults too
PACKAGE_SCHEMA = Path(__file__).with_name("config.schema.yaml")


@functools.cache
def _schema() -> dict:
    import yaml

    return yaml.safe_load(PACKAGE_SCHEMA.read_text())


def schema_defaults(block: str) -> dict:
    """The defaults the schema gives the keys of the config's ``block`` (``train``, ``shards``, ``cutouts``,
    ``release``, ...): key -> value, a fresh copy."""
    props = _schema()["properties"][block]["properties"]
    return copy.deepcopy({key: p["default"] for key, p in props.items() if "default" in p})
