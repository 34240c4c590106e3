"""Rule train_cnn: train the configured network on one fold's training shards."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.train import fit  # noqa: E402

cfg = {"model": snakemake.params.model, "train": snakemake.params.train}
fit(snakemake.input[0], snakemake.output.model, cfg, threads=snakemake.threads, device=snakemake.params.device)
with atomic_path(snakemake.output.history) as tmp:
    shutil.copyfile(Path(snakemake.output.model).parent / "history.csv", tmp)
