# The sensitivity grid (docs/evaluation.md, "Sensitivity"): every scenario (source, kind, size) is the pipeline
# from shards to verdict again, under results/sensitivity/<source>/<kind>/<size>/, on examples whose fakes carry one
# known defect. planted: the run's own cutouts, half of each brick's reals perturbed (shared cutouts, any release);
# synthetic: a synthetic release of its own rendered with the defect. The stages are the main run's rules, reused.


rule plant_cutouts:
    input:
        rules.make_cutouts.output[0],
    output:
        directory("results/sensitivity/planted/{kind}/{size}/cutouts/{batch}"),
    log:
        "logs/sensitivity/planted/{kind}/{size}/plant_cutouts/{batch}.log",
    benchmark:
        "results/benchmarks/sensitivity/planted/{kind}/{size}/plant_cutouts/{batch}.tsv"
    conda:
        "../../envs/io.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        seed=SENSITIVITY["seed"],
    script:
        "../scripts/plant_cutouts.py"


use rule mock_release as sensitivity_mock_release with:
    output:
        directory("results/sensitivity/synthetic/{kind}/{size}/release"),
    log:
        "logs/sensitivity/synthetic/{kind}/{size}/mock_release.log",
    benchmark:
        "results/benchmarks/sensitivity/synthetic/{kind}/{size}/mock_release.tsv"
    params:
        synthetic=lambda w: synthetic_defect(config["synthetic"], w.kind, w.size),


use rule make_cutouts as sensitivity_make_cutouts with:
    input:
        rules.sensitivity_mock_release.output[0],
    output:
        directory("results/sensitivity/synthetic/{kind}/{size}/cutouts/{batch}"),
    log:
        "logs/sensitivity/synthetic/{kind}/{size}/cutouts/{batch}.log",
    benchmark:
        "results/benchmarks/sensitivity/synthetic/{kind}/{size}/cutouts/{batch}.tsv"
    params:
        settings=synthetic_scenario_settings,
        config_hash=lambda w: config_hash(synthetic_scenario_settings(w)),


use rule plan_shards as sensitivity_plan_shards with:
    input:
        scenario_paths(
            "results/sensitivity/{source}/{kind}/{size}/cutouts/{batch}", batch=BATCHES
        ),
    output:
        "results/sensitivity/{source}/{kind}/{size}/shuffle/plan.json",
    log:
        "logs/sensitivity/{source}/{kind}/{size}/shards/plan.log",
    benchmark:
        "results/benchmarks/sensitivity/{source}/{kind}/{size}/shards/plan.tsv"
    params:
        shards=SHARD_PLAN_SETTINGS,
        folds=SENSITIVITY_FOLDS if SENSITIVITY_FOLDS >= 2 else 0,
        channels=config["cutouts"]["channels"],


use rule scatter_shards as sensitivity_scatter_shards with:
    input:
        plan=rules.sensitivity_plan_shards.output[0],
        cutouts="results/sensitivity/{source}/{kind}/{size}/cutouts/{batch}",
    output:
        temp(
            directory(
                "results/sensitivity/{source}/{kind}/{size}/shuffle/scatter/{batch}"
            )
        ),
    log:
        "logs/sensitivity/{source}/{kind}/{size}/shards/scatter/{batch}.log",
    benchmark:
        "results/benchmarks/sensitivity/{source}/{kind}/{size}/shards/scatter/{batch}.tsv"


use rule gather_shards as sensitivity_gather_shards with:
    input:
        plan=rules.sensitivity_plan_shards.output[0],
        scatter=scenario_paths(
            "results/sensitivity/{source}/{kind}/{size}/shuffle/scatter/{batch}",
            batch=BATCHES,
        ),
    output:
        temp(
            directory(
                "results/sensitivity/{source}/{kind}/{size}/shuffle/gather/{part}"
            )
        ),
    log:
        "logs/sensitivity/{source}/{kind}/{size}/shards/gather/{part}.log",
    benchmark:
        "results/benchmarks/sensitivity/{source}/{kind}/{size}/shards/gather/{part}.tsv"


use rule build_shards as sensitivity_build_shards with:
    input:
        plan=rules.sensitivity_plan_shards.output[0],
        parts=scenario_paths(
            "results/sensitivity/{source}/{kind}/{size}/shuffle/gather/{part}",
            part=range(config["shards"]["gather_jobs"]),
        ),
    output:
        directory("results/sensitivity/{source}/{kind}/{size}/shards"),
    log:
        "logs/sensitivity/{source}/{kind}/{size}/shards/build.log",
    benchmark:
        "results/benchmarks/sensitivity/{source}/{kind}/{size}/shards/build.tsv"


use rule fold_shards as sensitivity_fold_shards with:
    input:
        rules.sensitivity_build_shards.output[0],
    output:
        directory("results/sensitivity/{source}/{kind}/{size}/folds/{fold}/shards"),
    log:
        "logs/sensitivity/{source}/{kind}/{size}/fold_shards/{fold}.log",


use rule training_state as sensitivity_training_state with:
    output:
        directory("results/sensitivity/{source}/{kind}/{size}/folds/{fold}/training"),
    log:
        "logs/sensitivity/{source}/{kind}/{size}/training_state/{fold}.log",


use rule train_cnn as sensitivity_train_cnn with:
    input:
        shards=rules.sensitivity_fold_shards.output[0],
        state=rules.sensitivity_training_state.output[0],
    output:
        model="results/sensitivity/{source}/{kind}/{size}/folds/{fold}/model/model.keras",
        history="results/sensitivity/{source}/{kind}/{size}/folds/{fold}/history.csv",
        record="results/sensitivity/{source}/{kind}/{size}/folds/{fold}/run.json",
    log:
        "logs/sensitivity/{source}/{kind}/{size}/train_cnn/{fold}.log",
    benchmark:
        "results/benchmarks/sensitivity/{source}/{kind}/{size}/train_cnn/{fold}.tsv"


use rule predict_fold as sensitivity_predict_fold with:
    input:
        model=rules.sensitivity_train_cnn.output.model,
        shards=rules.sensitivity_fold_shards.output[0],
    output:
        "results/sensitivity/{source}/{kind}/{size}/folds/{fold}/predictions.csv",
    log:
        "logs/sensitivity/{source}/{kind}/{size}/predict_fold/{fold}.log",
    benchmark:
        "results/benchmarks/sensitivity/{source}/{kind}/{size}/predict_fold/{fold}.tsv"


use rule nuisance_baseline as sensitivity_nuisance_baseline with:
    input:
        rules.sensitivity_build_shards.output[0],
    output:
        "results/sensitivity/{source}/{kind}/{size}/baseline_predictions.csv",
    log:
        "logs/sensitivity/{source}/{kind}/{size}/nuisance_baseline.log",


use rule evaluate_cnn as sensitivity_evaluate with:
    input:
        predictions=scenario_paths(
            "results/sensitivity/{source}/{kind}/{size}/folds/{fold}/predictions.csv",
            fold=SENSITIVITY_FOLD_IDS,
        ),
        histories=scenario_paths(
            "results/sensitivity/{source}/{kind}/{size}/folds/{fold}/history.csv",
            fold=SENSITIVITY_FOLD_IDS,
        ),
        models=scenario_paths(
            "results/sensitivity/{source}/{kind}/{size}/folds/{fold}/model/model.keras",
            fold=SENSITIVITY_FOLD_IDS,
        ),
        baseline=rules.sensitivity_nuisance_baseline.output[0],
        shards=rules.sensitivity_build_shards.output[0],
        sensitivity=[],
    output:
        **with_pdfs(
            roc="results/sensitivity/{source}/{kind}/{size}/roc.png",
            attribution="results/sensitivity/{source}/{kind}/{size}/attribution.png",
        ),
        metrics="results/sensitivity/{source}/{kind}/{size}/metrics.json",
        predictions="results/sensitivity/{source}/{kind}/{size}/predictions.csv",
    log:
        "logs/sensitivity/{source}/{kind}/{size}/evaluate.log",
    benchmark:
        "results/benchmarks/sensitivity/{source}/{kind}/{size}/evaluate.tsv"
    params:
        folds={**FOLDS_RECORD, "k": SENSITIVITY_FOLDS, "note": ""},


rule sensitivity_table:
    input:
        sensitivity_metrics(),
    output:
        **with_pdfs(
            figure=report(
                "results/sensitivity/sensitivity.png",
                caption="../report/sensitivity.rst",
                category="Sensitivity",
            ),
        ),
        table="results/sensitivity/sensitivity.csv",
        summary="results/sensitivity/sensitivity.json",
    log:
        "logs/sensitivity/table.log",
    localrule: True
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        scenarios=SCENARIOS,
        folds=SENSITIVITY_FOLDS,
    script:
        "../scripts/sensitivity_table.py"
