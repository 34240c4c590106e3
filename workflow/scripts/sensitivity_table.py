"""Rule sensitivity_table: the grid's scenarios in one table, its figure, and the sentence the verdict quotes."""

from realfake.logs import to_file

to_file(snakemake.log[0])

import json  # noqa: E402
import logging  # noqa: E402

from realfake.atomic import atomic_path  # noqa: E402
from realfake.evaluation.sensitivity import figure, quote, table  # noqa: E402

metrics = {tuple(s): json.loads(open(p).read()) for s, p in zip(snakemake.params.scenarios, snakemake.input)}
df = table(metrics)
sentence = quote(df)
logging.getLogger("realfake").info("%s\n%s", df.to_string(index=False), sentence)
with atomic_path(snakemake.output.table) as tmp:
    df.to_csv(tmp, index=False)
figure(df, snakemake.output.figure)
summary = {"sentence": sentence, "folds": snakemake.params.folds, "scenarios": df.to_dict(orient="records")}
with atomic_path(snakemake.output.summary) as tmp:
    tmp.write_text(json.dumps(summary, indent=1, default=float))
