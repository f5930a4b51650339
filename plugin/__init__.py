"""gemsearch.plugin: the runtime. Embeds images with onnxruntime and talks to the vector stores.

Never imports torch: an ingestion node installs only the base package.
"""
