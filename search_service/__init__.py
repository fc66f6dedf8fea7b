"""The search service: an HTTP API over any ``Index``.

In distributed mode with the embedded backend it owns the index; writers use its bulk API.
"""
