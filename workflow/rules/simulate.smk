# The embedded demo: simulated paired sections with known truth, written in the real formats.


rule simulate_demo:
    output:
        st=directory("results/demo/{sample}/spaceranger"),
        imzml="results/demo/{sample}/msi/{sample}.imzML",
        ibd="results/demo/{sample}/msi/{sample}.ibd",
        truth=directory("results/demo/{sample}/truth"),
    log:
        "results/logs/simulate_demo/{sample}.log",
    benchmark:
        "results/benchmarks/simulate_demo/{sample}.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=scaled(2000),
        runtime=scaled(15),
    params:
        demo=config["demo"],
        seed=config["seed"],
    script:
        "../../scripts/simulate_demo.py"
