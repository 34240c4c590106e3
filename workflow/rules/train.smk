rule fold_shards:
    input:
        rules.build_shards.output[0],
    output:
        directory("results/folds/{fold}/shards"),
    log:
        "logs/fold_shards/{fold}.log",
    localrule: True
    conda:
        "../../envs/io.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/fold_shards.py"


# The training's working state (checkpoints/, tensorboard/, the growing history.csv, run.json), declared here and
# given to train_cnn as an input: Snakemake deletes a failed job's outputs, never its inputs, so a rerun resumes from
# the checkpoint. Its mtime is the .snakemake_timestamp written when this rule made it, which training leaves alone.
rule training_state:
    output:
        directory("results/folds/{fold}/training"),
    log:
        "logs/training_state/{fold}.log",
    localrule: True
    conda:
        "../../envs/io.yaml"
    threads: 1
    resources:
        mem_mb=100,
        runtime=1,
    script:
        "../scripts/training_state.py"


rule train_cnn:
    input:
        shards=rules.fold_shards.output[0],
        state=rules.training_state.output[0],
    output:
        model="results/folds/{fold}/model/model.keras",
        # the run's per-epoch log and reproducibility record, copied out of its state on success
        history="results/folds/{fold}/history.csv",
        record="results/folds/{fold}/run.json",
    log:
        "logs/train_cnn/{fold}.log",
    benchmark:
        "results/benchmarks/train_cnn/{fold}.tsv"
    conda:
        tf_env
    threads: 2
    resources:
        # several tasks (train.nodes x train.tasks_per_node): nodes, tasks or tasks_per_node, and mpi, with which
        # the SLURM executor runs the script as it is and the script starts the tasks with srun
        **TRAIN_TASKS,
        mem_mb=8000,
        runtime=240,
        # not Snakemake's default from the input's size, which cannot be computed where train.device reads the
        # resources to pick the conda env (a "coroutine was never awaited" warning); it writes a small model
        disk_mb=1000,
    params:
        model=config["model"],
        train=config["train"],
        device=train_device,
    script:
        "../scripts/train_cnn.py"


rule predict_fold:
    input:
        model=rules.train_cnn.output.model,
        shards=rules.train_cnn.input.shards,
    output:
        "results/folds/{fold}/predictions.csv",
    log:
        "logs/predict_fold/{fold}.log",
    benchmark:
        "results/benchmarks/predict_fold/{fold}.tsv"
    conda:
        "../../envs/tf.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/predict_fold.py"


# Replicate trainings (evaluate.replicates > 1): every fold's network trained again from another seed on the same
# shards, under results/replicates/<r>/ (replicate 0 is the run's own, above). The verdict scores each example by
# the mean of its replicates and adds the spread between their AUCs to its interval (realfake.evaluation.stats).
use rule training_state as replicate_training_state with:
    output:
        directory("results/replicates/{replicate}/folds/{fold}/training"),
    log:
        "logs/replicates/{replicate}/training_state/{fold}.log",
    localrule: True


use rule train_cnn as replicate_train_cnn with:
    input:
        shards=rules.fold_shards.output[0],
        state=rules.replicate_training_state.output[0],
    output:
        model="results/replicates/{replicate}/folds/{fold}/model/model.keras",
        history="results/replicates/{replicate}/folds/{fold}/history.csv",
        record="results/replicates/{replicate}/folds/{fold}/run.json",
    log:
        "logs/replicates/{replicate}/train_cnn/{fold}.log",
    benchmark:
        "results/benchmarks/replicates/{replicate}/train_cnn/{fold}.tsv"
    params:
        model=config["model"],
        train=replicate_train,
        device=train_device,


use rule predict_fold as replicate_predict_fold with:
    input:
        model=rules.replicate_train_cnn.output.model,
        shards=rules.fold_shards.output[0],
    output:
        "results/replicates/{replicate}/folds/{fold}/predictions.csv",
    log:
        "logs/replicates/{replicate}/predict_fold/{fold}.log",
    benchmark:
        "results/benchmarks/replicates/{replicate}/predict_fold/{fold}.tsv"
