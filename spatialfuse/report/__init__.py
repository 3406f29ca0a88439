"""Stages 7–8: cohort aggregation and the HTML summary report."""

from .aggregate import collect_metrics, domains_grid, metrics_figure
from .summary import build_summary

__all__ = ["collect_metrics", "domains_grid", "metrics_figure", "build_summary"]
