"""Which TensorFlow is installed, and whether it sees the GPUs the job was given.

TensorFlow is an extra of realfake, one build or the other: ``cpu`` (tensorflow-cpu) or ``gpu``
(tensorflow[and-cuda]); both provide the module ``tensorflow``. Nothing here imports TensorFlow at
module level: :func:`require_tensorflow` only looks for it, so that ``train.env`` can still be
applied before TensorFlow starts.

A job given GPUs (``CUDA_VISIBLE_DEVICES``, SLURM's ``SLURM_GPUS*``, ``SLURM_JOB_GPUS``,
``SLURM_STEP_GPUS``) on which TensorFlow sees none stops (:func:`check_gpus`) instead of training
on the CPUs for hours.
"""

from __future__ import annotations

import importlib.util
import os
import sys

INSTALL_HINT = ("realfake installs TensorFlow as an extra, one build or the other: `pip install '.[cpu]'` "
                "(tensorflow-cpu; CPU and KNL nodes; what `make setup` installs) or `pip install '.[gpu]'` "
                "(tensorflow[and-cuda]; a GPU node). With `--sdm conda`, envs/tf.yaml, or envs/tf-gpu.yaml where "
                "train.device resolves to gpu. Never both builds in one environment: docs/install.md")


def require_tensorflow() -> None:
    """Raise a ModuleNotFoundError naming both extras when no TensorFlow is installed (TensorFlow is not imported)."""
    if importlib.util.find_spec("tensorflow") is None:
        raise ModuleNotFoundError(f"TensorFlow is not installed in this environment ({sys.prefix}). {INSTALL_HINT}",
                                  name="tensorflow")


def train_device(setting: str, resources) -> str:
    """``train.device`` for one train_cnn job: ``cpu`` or ``gpu`` as set; ``auto``: ``gpu`` when the job asks for GPUs
    the way the SLURM executor reads its resources (``gpu`` > 0, or a ``gres`` naming gpu: the profile's *gpu-node).

    ``resources``: the job's (Snakemake's, a mapping with ``get``). Chooses its conda environment (tf-gpu.yaml).
    """
    if setting in ("cpu", "gpu"):
        return setting
    if setting != "auto":
        raise ValueError(f"train.device must be auto, cpu or gpu, not {setting!r}")
    try:
        count = int(resources.get("gpu", 0) or 0)
    except (TypeError, ValueError):
        count = 0
    return "gpu" if count > 0 or "gpu" in str(resources.get("gres", "") or "") else "cpu"


# --------------------------------------------------------------------------- GPUs given, GPUs seen

# Lists of device indices (or UUIDs): "0" is a GPU. SLURM sets them for a job or step given GPUs.
GPU_INDEX_VARS = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")
# Counts, possibly typed ("a100:2"): SLURM_GPUS, SLURM_GPUS_ON_NODE, SLURM_GPUS_PER_NODE, _PER_TASK, _PER_SOCKET
GPU_COUNT_PREFIX = "SLURM_GPUS"
NO_GPU_VALUES = ("", "-1", "NoDevFiles")  # CUDA's "hide every GPU"; SLURM's value for a GRES without device files


class NoGPUError(RuntimeError):
    """The job was given GPUs (or train.device says gpu) and TensorFlow sees none."""


def gpus_given(env=None) -> dict:
    """The environment variables that say this job was given GPUs: name -> value (empty: none given)."""
    env = os.environ if env is None else env
    given = {}
    for name, value in sorted(env.items()):
        value = value.strip()
        if name in GPU_INDEX_VARS:
            if value not in NO_GPU_VALUES:
                given[name] = value
        elif name.startswith(GPU_COUNT_PREFIX):
            counts = [part.rsplit(":", 1)[-1] for part in value.split(",")]
            if any(c.strip() not in ("", "0") for c in counts):
                given[name] = value
    return given


def tensorflow_builds() -> dict:
    """The TensorFlow distributions installed here: name -> version (both at once means one overwrote the other)."""
    from importlib import metadata

    found = {}
    for name in ("tensorflow", "tensorflow-cpu"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def check_gpus(require: bool = False, env=None) -> list:
    """TensorFlow's GPUs; a NoGPUError when the job was given GPUs (``gpus_given``), or ``require``, and it sees none.

    Training a GPU job on its CPUs would take hours and look like it works: the usual cause is the
    CPU build of TensorFlow (tensorflow-cpu, the `cpu` extra) installed where the CUDA build belongs.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    given = gpus_given(env)
    if gpus or not (given or require):
        return gpus
    why = (f"this job was given GPUs ({', '.join(f'{k}={v}' for k, v in given.items())})" if given
           else "train.device is gpu (so set, or auto in a job that asks for GPUs)")
    builds = tensorflow_builds()
    installed = ", ".join(f"{k} {v}" for k, v in builds.items()) or "none found"
    if not tf.test.is_built_with_cuda():
        cause = (f"TensorFlow {tf.__version__} here is a CPU build (tf.test.is_built_with_cuda() is False; installed: "
                 f"{installed}; `pip show tensorflow tensorflow-cpu`): probably tensorflow-cpu, the `cpu` extra")
    else:
        cause = (f"TensorFlow {tf.__version__} here is the CUDA build (installed: {installed}), but it found no usable "
                 f"GPU: no NVIDIA driver, one too old for its CUDA 12, or CUDA libraries missing (TensorFlow's "
                 f"warnings above say which; `nvidia-smi` shows the driver)")
    if len(builds) > 1:
        cause += "; both builds are installed, and the one installed last overwrote the other's files"
    raise NoGPUError(
        f"{why}, but TensorFlow sees no GPU: stopping rather than training on the CPUs. {cause}. To train on the "
        f"GPU: in a venv, `pip uninstall -y tensorflow-cpu tensorflow && pip install '.[gpu]'` (docs/install.md); with "
        f"`--sdm conda`, envs/tf-gpu.yaml, which train_cnn uses where train.device resolves to gpu (profiles/slurm's "
        f"`train_cnn: *gpu-node`, or `train.device: gpu`). To train on CPUs, use a CPU node (`train_cnn: *knl-node`).")
