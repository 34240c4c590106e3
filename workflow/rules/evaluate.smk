rule processing_check:
    input:
        expand(rules.make_cutouts.output, batch=BATCHES),
    output:
        **with_pdfs(
            figure=report(
                "results/evaluation/processing.png",
                caption="../report/processing.rst",
                category="Evaluation",
            ),
        ),
        json="results/evaluation/processing.json",
    log:
        "logs/processing_check.log",
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        tolerances=config["evaluate"]["processing_tolerances"],
        alpha=config["evaluate"]["alpha"],
    script:
        "../scripts/processing_check.py"


rule population:
    input:
        cutouts=expand(rules.make_cutouts.output, batch=BATCHES),
        shards=rules.build_shards.output[0],
    output:
        "results/evaluation/population.json",
    log:
        "logs/population.log",
    conda:
        "../../envs/plot.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        evaluate=config["evaluate"],
        folds=config["evaluate"]["folds"],
        matched=config["shards"]["balance"] == "matched",
    script:
        "../scripts/population.py"


# What this run can find (realfake.evaluation.capacity): the sensitivity grid's planted defects on the run's own real galaxies,
# paired by its calipers and tested by the verdict's family of image statistics; the bound a "no difference" states
rule plant_statistics:
    input:
        rules.make_cutouts.output[0],
    output:
        "results/capacity/{batch}.csv.gz",
    log:
        "logs/capacity/{batch}.log",
    benchmark:
        "results/benchmarks/capacity/{batch}.tsv"
    conda:
        "../../envs/io.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        grid=PLANTED_GRID,
        plantings=SENSITIVITY["plantings"],
        seed=SENSITIVITY["seed"],
        calipers=config["shards"]["match"],
        null_row=SENSITIVITY["null_row"],
        max_reals=SENSITIVITY["capacity"]["max_reals_per_brick"],
        fraction=CAPACITY_FRACTION,
    script:
        "../scripts/plant_statistics.py"


rule capacity:
    input:
        statistics=expand(rules.plant_statistics.output, batch=BATCHES),
        shards=rules.build_shards.output[0],
    output:
        **with_pdfs(
            figure=report(
                "results/evaluation/capacity.png",
                caption="../report/capacity.rst",
                category="Evaluation",
            ),
        ),
        json="results/evaluation/capacity.json",
    log:
        "logs/capacity.log",
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        alpha=config["evaluate"]["alpha"],
        seed=config["evaluate"]["seed"],
    script:
        "../scripts/capacity.py"


rule nuisance_baseline:
    input:
        rules.build_shards.output[0],
    output:
        "results/evaluation/baseline_predictions.csv",
    log:
        "logs/nuisance_baseline.log",
    conda:
        "../../envs/plot.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        seed=config["evaluate"]["seed"],
    script:
        "../scripts/nuisance_baseline.py"


rule evaluate_cnn:
    input:
        predictions=expand(rules.predict_fold.output[0], fold=FOLD_IDS),
        histories=expand(rules.train_cnn.output.history, fold=FOLD_IDS),
        models=expand(rules.train_cnn.output.model, fold=FOLD_IDS),
        baseline=rules.nuisance_baseline.output[0],
        shards=rules.build_shards.output[0],
        processing=rules.processing_check.output.json,
        population=rules.population.output[0],
        capacity=rules.capacity.output.json,
        replicates=expand(
            rules.replicate_predict_fold.output[0],
            replicate=REPLICATE_IDS,
            fold=FOLD_IDS,
        ),
        sensitivity=sensitivity_in_verdict,
    output:
        **with_pdfs(
            roc=report(
                "results/evaluation/roc.png",
                caption="../report/roc.rst",
                category="Evaluation",
            ),
            attribution=report(
                "results/evaluation/attribution.png",
                caption="../report/attribution.rst",
                category="Why",
            ),
        ),
        metrics=report(
            "results/evaluation/metrics.json",
            caption="../report/metrics.rst",
            category="Evaluation",
        ),
        predictions="results/evaluation/predictions.csv",
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
        epochs=config["train"]["epochs"],
        monitor=config["train"]["early_stopping_monitor"],
        folds=FOLDS_RECORD,
        channels=config["cutouts"]["channels"],
    script:
        "../scripts/evaluate_cnn.py"


rule plot_evaluation:
    input:
        predictions=rules.evaluate_cnn.output.predictions,
        metrics=rules.evaluate_cnn.output.metrics,
        histories=rules.evaluate_cnn.input.histories,
        shards=rules.build_shards.output[0],
    output:
        **with_pdfs(
            binned=report(
                "results/evaluation/binned.png",
                caption="../report/binned.rst",
                category="Evaluation",
            ),
            calibration=report(
                "results/evaluation/calibration.png",
                caption="../report/calibration.rst",
                category="Evaluation",
            ),
            training=report(
                "results/evaluation/training.png",
                caption="../report/training.rst",
                category="Training",
            ),
            folds=report(
                "results/evaluation/folds.png",
                caption="../report/folds.rst",
                category="Evaluation",
            ),
            statistics=report(
                "results/evaluation/statistics.png",
                caption="../report/statistics.rst",
                category="Why",
            ),
        ),
        statistics_json="results/evaluation/image_statistics.json",
    log:
        "logs/plot_evaluation.log",
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        channels=config["cutouts"]["channels"],
    script:
        "../scripts/plot_evaluation.py"


rule plot_mosaic:
    input:
        predictions=rules.evaluate_cnn.output.predictions,
        shards=rules.build_shards.output[0],
    output:
        **with_pdfs(
            pairs=report(
                "results/evaluation/mosaic.png",
                caption="../report/mosaic.rst",
                category="Mosaics",
                subcategory="matched pairs",
            ),
            extremes=report(
                "results/evaluation/mosaic_extremes.png",
                caption="../report/mosaic_extremes.rst",
                category="Mosaics",
                subcategory="most confident",
            ),
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
