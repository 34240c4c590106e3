# realfake: can a CNN tell injected (fake) galaxies from real ones?
# bricks -> per-brick cutout HDF5 -> shuffled train/test shards -> trained CNN -> evaluation and mosaics


from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/synthetic.smk"
include: "workflow/rules/cutouts.smk"
include: "workflow/rules/shards.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/sensitivity.smk"


rule all:
    default_target: True
    input:
        get_final_output(),


# Partial targets: `snakemake --cores 2 shards` stops after that stage.
rule cutouts:
    input:
        rules.summarise_cutouts.output,


rule shards:
    input:
        rules.build_shards.output,


rule train:
    input:
        expand(rules.train_cnn.output.model, fold=FOLD_IDS),


rule evaluate:
    input:
        get_final_output(),


# The sensitivity grid alone (make sensitivity also quotes it in the verdict)
rule sensitivity:
    input:
        rules.sensitivity_table.output,
