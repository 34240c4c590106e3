import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# the package's brick selection plans the run even where realfake is not installed (a bare snakemake env)
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from realfake.bricks import batch_bricks, select_bricks
from realfake.config import (
    ConfigError,
    check_config,
    check_release_roots,
    config_hash,
    cutout_inputs,
    n_folds,
    uses_synthetic,
)

# one line per bad key (name and problem) instead of the schema dump; then the defaults are filled in
try:
    check_config(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None
validate(config, schema="../schemas/config.schema.yaml")


wildcard_constraints:
    batch=r"\d{3}-\d+",
    fold=r"\d+",


def uses_synthetic_release():
    """True when the release lies inside synthetic.root, which rule mock_release builds."""
    return uses_synthetic(config)


try:
    check_release_roots(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None


def get_bricks():
    """The selected bricks (a list, a file of names or an RA/Dec box); no per-brick file is looked at."""
    try:
        return select_bricks(config["release"], synthetic=uses_synthetic_release())
    except ValueError as err:
        raise WorkflowError(str(err)) from None


def get_release():
    """Input that makes the cutouts wait for the synthetic release when it is used."""
    return [config["synthetic"]["root"]] if uses_synthetic_release() else []


BRICKS = get_bricks()
BATCHES = batch_bricks(BRICKS, config["cutouts"]["batch_size"])


# Cross-fitting: evaluate.folds folds of whole bricks, fewer when fewer bricks are selected (said in the verdict)
FOLDS = n_folds(config["evaluate"]["folds"], len(BRICKS))
FOLD_IDS = list(range(FOLDS)) if FOLDS >= 2 else [0]
FOLDS_RECORD = {
    "k": FOLDS,
    "requested": config["evaluate"]["folds"],
    "split_by": config["shards"]["split_by"],
    "note": (
        f"{FOLDS} folds instead of the {config['evaluate']['folds']} asked for: only {len(BRICKS)} bricks selected"
        if 1 < FOLDS < config["evaluate"]["folds"]
        else (
            "no cross-fitting (one train/valid/test split): only the test split's bricks are tested"
            if FOLDS == 1
            else ""
        )
    ),
}


def batch_bricks_of(wildcards):
    return BATCHES[wildcards.batch]


def get_final_output():
    """Everything the evaluation draws and writes: the answer to the question."""
    return [
        *rules.summarise_cutouts.output,
        *rules.evaluate_cnn.output,
        *rules.plot_evaluation.output,
        *rules.plot_mosaic.output,
    ]
