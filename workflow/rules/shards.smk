rule build_shards:
    input:
        expand(rules.make_cutouts.output, batch=BATCHES),
    output:
        directory("results/shards"),
    log:
        "logs/build_shards.log",
    benchmark:
        "results/benchmarks/build_shards.tsv"
    conda:
        "../../envs/io.yaml"
    threads: 1
    resources:
        # the shuffle's pixel budget plus the interpreter and libraries
        mem_mb=config["shards"]["memory_mb"] + 1024,
        runtime=120,
    params:
        shards=config["shards"],
        folds=FOLDS if FOLDS >= 2 else 0,
        channels=config["cutouts"]["channels"],
    script:
        "../scripts/build_shards.py"
