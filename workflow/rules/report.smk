# Stages 7-8: metrics and figures across samples, then the self-contained HTML summary.


rule aggregate:
    input:
        ingest=per_sample("results/{sample}/ingest/qc.json"),
        align=per_sample("results/{sample}/align/qc.json"),
        impute=per_sample("results/{sample}/impute/metrics.json"),
        models=per_sample("results/{sample}/model/{model}/metrics.json", model=MODELS),
        domains=per_sample(
            "results/{sample}/domains/{model}_metrics.json", model=MODELS
        ),
        labels=per_sample("results/{sample}/domains/{model}.tsv", model=MODELS),
        embeddings=per_sample(
            "results/{sample}/model/{model}/embedding.h5ad", model=MODELS
        ),
        interpret=per_sample("results/{sample}/interpret/summary.json"),
    output:
        metrics=report(
            "results/aggregate/metrics.tsv",
            caption="../report/metrics.rst",
            category="6. Across samples",
        ),
        domains=report(
            "results/aggregate/figures/domains.png",
            caption="../report/domains.rst",
            category="4. Domains",
        ),
        summary=report(
            "results/aggregate/figures/metrics.png",
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
    script:
        "../../scripts/aggregate.py"


rule report:
    input:
        metrics="results/aggregate/metrics.tsv",
        figures=[
            "results/aggregate/figures/domains.png",
            "results/aggregate/figures/metrics.png",
        ],
        ingest_fig=per_sample("results/{sample}/ingest/qc.png"),
        align_fig=per_sample("results/{sample}/align/overlay.png"),
        impute_fig=per_sample("results/{sample}/impute/prediction.png"),
        interpret_fig=per_sample("results/{sample}/interpret/associations.png"),
        align_qc=per_sample("results/{sample}/align/qc.json"),
        interpret=per_sample("results/{sample}/interpret/summary.json"),
        associations=per_sample("results/{sample}/interpret/associations.tsv"),
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
        report=config["report"],
        config=config,
        samples=list(samples.index),
        samples_info=samples.to_dict(orient="index"),
    script:
        "../../scripts/report.py"
