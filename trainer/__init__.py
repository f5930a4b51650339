"""gemsearch.trainer: retrieval networks (backbone + pooling + whitening), fine-tuning and evaluation.

Needs the ``train`` extra (torch, torchvision).
"""
