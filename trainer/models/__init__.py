"""The retrieval model: backbones, pooling, the network, learned whitening, descriptor extraction and
the model files (our checkpoints, cirtorch's, off-the-shelf networks) that ``load_model`` reads."""
