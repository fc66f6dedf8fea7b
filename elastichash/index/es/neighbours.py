"""The neighbours ("nbs") index: for every 16-bit value, the 137 values within radius 2.

Subcodes are stored as decimal strings, both here and in ``f0..f3`` of the retrieval index,
so a ``terms`` lookup from this index's ``_source`` matches the keyword terms exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from elastichash.codes import SUBCODE_BITS, radius_masks
from elastichash.index.es.bulk import Action

NBS_FIELD = "nbs"
NBS_DOCS = 1 << SUBCODE_BITS  # 65,536

NBS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    # Only read through the terms lookup (from _source): nothing to index or keep in doc values.
    "properties": {NBS_FIELD: {"type": "keyword", "index": False, "doc_values": False}},
}


def nbs_settings() -> dict[str, Any]:
    return {
        "index": {
            "number_of_shards": 1,
            # A copy on every node: the terms lookup then reads a local shard.
            "auto_expand_replicas": "0-all",
            # Built once in bulk; refreshed explicitly at the end.
            "refresh_interval": "-1",
        }
    }


def subcode_term(value: int) -> str:
    """The keyword form of a 16-bit subcode, shared by ``f0..f3`` and the nbs index."""
    return str(int(value))


def nbs_actions(index: str) -> Iterator[Action]:
    """Bulk actions for all 65,536 neighbour documents, ``_source`` pre-serialised.

    The bodies are built as JSON text directly: 9 M small strings through ``json.dumps``
    would dominate bootstrap time.
    """
    names = [str(i) for i in range(NBS_DOCS)]
    masks = radius_masks().astype(np.int64)
    for value in range(NBS_DOCS):
        row = (value ^ masks).tolist()
        body = '{"' + NBS_FIELD + '":["' + '","'.join([names[v] for v in row]) + '"]}'
        yield Action("index", index, names[value], body)
