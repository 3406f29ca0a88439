# Stage 1: read Space Ranger / imzML / h5ad, QC, normalise, annotate m/z.


rule ingest:
    input:
        unpack(ingest_inputs),
    output:
        st="results/{sample}/ingest/st.h5ad",
        msi="results/{sample}/ingest/msi.h5ad",
        qc="results/{sample}/ingest/qc.json",
        annotations="results/{sample}/ingest/annotations.tsv",
        figure=report(
            "results/{sample}/ingest/qc.png",
            caption="../report/ingest_qc.rst",
            category="1. Ingest",
            subcategory="{sample}",
        ),
    log:
        "results/logs/ingest/{sample}.log",
    benchmark:
        "results/benchmarks/ingest/{sample}.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=scaled(4000, per_input_mb=3),
        runtime=scaled(30),
    params:
        ingest=config["ingest"],
        info=sample_info,
    script:
        "../../scripts/ingest.py"
