"""Stage 6: domain markers, metabolite–gene associations, pathway enrichment."""

from .associations import associate, candidate_names, within_domain_associations
from .markers import domain_markers, top_markers
from .pathways import load_pathways, pair_enrichment, pathway_enrichment
from .spatial_null import rotation_draws, spatial_correlation_test
from .stage import link_recovery, run_interpret

__all__ = ["associate", "candidate_names", "domain_markers", "link_recovery", "load_pathways",
           "pair_enrichment", "pathway_enrichment", "rotation_draws", "run_interpret",
           "spatial_correlation_test", "top_markers", "within_domain_associations"]
