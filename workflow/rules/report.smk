# Stages 7-8: cohort tables and figures across samples, then the self-contained HTML summary.

#: Cohort outputs of `aggregate`, read by `report` (names are the package's output keys)
AGGREGATE = {
    "metrics": "results/aggregate/metrics.tsv",
    "spots": "results/aggregate/domains.tsv",
    "matching": "results/aggregate/domain_matching.tsv",
    "links": "results/aggregate/links.tsv",
    "pathways": "results/aggregate/pathways.tsv",
    "prediction": "results/aggregate/prediction.tsv",
    "domains_figure": "results/aggregate/figures/domains.png",
    "composition_figure": "results/aggregate/figures/composition.png",
    "registration_figure": "results/aggregate/figures/registration.png",
    "training_figure": "results/aggregate/figures/training.png",
    "umap_figure": "results/aggregate/figures/umap.png",
    "imputation_figure": "results/aggregate/figures/imputation.png",
    "associations_figure": "results/aggregate/figures/links.png",
    "pathways_figure": "results/aggregate/figures/pathways.png",
    "metrics_figure": "results/aggregate/figures/metrics.png",
}
#: Figure captions, shared by `snakemake --report` and the summary page
CAPTIONS = sorted(
    str(p) for p in Path(workflow.basedir, "workflow", "report").glob("*.rst")
)


rule checksums:
    input:
        unpack(provenance_inputs),
    output:
        "results/provenance/{sample}.sha256.tsv",
    log:
        "results/logs/checksums/{sample}.log",
    benchmark:
        "results/benchmarks/checksums/{sample}.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=60,
    script:
        "../../scripts/checksums.py"


rule aggregate:
    input:
        ingest=per_sample("results/{sample}/ingest/qc.json"),
        st=per_sample("results/{sample}/ingest/st.h5ad"),
        align=per_sample("results/{sample}/align/qc.json"),
        msi_aligned=per_sample("results/{sample}/align/msi_aligned.h5ad"),
        paired=per_sample("results/{sample}/align/paired.h5mu"),
        impute=per_sample("results/{sample}/impute/metrics.json"),
        imputed=per_sample("results/{sample}/impute/imputed.h5mu"),
        scores=per_sample("results/{sample}/impute/feature_scores.tsv"),
        models=per_sample("results/{sample}/model/{model}/metrics.json", model=MODELS),
        train_logs=per_sample(
            "results/{sample}/model/{model}/train_log.tsv", model=MODELS
        ),
        embeddings=per_sample(
            "results/{sample}/model/{model}/embedding.h5ad", model=MODELS
        ),
        domains=per_sample(
            "results/{sample}/domains/{model}_metrics.json", model=MODELS
        ),
        labels=per_sample("results/{sample}/domains/{model}.tsv", model=MODELS),
        interpret=per_sample("results/{sample}/interpret/summary.json"),
        associations=per_sample("results/{sample}/interpret/associations.tsv"),
        pathways=per_sample("results/{sample}/interpret/pathways.tsv"),
        truth=all_truth,
    output:
        metrics=report(
            AGGREGATE["metrics"],
            caption="../report/metrics.rst",
            category="6. Across samples",
        ),
        spots=AGGREGATE["spots"],
        matching=report(
            AGGREGATE["matching"],
            caption="../report/matching.rst",
            category="4. Models and domains",
            subcategory="All samples",
        ),
        links=report(
            AGGREGATE["links"],
            caption="../report/links_table.rst",
            category="5. Biology",
            subcategory="All samples",
        ),
        pathways=report(
            AGGREGATE["pathways"],
            caption="../report/pathways_table.rst",
            category="5. Biology",
            subcategory="All samples",
        ),
        prediction=report(
            AGGREGATE["prediction"],
            caption="../report/prediction_table.rst",
            category="3. Imputation",
            subcategory="All samples",
        ),
        domains_figure=report(
            AGGREGATE["domains_figure"],
            caption="../report/domains.rst",
            category="4. Models and domains",
            subcategory="All samples",
        ),
        composition_figure=report(
            AGGREGATE["composition_figure"],
            caption="../report/composition.rst",
            category="4. Models and domains",
            subcategory="All samples",
        ),
        registration_figure=report(
            AGGREGATE["registration_figure"],
            caption="../report/registration.rst",
            category="2. Registration",
            subcategory="All samples",
        ),
        training_figure=report(
            AGGREGATE["training_figure"],
            caption="../report/training.rst",
            category="4. Models and domains",
            subcategory="All samples",
        ),
        umap_figure=report(
            AGGREGATE["umap_figure"],
            caption="../report/umap.rst",
            category="4. Models and domains",
            subcategory="All samples",
        ),
        imputation_figure=report(
            AGGREGATE["imputation_figure"],
            caption="../report/imputation.rst",
            category="3. Imputation",
            subcategory="All samples",
        ),
        associations_figure=report(
            AGGREGATE["associations_figure"],
            caption="../report/links.rst",
            category="5. Biology",
            subcategory="All samples",
        ),
        pathways_figure=report(
            AGGREGATE["pathways_figure"],
            caption="../report/pathways.rst",
            category="5. Biology",
            subcategory="All samples",
        ),
        metrics_figure=report(
            AGGREGATE["metrics_figure"],
            caption="../report/metrics_figure.rst",
            category="6. Across samples",
        ),
    log:
        "results/logs/aggregate/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate/aggregate.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=scaled(4000, per_input_mb=2),
        runtime=scaled(20),
    params:
        models=MODELS,
        samples=list(samples.index),
        truth=samples["truth"].to_dict() if "truth" in samples else {},
        conditions=samples["condition"].to_dict() if "condition" in samples else {},
        reference_model=config["interpret"]["domain_model"],
        fdr=config["interpret"]["fdr"],
        # only the report settings the cohort figures use: a new title reruns the report alone
        report={
            k: config["report"][k]
            for k in ("umap_max_spots", "top_links")
            if k in config["report"]
        },
        seed=config["seed"],
    script:
        "../../scripts/aggregate.py"


rule cohort:
    input:
        spots=AGGREGATE["spots"],
        paired=per_sample("results/{sample}/align/paired.h5mu"),
    output:
        table=report(
            "results/aggregate/conditions.tsv",
            caption="../report/conditions_table.rst",
            category="5. Biology",
            subcategory="All samples",
        ),
        abundance=report(
            "results/aggregate/condition_domains.tsv",
            caption="../report/condition_domains.rst",
            category="5. Biology",
            subcategory="All samples",
        ),
        figure=report(
            "results/aggregate/figures/conditions.png",
            caption="../report/conditions.rst",
            category="5. Biology",
            subcategory="All samples",
        ),
    log:
        "results/logs/cohort/cohort.log",
    benchmark:
        "results/benchmarks/cohort/cohort.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=scaled(2000, per_input_mb=2),
        runtime=scaled(10),
    params:
        samples=list(samples.index),
        conditions=samples["condition"].to_dict() if "condition" in samples else {},
        batches=samples["batch"].to_dict() if "batch" in samples else {},
        reference_model=config["interpret"]["domain_model"],
        fdr=config["interpret"]["fdr"],
    script:
        "../../scripts/cohort.py"


rule report:
    input:
        **AGGREGATE,
        ingest_fig=per_sample("results/{sample}/ingest/qc.png"),
        align_fig=per_sample("results/{sample}/align/overlay.png"),
        impute_fig=per_sample("results/{sample}/impute/prediction.png"),
        interpret_fig=per_sample("results/{sample}/interpret/associations.png"),
        markers_fig=per_sample("results/{sample}/interpret/markers.png"),
        ingest_qc=per_sample("results/{sample}/ingest/qc.json"),
        align_qc=per_sample("results/{sample}/align/qc.json"),
        interpret=per_sample("results/{sample}/interpret/summary.json"),
        checksums=per_sample("results/provenance/{sample}.sha256.tsv"),
        cohort=cohort_outputs,
        captions=CAPTIONS,
    output:
        html=report(
            "results/report.html",
            caption="../report/summary.rst",
            category="0. Summary",
        ),
    log:
        "results/logs/report/report.log",
    benchmark:
        "results/benchmarks/report/report.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=scaled(2000, per_input_mb=1),
        runtime=scaled(10),
    params:
        aggregate=list(AGGREGATE),
        report=config["report"],
        config=config,
        models=MODELS,
        reference_model=config["interpret"]["domain_model"],
        samples=list(samples.index),
        samples_info=samples.to_dict(orient="index"),
    script:
        "../../scripts/report.py"
