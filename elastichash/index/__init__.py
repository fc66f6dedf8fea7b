"""Index backends behind one protocol."""

from elastichash.index.base import (
    MAX_K,
    STRATEGIES,
    Document,
    Failure,
    Hit,
    Index,
    SearchResult,
    WriteResult,
)

__all__ = [
    "MAX_K", "STRATEGIES", "Document", "Failure", "Hit", "Index", "SearchResult", "WriteResult",
]
