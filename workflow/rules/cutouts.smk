rule make_cutouts:
    input:
        get_release(),
    output:
        "results/cutouts/{brick}.h5",
    log:
        "logs/cutouts/{brick}.log",
    benchmark:
        "results/benchmarks/cutouts/{brick}.tsv"
    conda:
        "../../envs/io.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        release=config["release"],
        selection=config["selection"],
        cutouts=config["cutouts"],
        config_hash=config_hash("release", "selection", "cutouts"),
    script:
        "../scripts/make_cutouts.py"
