"""The ``OpenSearchStore``: connection, index administration, bulk writes and the k-NN search template."""
