"""Which devices and processes train one model: a TensorFlow distribution strategy from the environment.

* several SLURM tasks (``srun -n N``), or an explicit ``TF_CONFIG`` naming several
  workers: ``MultiWorkerMirroredStrategy``; every global batch is split between the
  workers and their gradients are all-reduced (CPU nodes: no GPU assumed). The
  cluster spec is built from SLURM's variables: the node list (``SLURM_STEP_NODELIST``
  or ``SLURM_JOB_NODELIST``, expanded by :func:`expand_nodelist`), the tasks per node,
  ``SLURM_PROCID`` and a port (``train.worker_port`` + the task's rank on its node).
* several local GPUs: ``MirroredStrategy``.
* otherwise the default strategy (one device).

Only the chief (worker 0) writes the model, checkpoints and logs; other workers
write theirs to a temporary directory (the Keras multi-worker convention).
Nothing here imports TensorFlow at module level.

The tasks: ``train.nodes`` x ``train.tasks_per_node`` (:func:`task_resources`) are the
``train_cnn`` job's SLURM resources, and the job starts its tasks itself with ``srun``
(:func:`srun_command`, :func:`start_tasks`); one task (the default) asks for nothing more.

Why not ``tf.distribute.cluster_resolver.SlurmClusterResolver`` (TensorFlow 2.21, checked).
It reads the same variables (``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``,
``SLURM_STEP_NODELIST``, ``SLURM_STEP_TASKS_PER_NODE``; no ``scontrol``) and numbers the
ports the same way (``port_base`` + the task's rank on its node), but it cannot serve here:

1. It orders the workers by host name as a string (``sorted(...)`` in ``cluster_spec``),
   while SLURM numbers the tasks (``SLURM_PROCID``) in the node list's order. For nodes
   ``node[9-10]`` it gives ``['node10:p', 'node9:p']`` and task 0, which runs on node9, is
   told to be node10: names without zero padding put a worker's address on another
   worker's node. :func:`slurm_tf_config` keeps SLURM's order.
2. It sizes GPUs on CPU nodes too: with no ``gpus_per_node`` it runs ``nvidia-smi``
   (FileNotFoundError on a node without it), and ``gpus_per_node=0`` fails with
   "range() arg 3 must not be zero" (tensorflow/tensorflow#56894, closed unfixed); it
   would also rewrite ``CUDA_VISIBLE_DEVICES`` unless ``auto_set_gpu=False``.
3. It reads the step variables of ``os.environ`` only (:func:`slurm_tf_config` also takes the
   job's, and a mapping, which the tests use) and expands one bracket group per host name
   only (``r[1-2]n[1-2]`` is "Invalid hostlist format"; :func:`expand_nodelist` expands it).

``tests/test_train.py`` pins these facts: when a TensorFlow release fixes them, the test
says so and this module can hand the cluster spec to the resolver.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets: ``a[1-2,4],b`` -> ``["a[1-2,4]", "b"]``."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        parts.append(cur)
    return parts


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compressed host list, expanded in order, like ``scontrol show hostnames``.

    ``nid[00012-00014,00020],login1`` -> nid00012, nid00013, nid00014, nid00020, login1;
    zero padding is kept and several bracket groups (``r[1-2]n[1-2]``) are expanded.
    """
    hosts = []
    for item in _split_top(nodelist.strip()):
        m = re.search(r"\[([^\]]*)\]", item)
        if not m:
            hosts.append(item)
            continue
        head, tail = item[: m.start()], item[m.end():]
        for rng in m.group(1).split(","):
            lo, _, hi = rng.partition("-")
            width = len(lo)
            for i in range(int(lo), int(hi or lo) + 1):
                hosts.extend(expand_nodelist(f"{head}{i:0{width}d}{tail}"))
    return hosts


def expand_tasks_per_node(spec: str) -> list[int]:
    """``SLURM_TASKS_PER_NODE`` (``2(x3),1``) -> [2, 2, 2, 1]."""
    counts = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise ValueError(f"cannot parse SLURM tasks per node {spec!r}")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def slurm_tf_config(env=None, port: int = 12345) -> dict | None:
    """The ``TF_CONFIG`` of this SLURM task when the job step has several tasks; None otherwise.

    Tasks are placed on nodes in SLURM's default block order (tasks 0..k-1 on the
    first node, ...); the n-th task of a node listens on ``port + n``.
    """
    env = os.environ if env is None else env
    ntasks = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
    if ntasks < 2 or "SLURM_PROCID" not in env:
        return None
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise RuntimeError("SLURM_NTASKS > 1 but no SLURM_STEP_NODELIST / SLURM_JOB_NODELIST to build the cluster from")
    nodes = expand_nodelist(nodelist)
    per_node_spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if per_node_spec:
        per_node = expand_tasks_per_node(per_node_spec)
    else:  # as even as possible, the first nodes taking the remainder
        q, r = divmod(ntasks, len(nodes))
        per_node = [q + (i < r) for i in range(len(nodes))]
    if len(per_node) != len(nodes) or sum(per_node) != ntasks:
        raise RuntimeError(f"SLURM nodes {nodes} and tasks per node {per_node} do not add up to {ntasks} tasks")
    workers = [f"{node}:{port + k}" for node, n in zip(nodes, per_node) for k in range(n)]
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": int(env["SLURM_PROCID"])}}


def task_layout(tcfg: dict) -> tuple[int, int]:
    """(nodes, tasks per node) that train one model: ``train.nodes`` and ``train.tasks_per_node`` (default 1, 1)."""
    nodes, per_node = int(tcfg.get("nodes", 1)), int(tcfg.get("tasks_per_node", 1))
    if nodes < 1 or per_node < 1:
        raise ValueError(f"train.nodes ({nodes}) and train.tasks_per_node ({per_node}) must be at least 1")
    if nodes * per_node > 1 and tcfg.get("distribute") in ("off", False):
        raise ValueError(f"train.nodes x train.tasks_per_node = {nodes * per_node} tasks need train.distribute: "
                         "auto (with off, each task would train a model of its own into the same files)")
    return nodes, per_node


def task_resources(tcfg: dict) -> dict:
    """The ``train_cnn`` job's SLURM resources for its tasks; ``{}`` for one task, so that job is the same as before.

    For the official executor plugin (snakemake-executor-plugin-slurm 2.8): ``mpi`` makes
    the job step run the rule as it is, not inside ``srun -n1`` (slurm-jobstep 0.6.1), so
    the rule's own ``srun`` starts the tasks, and makes sbatch ask for them: one task per
    node as ``--nodes=N --ntasks=N`` (``tasks``; the plugin refuses ``tasks_per_node`` of 1
    for an ``mpi`` job), several as ``--nodes=N --ntasks-per-node=K`` (``tasks_per_node``;
    it refuses ``tasks`` and ``tasks_per_node`` together). ``tasks_per_gpu: 0`` keeps a
    GPU job from being given ``--ntasks-per-gpu=<tasks>``.
    """
    nodes, per_node = task_layout(tcfg)
    if nodes * per_node == 1:
        return {}
    layout = {"tasks_per_node": per_node} if per_node > 1 else {"tasks": nodes}
    return {"nodes": nodes, **layout, "mpi": "srun", "tasks_per_gpu": 0}


def srun_command(argv: list[str], nodes: int, tasks_per_node: int, cpus_per_task: int,
                 launcher: str = "srun") -> list[str]:
    """``srun`` starting ``argv`` as ``nodes`` x ``tasks_per_node`` tasks of ``cpus_per_task`` CPUs each.

    Every count is given: the SLURM executor's job step hands the rule an environment
    without the allocation's ``SLURM_*`` variables (only the job's id and name), so ``srun``
    would otherwise start one task. ``--kill-on-bad-exit``: a failed task ends the others,
    which would wait for it in their all-reduce; ``--label``: each log line says its task.
    """
    return [*shlex.split(launcher), f"--nodes={nodes}", f"--ntasks={nodes * tasks_per_node}",
            f"--ntasks-per-node={tasks_per_node}", f"--cpus-per-task={cpus_per_task}", "--kill-on-bad-exit=1",
            "--label", *argv]


def start_tasks(shard_dir, model_path, cfg: dict, cpus_per_task: int, device: str | None = None,
                launcher: str = "srun", run_dir=None) -> None:
    """Train ``cfg`` as ``train.nodes`` x ``train.tasks_per_node`` SLURM tasks, each ``python -m realfake.training.train``.

    Inside a SLURM job (the SLURM profile's ``train_cnn`` job, or an ``salloc``); their
    output goes to this process's standard error (the rule's log), each line labelled
    with its task. RuntimeError when they fail or when there is no allocation to start them in.
    """
    nodes, per_node = task_layout(cfg["train"])
    if "SLURM_JOB_ID" not in os.environ or not shutil.which(shlex.split(launcher)[0]):
        raise RuntimeError(
            f"train.nodes x train.tasks_per_node = {nodes * per_node} tasks are started with {launcher} inside a "
            "SLURM job: run with --profile profiles/slurm (or inside an salloc allocation), or set both to 1")
    argv = [sys.executable, "-m", "realfake.training.train", "--shards", str(shard_dir), "--model", str(model_path),
            "--config", json.dumps({"model": cfg["model"], "train": cfg["train"]}), "--threads", str(cpus_per_task)]
    if device:
        argv += ["--device", device]
    if run_dir is not None:
        argv += ["--run-dir", str(run_dir)]
    cmd = srun_command(argv, nodes, per_node, cpus_per_task, launcher)
    log.info("starting %d training tasks: %s", nodes * per_node, " ".join(cmd[:-len(argv)] + argv[:3]))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    done = subprocess.run(cmd, stdout=sys.stderr.fileno(), check=False)
    if done.returncode:
        raise RuntimeError(f"the {nodes * per_node} training tasks failed ({launcher} exit status "
                           f"{done.returncode}): their lines above, labelled with the task")

@dataclass
class Distribution:
    """The strategy and this process's place in it."""

    strategy: object
    kind: str  # default | mirrored | multi_worker
    num_workers: int = 1
    task_index: int = 0
    is_chief: bool = True
    replicas: int = 1
    tf_config: dict | None = field(default=None)

    def record(self) -> dict:
        return {"kind": self.kind, "num_workers": self.num_workers, "task_index": self.task_index,
                "is_chief": self.is_chief, "replicas": self.replicas, "tf_config": self.tf_config}


def _tf_config(env) -> dict | None:
    text = env.get("TF_CONFIG")
    return json.loads(text) if text else None


def cluster_size(tf_config: dict | None) -> int:
    if not tf_config:
        return 0
    cluster = tf_config.get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def is_chief(tf_config: dict | None) -> bool:
    """Chief: the task of type ``chief``, or worker 0 when the cluster has no chief."""
    if not tf_config:
        return True
    task = tf_config.get("task", {})
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in tf_config.get("cluster", {})


def strategy_from_environment(mode: str = "auto", port: int = 12345, env=None) -> Distribution:
    """The strategy this process trains under (``mode``: ``auto`` or ``off``). Call before other TensorFlow ops."""
    import tensorflow as tf

    env = os.environ if env is None else env
    if mode == "off":
        return Distribution(tf.distribute.get_strategy(), "default")
    tf_config = _tf_config(env)
    if tf_config is None:
        tf_config = slurm_tf_config(env, port)
        if tf_config is not None:
            env["TF_CONFIG"] = json.dumps(tf_config)
            log.info("TF_CONFIG from SLURM: %s", env["TF_CONFIG"])
    if cluster_size(tf_config) > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        patch_keras_multi_worker()
        task = tf_config["task"]
        return Distribution(strategy, "multi_worker", cluster_size(tf_config), int(task.get("index", 0)),
                            is_chief(tf_config), strategy.num_replicas_in_sync, tf_config)
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        return Distribution(strategy, "mirrored", replicas=strategy.num_replicas_in_sync)
    return Distribution(tf.distribute.get_strategy(), "default")


_PATCHED = False


def patch_keras_multi_worker() -> None:
    """Two fixes that ``model.fit`` of Keras 3 (checked on 3.15) needs under ``MultiWorkerMirroredStrategy``.

    Keras 3 reduces (1) the first data batch and (2) the per-replica metric
    results with ``strategy.reduce(..., axis=0)``, which fails across workers
    (keras-team/keras#20585). The data batch is only used to build the model's
    shapes, so its local part serves; metric results are scalars, so their mean
    over replicas is a reduce with ``axis=None``.
    """
    global _PATCHED
    if _PATCHED:
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if tf_trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                local = self.distribute_strategy.experimental_local_results
                data_batch = tf.nest.map_structure(
                    lambda v: local(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v, batch
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    _PATCHED = True
