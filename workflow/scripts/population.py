"""Rule population: can the catalogue alone tell the fakes from the reals (every selected example, matched or not)?"""

from realfake.logs import to_file

to_file(snakemake.log[0])

import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.cutouts.batches import brick_files  # noqa: E402
from realfake.cutouts.brickfile import read_sources  # noqa: E402
from realfake.evaluation.population import population  # noqa: E402

src = pd.concat([read_sources(p) for p in brick_files(snakemake.input.cutouts)], ignore_index=True)
man = pd.read_csv(Path(snakemake.input.shards) / "manifest.csv", usecols=["label"])
m = population(src, snakemake.params.evaluate, snakemake.params.folds,
               pairs=int((man["label"] == 1).sum()) if snakemake.params.matched else None)
logging.getLogger("realfake").info(m["sentence"])
with atomic_path(snakemake.output[0]) as tmp:
    tmp.write_text(json.dumps(m, indent=1, default=float))
