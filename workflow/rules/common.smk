import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# the package's brick selection plans the run even where realfake is not installed (a bare snakemake env)
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from realfake.inputs.bricks import batch_bricks, select_bricks
from realfake.evaluation.plant import KINDS as PLANTED_KINDS
from realfake.evaluation.sensitivity import scenarios, synthetic_defect
from realfake.training.devices import train_device as resolve_device
from realfake.training.distribute import task_resources
from realfake.config import (
    ConfigError,
    check_config,
    check_neighbour_rule,
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
    replicate=r"[1-9]\d*",
    part=r"\d+",
    source="planted|synthetic",
    kind="[a-z_]+",
    size=r"\d+(\.\d+)?(e-?\d+)?",


def uses_synthetic_release():
    """True when the release lies inside synthetic.root, which rule mock_release builds."""
    return uses_synthetic(config)


try:
    check_release_roots(config)
    check_neighbour_rule(config)
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


def fold_ids(k):
    """The folds a run trains: 0 .. k-1, or the one train/valid/test split (0) without cross-fitting."""
    return list(range(k)) if k >= 2 else [0]


# The shard plan's settings: the shards: block less the number of gather jobs, which changes neither the plan
# nor the bytes (a change of it reruns the gather jobs only)
SHARD_PLAN_SETTINGS = {k: v for k, v in config["shards"].items() if k != "gather_jobs"}
# Cross-fitting: evaluate.folds folds of whole bricks, fewer when fewer bricks are selected (said in the verdict)
FOLDS = n_folds(config["evaluate"]["folds"], len(BRICKS))
FOLD_IDS = fold_ids(FOLDS)
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


def sensitivity_in_verdict(wildcards):
    """The sensitivity grid's summary, which the verdict quotes, when sensitivity.enabled (make sensitivity)."""
    return (
        ["results/sensitivity/sensitivity.json"]
        if config["sensitivity"]["enabled"]
        else []
    )


def with_pdfs(**figures):
    """A rule's figures as its named outputs: each PNG (a path or a report() item) under its name and, as
    <name>_pdf, the vector copy that realfake.evaluation.plots.save writes beside it, so that no file a rule writes is
    undeclared."""
    outputs = {}
    for name, png in figures.items():
        outputs[name] = png
        outputs[f"{name}_pdf"] = str(png).removesuffix(".png") + ".pdf"
    return outputs


def get_final_output():
    """Everything the evaluation draws and writes: the answer to the question (and the sensitivity grid)."""
    return [
        *rules.summarise_cutouts.output,
        *rules.evaluate_cnn.output,
        *rules.plot_evaluation.output,
        *rules.plot_mosaic.output,
        *(rules.sensitivity_table.output if config["sensitivity"]["enabled"] else []),
    ]


# The sensitivity grid (workflow/rules/sensitivity.smk)
SENSITIVITY = config["sensitivity"]
try:
    SCENARIOS = scenarios(SENSITIVITY)
except ValueError as err:
    raise WorkflowError(str(err)) from None
if SENSITIVITY["source"] == "synthetic" and not uses_synthetic_release():
    raise WorkflowError(
        "sensitivity.source: synthetic renders the defects with the built-in synthetic release, but release.root "
        f"({config['release']['root']}) is not inside synthetic.root ({config['synthetic']['root']}): "
        "use sensitivity.source: planted on a real release"
    )
SENSITIVITY_FOLDS = n_folds(
    SENSITIVITY["folds"] or config["evaluate"]["folds"], len(BRICKS)
)
SENSITIVITY_FOLD_IDS = fold_ids(SENSITIVITY_FOLDS)
# the capacity check plants the grid's kinds that can be planted on any release (realfake.evaluation.capacity)
PLANTED_GRID = {
    k: v for k, v in SENSITIVITY["grid"].items() if k in PLANTED_KINDS and v
}
# the share of the bricks the capacity check plants: all but at survey scale (sensitivity.capacity.max_bricks)
CAPACITY_FRACTION = min(
    1.0, SENSITIVITY["capacity"]["max_bricks"] / max(1, len(BRICKS))
)
# replicate trainings beyond the run's own (workflow/rules/train.smk)
REPLICATE_IDS = list(range(1, config["evaluate"]["replicates"]))


def replicate_train(wildcards):
    """The train: block of a replicate training: the run's, from another seed."""
    return {
        **config["train"],
        "seed": config["train"]["seed"] + 1000 * int(wildcards.replicate),
    }


def scenario_paths(path, **more):
    """Input function: ``path`` (with {source}, {kind}, {size}) of the scenario in the wildcards, expanded over
    ``more`` (its batches, its folds)."""

    def paths(wildcards):
        return expand(
            path,
            source=wildcards.source,
            kind=wildcards.kind,
            size=wildcards.size,
            **more,
        )

    return paths


def synthetic_scenario_settings(wildcards):
    """The cutout settings of a synthetic-source scenario: the run's, on the scenario's own release."""
    release = dict(config["release"])
    mock = f"results/sensitivity/synthetic/{wildcards.kind}/{wildcards.size}/release"
    for key in ("root", "injection_root"):
        rel = (
            Path(release[key])
            .resolve()
            .relative_to(Path(config["synthetic"]["root"]).resolve())
        )
        release[key] = str(Path(mock) / rel)
    return cutout_inputs({**config, "release": release})


def sensitivity_metrics():
    """Every scenario's metrics, in the order of SCENARIOS."""
    return [f"results/sensitivity/{s}/{k}/{z}/metrics.json" for s, k, z in SCENARIOS]


def train_device(wildcards, resources):
    """train.device for this job: auto is gpu when it asks for GPUs (profiles/slurm's `train_cnn: *gpu-node`)."""
    return resolve_device(config["train"]["device"], resources)


def tf_env(wildcards, params):
    """The CUDA build of TensorFlow for a job that trains on a GPU, the CPU build otherwise."""
    return "../../envs/tf-gpu.yaml" if params.device == "gpu" else "../../envs/tf.yaml"


# train.nodes x train.tasks_per_node > 1: the SLURM resources of train_cnn's tasks, which its job starts itself with
# srun (realfake.training.distribute.task_resources); one task: none, and the job is what it always was
try:
    TRAIN_TASKS = task_resources(config["train"])
except ValueError as err:
    raise WorkflowError(str(err)) from None
