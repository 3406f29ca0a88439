# Stage 6: domain markers, metabolite-gene associations, pathway enrichment.


rule interpret:
    input:
        paired="results/{sample}/align/paired.h5mu",
        domains=domain_model_tsv,
        truth=truth_input,
        pathway_table=pathway_table_input,
    output:
        markers="results/{sample}/interpret/markers.tsv",
        associations="results/{sample}/interpret/associations.tsv",
        associations_domains="results/{sample}/interpret/associations_domains.tsv",
        pathways="results/{sample}/interpret/pathways.tsv",
        summary="results/{sample}/interpret/summary.json",
        figure=report(
            "results/{sample}/interpret/associations.png",
            caption="../report/associations.rst",
            category="5. Biology",
            subcategory="{sample}",
        ),
        markers_figure=report(
            "results/{sample}/interpret/markers.png",
            caption="../report/markers.rst",
            category="5. Biology",
            subcategory="{sample}",
        ),
    log:
        "results/logs/interpret/{sample}.log",
    benchmark:
        "results/benchmarks/interpret/{sample}.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=scaled(4000, per_input_mb=6),
        runtime=scaled(30),
    params:
        interpret=config["interpret"],
        seed=config["seed"],
    script:
        "../../scripts/interpret.py"
