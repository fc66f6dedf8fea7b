"""Indexer worker: index queue -> batched index writes, acked per item once written."""
