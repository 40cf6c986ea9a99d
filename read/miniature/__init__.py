"""A miniature READ world: stand-ins for the pretrained parts READ starts from (CLIP, LLaVA-1.5, SAM), trained from
seeds on synthetic scenes in minutes on a CPU, saved in the formats the project loads (``scripts/pretrain_miniature.py``,
docs/BENCHMARKS.md)."""
