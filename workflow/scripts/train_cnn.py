"""Rule train_cnn: train the configured network on one fold's training shards.

One task, in this process; several (train.nodes x train.tasks_per_node > 1), as SLURM tasks started here with srun,
each a `python -m realfake.training.train` worker of one MultiWorkerMirroredStrategy (realfake.training.distribute.start_tasks).
"""

from realfake.logs import to_file

to_file(snakemake.log[0])

import os  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.training.distribute import task_layout  # noqa: E402

cfg = {"model": snakemake.params.model, "train": snakemake.params.train}
nodes, per_node = task_layout(cfg["train"])
if nodes * per_node > 1:
    from realfake.training.distribute import start_tasks

    # each task gets the job's CPUs per task: the profile's cpus_per_task as sbatch was given it (else the rule's
    # threads, which the executor gives sbatch), or the CPUs per task of the salloc around a plain snakemake
    cpus = snakemake.resources.get("cpus_per_task") or 0
    if cpus <= 0:
        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK") or snakemake.threads)
    start_tasks(snakemake.input.shards, snakemake.output.model, cfg, cpus_per_task=cpus,
                device=snakemake.params.device, launcher=snakemake.resources.get("mpi", "srun"),
                run_dir=snakemake.input.state)
else:
    from realfake.training.train import fit

    fit(snakemake.input.shards, snakemake.output.model, cfg, threads=snakemake.threads,
        device=snakemake.params.device, run_dir=snakemake.input.state)
# the run's per-epoch log and record, finished, as the job's outputs
for name, output in (("history.csv", snakemake.output.history), ("run.json", snakemake.output.record)):
    with atomic_path(output) as tmp:
        shutil.copyfile(Path(snakemake.input.state) / name, tmp)
