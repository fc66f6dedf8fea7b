"""The REST gateway: ingest, status, search and the web page."""
