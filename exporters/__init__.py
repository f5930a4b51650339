"""gemsearch.exporters: one ONNX file per model, whitening folded in, manifest embedded.

Needs the ``train`` extra (torch, onnx).
"""
