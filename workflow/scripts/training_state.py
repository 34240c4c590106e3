"""Rule training_state: the empty directory that train_cnn keeps its working state in (checkpoints, TensorBoard
logs, the growing history.csv, run.json); declared here so that a failed train_cnn job never deletes it."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import logging  # noqa: E402
from pathlib import Path  # noqa: E402

Path(snakemake.output[0]).mkdir(parents=True, exist_ok=True)
logging.getLogger("realfake").info("made %s", snakemake.output[0])
