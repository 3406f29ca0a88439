# Stages 4-5: joint latent models per sample, then spatial domains from each embedding.


rule model:
    input:
        paired="results/{sample}/align/paired.h5mu",
    output:
        embedding="results/{sample}/model/{model}/embedding.h5ad",
        checkpoint="results/{sample}/model/{model}/checkpoint.pt",
        train_log="results/{sample}/model/{model}/train_log.tsv",
        metrics="results/{sample}/model/{model}/metrics.json",
    log:
        "results/logs/model/{sample}_{model}.log",
    benchmark:
        "results/benchmarks/model/{sample}_{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    # one CPU thread: results must not depend on the cores granted (spatialfuse.models.api
    # CPU_THREADS); more models then train side by side
    threads: 1
    resources:
        mem_mb=scaled(8000, per_input_mb=6),
        runtime=scaled(60),
        gpu=gpu_request,
    params:
        model=model_params,
        seed=config["seed"],
        device=config["device"],
    script:
        "../../scripts/model.py"


rule domains:
    input:
        embedding="results/{sample}/model/{model}/embedding.h5ad",
        truth=truth_input,
    output:
        domains="results/{sample}/domains/{model}.tsv",
        metrics="results/{sample}/domains/{model}_metrics.json",
    log:
        "results/logs/domains/{sample}_{model}.log",
    benchmark:
        "results/benchmarks/domains/{sample}_{model}.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 1
    resources:
        mem_mb=scaled(2000, per_input_mb=4),
        runtime=scaled(10),
    params:
        domains=config["domains"],
        seed=config["seed"],
    script:
        "../../scripts/domains.py"
