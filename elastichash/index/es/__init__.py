"""Search-engine backend (Elasticsearch or OpenSearch): ElasticHash's index layout behind the
``Index`` protocol. The core (mapping, neighbours, script, query, bulk actions) is I/O-free;
``client`` is the protocol the engine adapters implement; ``backend`` is the index class."""

from elastichash.index.es.backend import EngineIndex

__all__ = ["EngineIndex"]
