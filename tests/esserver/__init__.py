"""An Elasticsearch protocol test server: the endpoints and query DSL the backend uses, with
Elasticsearch's semantics and strictness, plus fault injection driven from the test."""

from tests.esserver.server import EsTestServer

__all__ = ["EsTestServer"]
