"""Rule plant_statistics: one batch's real galaxies planted with the grid's defects; their image statistics."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import logging  # noqa: E402

import pandas as pd  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.cutouts.batches import brick_files  # noqa: E402
from realfake.evaluation.capacity import brick_planted, empty_table, planted_statistics  # noqa: E402

p = snakemake.params
# at survey scale a share of the bricks (sensitivity.capacity.max_bricks), the same whichever job asks
files = [f for f in brick_files([snakemake.input[0]]) if brick_planted(f.stem, p.fraction, p.seed)]
tables = []
for k, path in enumerate(files, 1):
    tables.append(planted_statistics(path, p.grid, p.plantings, p.seed, p.calipers, p.null_row, p.max_reals))
    logging.getLogger("realfake").info("%s (%d/%d): %d planted pairs per scenario and planting", path.stem, k,
                                       len(files), len(tables[-1]) // 2 // max(1, tables[-1].groupby(
                                           ["planting", "kind", "size"]).ngroups))
with atomic_path(snakemake.output[0]) as tmp:
    (pd.concat(tables, ignore_index=True) if tables else empty_table()).to_csv(tmp, index=False, compression="gzip")
