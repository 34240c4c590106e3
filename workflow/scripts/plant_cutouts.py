"""Rule plant_cutouts: one batch's brick files, reals only, half of each brick's perturbed by the scenario's defect."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import logging  # noqa: E402
from pathlib import Path  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.cutouts.batches import brick_files  # noqa: E402
from realfake.evaluation.plant import plant_brick  # noqa: E402

w = snakemake.wildcards
files = brick_files([snakemake.input[0]])
with atomic_path(snakemake.output[0], directory=True) as tmp:
    for k, path in enumerate(files, 1):
        r = plant_brick(path, Path(tmp) / path.name, w.kind, float(w.size), snakemake.params.seed)
        logging.getLogger("realfake").info("%s (%d/%d): %d of %d real galaxies perturbed (%s %s)", r["brick"], k,
                                           len(files), r["perturbed"], r["reals"], w.kind, w.size)
