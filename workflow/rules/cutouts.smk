rule make_cutouts:
    input:
        get_release(),
    output:
        directory("results/cutouts/{batch}"),
    log:
        "logs/cutouts/{batch}.log",
    benchmark:
        "results/benchmarks/cutouts/{batch}.tsv"
    conda:
        "../../envs/io.yaml"
    # bricks of the batch cut in parallel, one per thread; memory grows with them
    threads: 4
    resources:
        mem_mb=lambda wildcards, threads: 500 + 1500 * threads,
        runtime=120,
    params:
        bricks=batch_bricks_of,
        settings=cutout_inputs(config),
        on_missing=config["cutouts"]["on_missing"],
        on_error=config["cutouts"]["on_error"],
        config_hash=config_hash(cutout_inputs(config)),
    script:
        "../scripts/make_cutouts.py"


rule summarise_cutouts:
    input:
        expand(rules.make_cutouts.output, batch=BATCHES),
    output:
        summary=report(
            "results/cutouts/summary.txt",
            caption="../report/cutouts_summary.rst",
            category="Cutouts",
        ),
        bricks="results/cutouts/bricks.csv",
        cutflow="results/cutouts/cutflow.csv",
        failures="results/cutouts/failures.csv",
    log:
        "logs/summarise_cutouts.log",
    conda:
        "../../envs/io.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        n_bricks=len(BRICKS),
    script:
        "../scripts/summarise_cutouts.py"
