"""The training process: its threads, environment, devices and precision set up, and its record (run.json).

TensorFlow's thread pools and ``train.env`` take effect only before TensorFlow's
runtime starts: :func:`apply_env` and :func:`configure_threads` come first, and
nothing here imports TensorFlow at module level.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Environment variables about threads and placement recorded in run.json
THREAD_ENV_PREFIXES = ("OMP_", "KMP_", "MKL_", "TF_NUM_", "TF_ENABLE_ONEDNN", "OPENBLAS_NUM_THREADS")
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME", "SLURM_JOB_PARTITION",
              "SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
              "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE",
              "SLURM_JOB_CPUS_PER_NODE", "SLURM_MEM_PER_NODE", "SLURM_RESTART_COUNT", "SLURM_CLUSTER_NAME",
              "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "SLURM_STEP_TASKS_PER_NODE")


def allocated_threads(threads: int) -> int:
    """Threads to use: the SLURM allocation (cpus per task) when there is one, else Snakemake's ``threads``."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and int(slurm) != threads:
        log.info("SLURM_CPUS_PER_TASK = %s: using %s threads (Snakemake asked for %d)", slurm, slurm, threads)
        return int(slurm)
    return threads


def apply_env(env: dict, threads: int) -> dict:
    """Set ``train.env`` (e.g. OMP_NUM_THREADS, KMP_AFFINITY, KMP_BLOCKTIME) before TensorFlow starts.

    ``{threads}`` in a value is replaced by the thread count. Returns what was set.
    """
    done = {}
    for key, value in (env or {}).items():
        done[key] = str(value).format(threads=threads)
        os.environ[key] = done[key]
    if done and "tensorflow" in sys.modules:
        log.warning("TensorFlow was imported before train.env was applied: %s may not take effect", sorted(done))
    return done


def configure_threads(threads: int, inter_op: int = 2) -> None:
    """Size TensorFlow's thread pools to the job's allocation (Snakemake threads / SLURM cpus per task).

    The pools can only be sized before TensorFlow's runtime starts; in a process
    where it already runs (a test session, a notebook) the existing pools are kept.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(inter_op, threads)))
    except RuntimeError:
        log.warning(
            "TensorFlow already initialised: keeping %d intra-op threads",
            tf.config.threading.get_intra_op_parallelism_threads(),
        )


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        if not out.stdout.strip():
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_record(cfg: dict, threads: int, extra: dict | None = None) -> dict:
    from importlib import metadata

    import tensorflow as tf

    from realfake import __version__
    from realfake.training.devices import gpus_given

    pkgs = {}
    for p in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "h5py", "astropy", "fitsio", "galsim", "snakemake",
              "tensorboard"):
        try:
            pkgs[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return {
        "realfake": __version__,
        "git": git_revision(),
        "python": sys.version,
        "packages": pkgs,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "thread_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(THREAD_ENV_PREFIXES)},
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "gpu_env": gpus_given(),  # the variables that say the job was given GPUs
        "tensorflow_cuda_build": tf.test.is_built_with_cuda(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm": {k: os.environ[k] for k in SLURM_VARS if k in os.environ},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": cfg,
        **(extra or {}),
    }


def write_run_record(run_dir: Path, record: dict, resumed: bool) -> None:
    """Write ``record`` (:func:`run_record`) as ``run_dir/run.json``; a resumed run keeps the record of the attempts
    before it."""
    path = run_dir / "run.json"
    if resumed and path.exists():
        prev = json.loads(path.read_text())
        record["previous_attempts"] = prev.pop("previous_attempts", []) + [
            {k: prev.get(k) for k in ("host", "started", "slurm", "git", "threads", "distribution")}
        ]
    path.write_text(json.dumps(record, indent=1, default=str))


def use_mixed_precision(mode: str) -> bool:
    """``on``, ``off``, or ``auto``: on only when every GPU has compute capability >= 7 (tensor cores)."""
    if mode in ("on", "off"):
        return mode == "on"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return False
    caps = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0)) for g in gpus]
    return all(tuple(c) >= (7, 0) for c in caps)


def start_session(tcfg: dict):
    """A fresh Keras session for ``train:`` settings ``tcfg``: the distribution strategy from the environment, the
    seeds, deterministic ops and the precision policy. Returns (distribution, whether mixed precision is on)."""
    import keras
    import tensorflow as tf

    from realfake.training.distribute import strategy_from_environment

    # fresh Keras state: layer names, which checkpoints key on, are the same in every process
    keras.backend.clear_session()
    dist = strategy_from_environment(tcfg["distribute"], tcfg["worker_port"])
    keras.utils.set_random_seed(tcfg["seed"])
    if tcfg["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    mixed = use_mixed_precision(tcfg["mixed_precision"])
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    return dist, mixed
