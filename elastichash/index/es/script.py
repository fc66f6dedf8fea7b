"""The painless scripts the backend stores or sends, in one place.

Score = 256 - Hamming distance, so that a higher score is a nearer code and scores are never
negative (Lucene refuses negative scores). The test server recognises exactly these shapes.
"""

from __future__ import annotations

from elastichash.codes import LONG_BITS

HAMMING_SCRIPT_ID = "elastichash-hamming256-v1"

# One term per 64-bit word: doc['rN'] holds the signed int64 word of the long code.
HAMMING_SCRIPT_SOURCE = f"{LONG_BITS}" + "".join(
    f" - Long.bitCount(doc['r{i}'].value ^ params.r{i})" for i in range(4)
)

# dense_bit strategy (Elasticsearch >= 8.15): native XOR-popcount over the bit vector.
DENSE_BIT_FIELD = "code_bits"
DENSE_BIT_SCRIPT_SOURCE = f"{LONG_BITS} - hamming(params.query_vector, '{DENSE_BIT_FIELD}')"
