"""Evaluation: embedding extraction, distances, CMC / mAP / mINP, re-ranking, query expansion,
ROC, the report table and pictures."""

from dcsd.evaluate.distance import pairwise_distance
from dcsd.evaluate.features import FeatureSet, extract_features
from dcsd.evaluate.query_expansion import average_query_expansion
from dcsd.evaluate.rank import RankAccumulator, rank_metrics
from dcsd.evaluate.rerank import re_ranking, re_ranking_features
from dcsd.evaluate.retrieval import evaluate_retrieval, format_report
from dcsd.evaluate.roc import roc_metrics
from dcsd.evaluate.visualize import (
    embedding_map,
    plot_embedding_maps,
    plot_training_log,
    ranked_lists_figure,
    read_training_log,
    top_matches,
)

__all__ = [
    "FeatureSet",
    "RankAccumulator",
    "average_query_expansion",
    "embedding_map",
    "evaluate_retrieval",
    "extract_features",
    "format_report",
    "pairwise_distance",
    "plot_embedding_maps",
    "plot_training_log",
    "rank_metrics",
    "ranked_lists_figure",
    "re_ranking",
    "re_ranking_features",
    "read_training_log",
    "roc_metrics",
    "top_matches",
]
