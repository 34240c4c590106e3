import hashlib
import json
from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

BRICKS = config["release"]["bricks"]


wildcard_constraints:
    brick=r"\d{4}[pm]\d{3}",


def uses_synthetic_release():
    """True when the release lies inside synthetic.root, which rule mock_release builds."""
    synthetic = Path(config["synthetic"]["root"]).resolve()
    return any(
        Path(config["release"][key]).resolve().is_relative_to(synthetic)
        for key in ("root", "injection_root")
    )


def get_release():
    """Input that makes the cutouts wait for the synthetic release when it is used."""
    return [config["synthetic"]["root"]] if uses_synthetic_release() else []


def config_hash(*sections):
    """Hash of config sections; stored in outputs so they can be traced to their settings."""
    text = json.dumps({s: config[s] for s in sections}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def get_final_output():
    """Everything the evaluation draws and writes: the answer to the question."""
    return [
        *rules.evaluate_cnn.output,
        *rules.plot_evaluation.output,
        *rules.plot_mosaic.output,
    ]
