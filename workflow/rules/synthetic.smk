rule mock_release:
    output:
        directory(config["synthetic"]["root"]),
    log:
        "logs/mock_release.log",
    benchmark:
        "results/benchmarks/mock_release.tsv"
    conda:
        "../../envs/io.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        bricks=BRICKS,
        synthetic=config["synthetic"],
    script:
        "../scripts/mock_release.py"
