"""Inference on your own images: :class:`ReadPipeline` (load any model this project loads, predict masks,
similarity maps and SasP points) and :class:`Prediction` (with its picture)."""

from read.infer.pipeline import ReadPipeline
from read.infer.prediction import Prediction, SimilarityMap

__all__ = ["Prediction", "ReadPipeline", "SimilarityMap"]
