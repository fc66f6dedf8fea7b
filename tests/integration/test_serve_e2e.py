"""``elastichash serve`` as a subprocess: ingest over HTTP, find each image at rank 1, and a
property-based run over the OpenAPI document that must find no 5xx."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from elastichash.ids import content_id
from gateway.openapi import build_openapi
from tests.imagegen import make_image
from tests.standalone import ServeProcess

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    from elastichash.model.default import ensure_default_model

    model = ensure_default_model(tmp_path_factory.mktemp("model") / "default.onnx")
    # No route out of this machine: fetching a generated URL waits for DNS; keep that short.
    proc = ServeProcess(tmp_path_factory.mktemp("serve"), model,
                        env={"EH_GATEWAY_FETCH__TIMEOUT_S": "1"}).start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0, proc.log.read_text()


def wait_indexed(base: str, ids: list[str], timeout: float = 90.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    while True:
        for i in ids:
            if status.get(i) not in ("indexed", "failed"):
                status[i] = requests.get(f"{base}/v1/images/{i}", timeout=10).json()["status"]
        if all(s in ("indexed", "failed") for s in status.values()):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"not indexed in {timeout} s: {status}")
        time.sleep(0.1)


def test_served_images_are_found_at_rank_one_with_distance_zero(server: ServeProcess) -> None:
    images = {f"e2e{s}.jpg": make_image(1000 + s) for s in range(40)}
    files = [("file", (name, data, "image/jpeg")) for name, data in images.items()]
    resp = requests.post(f"{server.base}/v1/images", files=files, timeout=60)
    assert resp.status_code == 202, resp.text
    ids = [img["id"] for img in resp.json()["images"]]
    assert ids == [content_id(d) for d in images.values()]
    assert set(wait_indexed(server.base, ids).values()) == {"indexed"}
    for name, data in images.items():
        resp = requests.post(f"{server.base}/v1/search",
                             files=[("file", (name, data, "image/jpeg"))],
                             data={"k": "5"}, timeout=30)
        top = resp.json()["results"][0]
        assert (top["id"], top["distance"]) == (content_id(data), 0), name
    page = requests.get(f"{server.base}/", timeout=10)
    assert page.status_code == 200


schema = schemathesis.openapi.from_dict(build_openapi())


@schema.parametrize()
@settings(max_examples=20, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_api_fail_with_5xx(case: schemathesis.Case,
                                               server: ServeProcess) -> None:
    response = case.call(base_url=server.base, timeout=30)
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
    if response.status_code >= 400 and response.headers.get("Content-Type", "").startswith(
            "application/json"):
        assert "code" in response.json()["error"]


def test_serve_folder_indexing_skips_non_images_and_what_is_indexed(
        tmp_path: Path) -> None:
    from elastichash.model.default import ensure_default_model

    model = ensure_default_model(tmp_path / "m" / "default.onnx")
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for s in range(8):
        (folder / f"p{s}.jpg").write_bytes(make_image(3000 + s))
    (folder / "readme.txt").write_text("not an image")
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("elastichash")
    args = [str(exe), "index", str(tmp_path / "photos"), "--data", str(tmp_path / "d"),
            "--model", str(model)]
    first = subprocess.run([*args, "--no-progress"], capture_output=True, text=True,
                           timeout=120, check=True)
    assert "8 indexed" in first.stdout, first.stdout
    assert "1 not images" in first.stdout, first.stdout
    assert "indexing" not in first.stderr, first.stderr  # no progress bar
    second = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    assert "0 indexed" in second.stdout
    assert "indexing" in second.stderr, second.stderr  # the progress bar, by default
    assert "8 already indexed" in second.stdout
    out = subprocess.run([str(exe), "search", str(folder / "p3.jpg"), "--data",
                          str(tmp_path / "d"), "--model", str(model), "--json", "-k", "3"],
                         capture_output=True, text=True, timeout=120, check=True)
    import json

    result = json.loads(out.stdout)
    assert result["results"][0]["id"] == content_id(make_image(3003))
    assert result["results"][0]["distance"] == 0


def test_serve_with_images_indexes_the_folder_in_the_background(tmp_path: Path) -> None:
    from elastichash.model.default import ensure_default_model

    model = ensure_default_model(tmp_path / "m" / "default.onnx")
    folder = tmp_path / "photos"
    (folder / "a" / "b").mkdir(parents=True)
    for s in range(6):
        (folder / "a" / "b" / f"p{s}.jpg").write_bytes(make_image(4000 + s))
    (folder / "a" / "notes.md").write_text("# not an image")
    proc = ServeProcess(tmp_path / "d", model, "--images", str(folder)).start()
    try:
        deadline = time.monotonic() + 90
        while requests.get(f"{proc.base}/v1/stats", timeout=10).json()["count"] < 6:
            assert time.monotonic() < deadline, proc.log.read_text()
            time.sleep(0.1)
        top = requests.post(f"{proc.base}/v1/search", json={"id": content_id(make_image(4002)),
                                                            "k": 1}, timeout=10).json()
        assert top["results"][0]["source"].endswith("p2.jpg")
    finally:
        assert proc.stop() == 0
    log = proc.log.read_text()
    assert "6 indexed" in log, log
    assert "1 not images" in log, log
