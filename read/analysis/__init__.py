"""READ's analysis of the [SEG] token (paper §3.2, Table 1, Appendix A.1): S_IoU, P_prompt, the SAM-decoder map,
summaries, figures and an HTML report. ``scripts/analyze.py`` runs it; docs/ANALYSIS.md defines each quantity."""

from read.analysis.maps import sam_decoder_similarity, sam_map_to_image
from read.analysis.pprompt import extreme_points, points_prompt_mask
from read.analysis.siou import similarity_iou

__all__ = ["extreme_points", "points_prompt_mask", "sam_decoder_similarity", "sam_map_to_image", "similarity_iou"]
