# The out-of-core shuffle in parallel jobs (docs/shards.md): a plan from the source tables, one scatter job per
# cutout batch, shards.gather_jobs gather jobs, each writing the shards of a range of buckets, then one
# directory of shards with the manifest and summary (hard links: no pixel copied).


rule plan_shards:
    input:
        expand(rules.make_cutouts.output, batch=BATCHES),
    output:
        "results/shuffle/plan.json",
    log:
        "logs/shards/plan.log",
    benchmark:
        "results/benchmarks/shards/plan.tsv"
    conda:
        "../../envs/io.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        shards=SHARD_PLAN_SETTINGS,
        folds=FOLDS if FOLDS >= 2 else 0,
        channels=config["cutouts"]["channels"],
    script:
        "../scripts/plan_shards.py"


rule scatter_shards:
    input:
        plan=rules.plan_shards.output[0],
        cutouts=rules.make_cutouts.output[0],
    output:
        temp(directory("results/shuffle/scatter/{batch}")),
    log:
        "logs/shards/scatter/{batch}.log",
    benchmark:
        "results/benchmarks/shards/scatter/{batch}.tsv"
    conda:
        "../../envs/io.yaml"
    threads: 1
    resources:
        # a few chunks of pixels (a 16th of the budget each) and the batch's manifest rows
        mem_mb=config["shards"]["memory_mb"] // 4 + 1024,
        runtime=60,
    script:
        "../scripts/scatter_shards.py"


rule gather_shards:
    input:
        plan=rules.plan_shards.output[0],
        scatter=expand(rules.scatter_shards.output, batch=BATCHES),
    output:
        temp(directory("results/shuffle/gather/{part}")),
    log:
        "logs/shards/gather/{part}.log",
    benchmark:
        "results/benchmarks/shards/gather/{part}.tsv"
    conda:
        "../../envs/io.yaml"
    threads: 1
    resources:
        # the shuffle's pixel budget plus the interpreter and libraries
        mem_mb=config["shards"]["memory_mb"] + 1024,
        runtime=120,
    params:
        parts=config["shards"]["gather_jobs"],
    script:
        "../scripts/gather_shards.py"


rule build_shards:
    input:
        plan=rules.plan_shards.output[0],
        parts=expand(
            rules.gather_shards.output, part=range(config["shards"]["gather_jobs"])
        ),
    output:
        directory("results/shards"),
    log:
        "logs/shards/build.log",
    benchmark:
        "results/benchmarks/shards/build.tsv"
    conda:
        "../../envs/io.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    script:
        "../scripts/build_shards.py"
