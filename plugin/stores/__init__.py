"""The vector stores: ``local`` (the embedded default, one folder) and ``opensearch`` (k-NN indices)."""
