"""Stages 7–8: cohort aggregation (tables, figures) and the HTML summary report."""

from .aggregate import ResultsTree, collect_flags, collect_metrics, run_aggregate
from .domains import harmonise_domains, match_labels
from .summary import build_summary

__all__ = ["ResultsTree", "collect_flags", "collect_metrics", "run_aggregate",
           "harmonise_domains", "match_labels", "build_summary"]
