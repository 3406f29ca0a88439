"""Adapter: SHA-256 of every input file of one sample (for the report's provenance)."""

from spatialfuse.logging_utils import setup_logging
from spatialfuse.report.provenance import input_checksums

sm = snakemake  # noqa: F821
log = setup_logging(sm.log[0])
table = input_checksums({k: list(v) if not isinstance(v, str) else v
                         for k, v in sm.input.items()}, sm.wildcards.sample)
table.to_csv(sm.output[0], sep="\t", index=False)
log.info("%d input files hashed (%.1f MB)", len(table), table["bytes"].sum() / 1e6)
