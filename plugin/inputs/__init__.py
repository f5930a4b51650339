"""Inputs: the sources that name images (folders, manifests, path lists, shards) and safe image loading."""
