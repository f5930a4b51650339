"""Fine-tuning a retrieval network: the config, training data and tuples with hard-negative mining,
losses, the training loop with its resumable state, multi-process runs and fitting the whitening."""
