# Stage 2: register MSI onto the ST frame; aggregate MSI pixels onto ST spots.


rule align:
    input:
        st="results/{sample}/ingest/st.h5ad",
        msi="results/{sample}/ingest/msi.h5ad",
        landmarks=landmarks_input,
        truth=truth_input,
    output:
        transform="results/{sample}/align/transform.json",
        msi_aligned="results/{sample}/align/msi_aligned.h5ad",
        paired="results/{sample}/align/paired.h5mu",
        coverage="results/{sample}/align/coverage.tsv",
        qc="results/{sample}/align/qc.json",
        figure=report(
            "results/{sample}/align/overlay.png",
            caption="../report/align_overlay.rst",
            category="2. Registration",
            subcategory="{sample}",
        ),
    log:
        "results/logs/align/{sample}.log",
    benchmark:
        "results/benchmarks/align/{sample}.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=scaled(4000, per_input_mb=8),
        runtime=scaled(30),
    params:
        align=config["align"],
        info=sample_info,
        seed=config["seed"],
    script:
        "../../scripts/align.py"
