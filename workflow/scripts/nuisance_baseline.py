"""Rule nuisance_baseline: P(fake) from catalogue quantities alone, cross-fitted on the CNN's folds."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.evaluation.baseline import FEATURES, cross_fit  # noqa: E402

man = pd.read_csv(Path(snakemake.input[0]) / "manifest.csv", dtype={"brick": str, "rs": str})
pred = cross_fit(man, snakemake.params.seed)
logging.getLogger("realfake").info("baseline on %s: %d examples scored", ", ".join(FEATURES), len(pred))
with atomic_path(snakemake.output[0]) as tmp:
    pred.to_csv(tmp, index=False)
