"""Stage 6: domain markers, metabolite–gene associations, pathway enrichment."""

from .associations import associate
from .markers import domain_markers
from .pathways import load_pathways, pathway_enrichment
from .stage import run_interpret

__all__ = ["associate", "domain_markers", "load_pathways", "pathway_enrichment", "run_interpret"]
