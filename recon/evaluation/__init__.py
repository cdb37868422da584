"""Segmentation accuracy: per-label metrics with explicit conventions, and cohort summaries."""

from recon.evaluation.metrics import CONVENTIONS, Evaluation, LabelScore, evaluate

__all__ = ["CONVENTIONS", "Evaluation", "LabelScore", "evaluate"]
