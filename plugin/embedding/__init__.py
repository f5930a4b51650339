"""Embedding: onnxruntime sessions of an exported model and the embedder that runs them."""
