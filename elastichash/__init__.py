"""ElasticHash-style semantic image similarity search over binary hash codes."""

__version__ = "0.1.0"
