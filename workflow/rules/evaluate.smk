rule evaluate_cnn:
    input:
        model=rules.train_cnn.output[0],
        shards=rules.build_shards.output[0],
    output:
        metrics=report(
            "results/evaluation/metrics.json",
            caption="../report/metrics.rst",
            category="Evaluation",
        ),
        predictions="results/evaluation/predictions.csv",
        roc=report(
            "results/evaluation/roc.png",
            caption="../report/roc.rst",
            category="Evaluation",
        ),
    log:
        "logs/evaluate_cnn.log",
    benchmark:
        "results/benchmarks/evaluate_cnn.tsv"
    conda:
        "../../envs/tf.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        evaluate=config["evaluate"],
    script:
        "../scripts/evaluate_cnn.py"


rule plot_mosaic:
    input:
        predictions=rules.evaluate_cnn.output.predictions,
        shards=rules.build_shards.output[0],
    output:
        report(
            "results/evaluation/mosaic.png",
            caption="../report/mosaic.rst",
            category="Mosaics",
        ),
    log:
        "logs/plot_mosaic.log",
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        evaluate=config["evaluate"],
        channels=config["cutouts"]["channels"],
    script:
        "../scripts/plot_mosaic.py"
