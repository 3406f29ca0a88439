"""SpatialFuse: spatial metabolomics (MSI) + spatial transcriptomics integration.

The package holds all logic; the Snakemake rules call it through thin adapters in ``scripts/``.
Sub-packages, one per stage: ``io`` (readers/writers), ``msi`` and ``st`` (preprocessing),
``align``, ``impute``, ``models``, ``interpret``, ``plots``, ``report``, ``simulate``.
"""

__version__ = "0.1.0"
