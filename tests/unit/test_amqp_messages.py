"""Wire schemas: what a consumer accepts and what it dead-letters, with which reason."""

from __future__ import annotations

import json

import pytest

from elastichash.index.base import Document
from elastichash.messages import (
    H_ID,
    H_METADATA,
    H_VERSION,
    BadMessage,
    IndexDoc,
    IndexFailure,
    decode_index,
    decode_ingest,
    encode_ingest,
)
from elastichash.pipeline import IngestItem
from tests.imagegen import make_image


def test_ingest_round_trips_bytes_and_headers() -> None:
    item = IngestItem(
        id="abc",
        data=make_image(1),
        source="a.jpg",
        metadata={"k": [1, "x"]},
        content_type="image/jpeg",
    )
    body, headers, ctype = encode_ingest(item)
    assert body == item.data  # raw bytes, not base64
    assert decode_ingest(body, headers, ctype, max_bytes=1 << 20) == item


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({H_ID: "abc", H_METADATA: "{}"}, "unsupported_version"),
        ({H_VERSION: 99, H_ID: "abc"}, "unsupported_version"),
        ({H_VERSION: 1, H_ID: "../etc/passwd"}, "bad_headers"),
        ({H_VERSION: 1}, "bad_headers"),
        ({H_VERSION: 1, H_ID: "abc", H_METADATA: "{not json"}, "bad_headers"),
        ({H_VERSION: 1, H_ID: "abc", H_METADATA: "[1]"}, "bad_headers"),
        ({H_VERSION: 1, H_ID: "abc", H_METADATA: json.dumps({"x": "y" * 20000})}, "bad_headers"),
    ],
)
def test_bad_ingest_headers_are_refused_with_a_reason(
    headers: dict[str, object], reason: str
) -> None:
    with pytest.raises(BadMessage) as info:
        decode_ingest(b"\xff\xd8data", headers, "image/jpeg", max_bytes=1 << 20)
    assert info.value.reason == reason


def test_ingest_body_over_the_cap_or_empty_is_refused() -> None:
    headers = {H_VERSION: 1, H_ID: "abc"}
    with pytest.raises(BadMessage, match="cap") as info:
        decode_ingest(b"x" * 101, headers, None, max_bytes=100)
    assert info.value.reason == "too_large"
    with pytest.raises(BadMessage) as info:
        decode_ingest(b"", headers, None, max_bytes=100)
    assert info.value.reason == "empty"


def test_index_document_round_trips_codes_and_thumbnail() -> None:
    doc = Document(
        id="x1",
        code=bytes(range(32)),
        short=bytes(range(8)),
        source="s",
        metadata={"a": 1},
        thumbnail=b"\xff\xd8jpeg",
    )
    parsed = decode_index(IndexDoc.of(doc).model_dump_json().encode())
    assert isinstance(parsed, IndexDoc)
    assert parsed.document() == doc


def test_index_failure_record_round_trips() -> None:
    msg = IndexFailure(id="x2", reason="corrupt", message="cannot decode", source="b.png", at=5.0)
    parsed = decode_index(msg.model_dump_json().encode())
    assert isinstance(parsed, IndexFailure)
    assert parsed.failure().reason == "corrupt"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "bad_message"),
        (b'{"kind": "doc", "v": 1, "id": "a", "code": "zz", "short": "00"}', "bad_message"),
        (b'{"kind": "doc", "v": 7, "id": "a"}', "unsupported_version"),
        (b'{"kind": "other", "v": 1}', "bad_message"),
    ],
)
def test_bad_index_messages_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as info:
        decode_index(body)
    assert info.value.reason == reason


def test_worker_settings_read_nested_env_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    from encoder_worker.config import EncoderWorkerSettings
    from indexer_worker.config import IndexerWorkerSettings

    monkeypatch.setenv("EH_INDEXER_INDEX__SEARCH_URL", "http://search:8081")
    monkeypatch.setenv("EH_ENCODER_AMQP__PREFIX", "p1")
    monkeypatch.setenv("EH_ENCODER_BATCH_MAX", "7")
    indexer = IndexerWorkerSettings()
    # Setting one field of the group must not drop the indexer's remote default.
    assert (indexer.index.backend, indexer.index.search_url) == ("remote", "http://search:8081")
    encoder = EncoderWorkerSettings()
    assert (encoder.amqp.prefix, encoder.batch_max, encoder.drain_timeout_s) == ("p1", 7, 30.0)
