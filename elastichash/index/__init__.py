"""Index backends behind one protocol."""

from elastichash.index.base import (
    MAX_K,
    STRATEGIES,
    Capabilities,
    CodeRecord,
    Document,
    Failure,
    Hit,
    Index,
    SearchQuery,
    SearchResult,
    WriteResult,
)

__all__ = [
    "MAX_K", "STRATEGIES", "Capabilities", "CodeRecord", "Document", "Failure", "Hit", "Index",
    "SearchQuery", "SearchResult", "WriteResult",
]
