"""Retrieval quality: mAP on the Oxford/Paris benchmarks (cirtorch's layout), and during training."""
