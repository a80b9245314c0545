"""Evaluation: embedding extraction, query-gallery distances, CMC / mAP / mINP, report table."""

from dcsd.evaluate.distance import pairwise_distance
from dcsd.evaluate.features import FeatureSet, extract_features
from dcsd.evaluate.query_expansion import average_query_expansion
from dcsd.evaluate.rank import RankAccumulator, rank_metrics
from dcsd.evaluate.rerank import re_ranking, re_ranking_features
from dcsd.evaluate.retrieval import evaluate_retrieval, format_report
from dcsd.evaluate.roc import roc_metrics

__all__ = [
    "FeatureSet",
    "RankAccumulator",
    "average_query_expansion",
    "evaluate_retrieval",
    "extract_features",
    "format_report",
    "pairwise_distance",
    "rank_metrics",
    "re_ranking",
    "re_ranking_features",
    "roc_metrics",
]
