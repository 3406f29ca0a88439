# Stage 3: denoise each modality and predict one from the other, scored on held-out blocks.


rule impute:
    input:
        paired="results/{sample}/align/paired.h5mu",
    output:
        imputed="results/{sample}/impute/imputed.h5mu",
        metrics="results/{sample}/impute/metrics.json",
        scores="results/{sample}/impute/feature_scores.tsv",
        figure=report(
            "results/{sample}/impute/prediction.png",
            caption="../report/impute.rst",
            category="3. Imputation",
            subcategory="{sample}",
        ),
    log:
        "results/logs/impute/{sample}.log",
    benchmark:
        "results/benchmarks/impute/{sample}.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=scaled(4000, per_input_mb=6),
        runtime=scaled(30),
    params:
        impute=config["impute"],
        seed=config["seed"],
    script:
        "../../scripts/impute.py"
