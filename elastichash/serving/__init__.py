"""Serving HTTP under limits a hostile client cannot talk its way around, for every HTTP
service (the gateway and the search service): the server runner (``server``: bind first,
per-client connection cap, idle keep-alive close, JSON parser errors) and the request body
reader (``body``: bytes counted as read, slow bodies cut off with a 408)."""
