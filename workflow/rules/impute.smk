# Stage 3: denoise each modality and predict one from the other, scored on held-out blocks.
# The joint models are cross-validated here (refitted per held-out block with the model
# config of impute.models), independently of the model rule, which fits on all spots.


rule impute:
    input:
        paired="results/{sample}/align/paired.h5mu",
        # every ST spot and its MSI coverage: the spots align could not pair get their
        # metabolites predicted from their genes
        st="results/{sample}/ingest/st.h5ad",
        coverage="results/{sample}/align/coverage.tsv",
    output:
        imputed="results/{sample}/impute/imputed.h5mu",
        unmeasured="results/{sample}/impute/unmeasured_msi.h5ad",
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
    threads: impute_threads
    resources:
        mem_mb=impute_mem,
        runtime=impute_runtime,
        gpu=impute_gpu_request,
    params:
        impute=config["impute"],
        models=impute_model_params,
        seed=config["seed"],
        device=config["device"],
    script:
        "../../scripts/impute.py"
