"""Elasticsearch backend: ElasticHash's index layout behind the ``Index`` protocol."""

from elastichash.index.es.backend import ElasticsearchIndex

__all__ = ["ElasticsearchIndex"]
