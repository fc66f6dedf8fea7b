"""Adding a document field is one row in the field table (``elastichash/index/schema.py``).

The flow test copies the packages, adds a throw-away row to the table in the copy (the one edit
a developer makes) and, in a subprocess on that copy, follows a document carrying the new field
through the embedded index, the search service's JSON (a real service and its client), the AMQP
index message, the engine backend on the protocol stand-in, and the gateway's search results
and image status. The typed declarations that mypy reads are checked against the table apart.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("elastichash", "gateway", "search_service")
ANCHOR = "FIELDS: tuple[FieldSpec, ...] = (\n"
ROW = '    FieldSpec("rating", "keyword", in_hits=True),  # added by test_field_table.py\n'
FIELD, VALUE = "rating", "five stars"


def typed_view(cls_name: str) -> list[str]:
    """The attributes ``index/base.py`` declares for mypy (under ``if TYPE_CHECKING:``)."""
    tree = ast.parse((ROOT / "elastichash/index/base.py").read_text())
    for node in ast.walk(tree):
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING"):
            for cls in node.body:
                if isinstance(cls, ast.ClassDef) and cls.name == cls_name:
                    return [s.target.id for s in cls.body
                            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    raise AssertionError(f"index/base.py declares no {cls_name} under TYPE_CHECKING")


def test_the_typed_records_declare_every_row_of_the_field_table() -> None:
    from elastichash.index.base import Document, Hit

    for cls in (Document, Hit):
        runtime = [f.name for f in dataclasses.fields(cls)]
        declared = typed_view(cls.__name__)
        missing = [n for n in runtime if n not in declared]
        extra = [n for n in declared if n not in runtime]
        assert not missing, (f"field table rows {missing} have no typed attribute on {cls.__name__}"
                             " under TYPE_CHECKING in elastichash/index/base.py: add them there")
        assert not extra, (f"{cls.__name__} in elastichash/index/base.py declares {extra}, which"
                           " no row of the field table (elastichash/index/schema.py) makes")
        assert declared == runtime, f"{cls.__name__}: declare the fields in the table's order"


def test_a_new_row_in_the_field_table_flows_everywhere_without_other_edits(
    tmp_path: Path, model_path: Path,
) -> None:
    copy = tmp_path / "src"
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, copy / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    schema = copy / "elastichash/index/schema.py"
    text = schema.read_text()
    assert text.count(ANCHOR) == 1, "the field table moved: update ANCHOR"
    schema.write_text(text.replace(ANCHOR, ANCHOR + ROW))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), str(ROOT)]),
           "ELASTICHASH_DATA": str(tmp_path / "data")}
    out = subprocess.run(
        [sys.executable, str(Path(__file__)), str(model_path), str(tmp_path / "work")],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen.pop("package").startswith(str(copy)), "the subprocess did not run the copy"
    assert seen == dict.fromkeys(EXPECTED, VALUE), seen


EXPECTED = (
    "record", "embedded get", "embedded hit", "service json", "service get", "service hit",
    "amqp message", "engine source", "engine mapping", "engine get", "engine hit",
    "gateway result", "gateway status", "openapi",
)


async def follow(model: Path, work: Path) -> dict[str, Any]:
    """Runs on the copy with the extra row: where does the new field's value arrive?"""
    import aiohttp
    import numpy as np
    from aiohttp.test_utils import TestServer

    import elastichash
    from elastichash.codes import select_bits
    from elastichash.index.base import Document, SearchQuery
    from elastichash.index.embedded import EmbeddedIndex
    from elastichash.index.es import mapping as es_mapping
    from elastichash.index.es import query as es_query
    from elastichash.index.remote import RemoteIndex
    from elastichash.messages import IndexDoc, decode_index
    from gateway.state import COMPONENTS
    from search_service.app import create_app
    from search_service.config import SearchServiceSettings
    from tests.engines import Engine, drop, make_index
    from tests.esserver.server import EsTestServer
    from tests.standalone import gateway_client, standalone_settings

    seen: dict[str, Any] = {"package": str(Path(elastichash.__file__).parent)}
    codes = np.random.default_rng(17).integers(0, 256, (3, 32), dtype=np.uint8)
    shorts = select_bits(codes, list(range(0, 256, 4)))
    docs = [Document(f"flow-{i}", codes[i].tobytes(), shorts[i].tobytes(), source=f"s{i}",
                     **{FIELD: VALUE}) for i in range(3)]
    doc = docs[0]
    query = SearchQuery(code=doc.code, short=doc.short, k=1)
    seen["record"] = getattr(doc, FIELD)

    embedded = EmbeddedIndex(work / "embedded")
    await embedded.open()
    try:
        await embedded.upsert(docs)
        seen["embedded get"] = getattr(await embedded.get(doc.id), FIELD)
        seen["embedded hit"] = getattr((await embedded.search(query)).hits[0], FIELD)
    finally:
        await embedded.close()

    served = EmbeddedIndex(work / "served")
    async with TestServer(create_app(SearchServiceSettings(), index=served)) as server:
        remote = RemoteIndex(str(server.make_url("/")).rstrip("/"))
        await remote.open()
        try:
            await remote.upsert(docs)
            async with aiohttp.ClientSession() as http, \
                    http.get(server.make_url(f"/v1/documents/{doc.id}")) as resp:
                seen["service json"] = (await resp.json())[FIELD]
            seen["service get"] = getattr(await remote.get(doc.id), FIELD)
            seen["service hit"] = getattr((await remote.search(query)).hits[0], FIELD)
        finally:
            await remote.close()

    parsed = decode_index(IndexDoc.of(doc).model_dump_json().encode())
    assert isinstance(parsed, IndexDoc)
    seen["amqp message"] = getattr(parsed.document(), FIELD)

    seen["engine source"] = es_query.document_source(doc, dense_bit=False)[FIELD]
    prop = es_mapping.retrieval_mapping(dense_bit=False)["properties"][FIELD]
    seen["engine mapping"] = VALUE if prop["type"] == "keyword" else prop
    server_ = EsTestServer().start()
    try:
        idx = make_index(Engine("elasticsearch", server_.url, server_))
        await idx.open()
        try:
            await idx.upsert(docs)
            await idx.refresh()
            seen["engine get"] = getattr(await idx.get(doc.id), FIELD)
            seen["engine hit"] = getattr((await idx.search(query)).hits[0], FIELD)
        finally:
            await drop(idx)
            await idx.close()
    finally:
        server_.stop()

    data = work / "gateway"
    async with gateway_client(standalone_settings(data, model), data) as client:
        await client.server.app[COMPONENTS].index.upsert(docs)
        resp = await client.post("/v1/search", json={"id": doc.id, "k": 1})
        seen["gateway result"] = (await resp.json())["results"][0][FIELD]
        resp = await client.get(f"/v1/images/{doc.id}")
        seen["gateway status"] = (await resp.json())[FIELD]
        resp = await client.get("/v1/openapi.json")
        schemas = (await resp.json())["components"]["schemas"]
        both = all(FIELD in schemas[m]["properties"] for m in ("ResultItem", "ImageStatus"))
        seen["openapi"] = VALUE if both else schemas
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(follow(Path(sys.argv[1]), Path(sys.argv[2])))))
