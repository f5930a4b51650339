"""Ingest: the pipeline from sources to a store, and its report and ledger."""
