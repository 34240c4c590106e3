"""Rule capacity: the planted scenarios tested by the verdict's family; what this run finds, and its figure."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.evaluation.capacity import capacity, figure  # noqa: E402

read = dict(dtype={"brick": str, "kind": str})
tables = [pd.read_csv(p, **read) for p in snakemake.input.statistics]
table = pd.concat([t for t in tables if len(t)] or tables, ignore_index=True)
# the planted test has at most as many pairs as the run's own test (every pair of the shards is tested once)
man = pd.read_csv(Path(snakemake.input.shards) / "manifest.csv", usecols=["pair"])
n_pairs = int((man["pair"] > 0).sum() // 2) or None
result = capacity(table, snakemake.params.alpha, n_pairs, snakemake.params.seed)
logging.getLogger("realfake").info("%s\n%s", pd.DataFrame(result["scenarios"]).to_string(index=False),
                                   result["statement"])
figure(result, snakemake.output.figure)
with atomic_path(snakemake.output.json) as tmp:
    tmp.write_text(json.dumps(result, indent=1, default=float))
