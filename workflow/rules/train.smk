rule train_cnn:
    input:
        rules.build_shards.output[0],
    output:
        "results/model/model.keras",
    log:
        "logs/train_cnn.log",
    benchmark:
        "results/benchmarks/train_cnn.tsv"
    conda:
        "../../envs/tf.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        model=config["model"],
        train=config["train"],
    script:
        "../scripts/train_cnn.py"
