"""Ingest throughput of the distributed stack in containers vs the same pipeline without them.

    python bench/containers.py [--images 400] [--out bench/results/containers.json]

1. `scripts/containers.sh up` (docker-compose.yml on the local images): seconds from the
   command to every service healthy.
2. In containers: all images posted to the gateway (20 per request, all requests at once);
   images/s from the first POST until the gateway's /v1/stats counts them all.
3. Reference, same run: the same four services (gateway, one encoder, indexer, search
   service) as plain processes on this host, over the host's RabbitMQ and the same engine
   (the stack's, on its published port, in an index of their own), same images.
The stack is taken down at the end. Reports the ratio containers / processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import free_port, load_images, post, wait_http  # noqa: E402
from bench.report import table, write_result  # noqa: E402
from elastichash.ids import content_id  # noqa: E402

SCRIPT = str(ROOT / "scripts/containers.sh")
ENV = {"EH_STACK_PROJECT": "ehbench", "EH_HTTP_PORT": "24280", "OPENSEARCH_PORT": "24292",
       "RABBITMQ_UI_PORT": "24772"}  # fmt: skip


async def ingest(base: str, images: list[bytes], timeout_s: float = 900) -> float:
    """images/s from the first POST until the gateway counts them all."""
    unique = len({content_id(d) for d in images})
    async with aiohttp.ClientSession() as http:

        async def count() -> int:
            async with http.get(f"{base}/v1/stats") as r:
                return int((await r.json())["count"])

        before = await count()
        started = time.perf_counter()
        await asyncio.gather(
            *(post(http, base, images[i : i + 20]) for i in range(0, len(images), 20))
        )
        while await count() < before + unique:
            if time.perf_counter() - started > timeout_s:
                raise SystemExit(f"{base}: not all indexed in {timeout_s} s")
            await asyncio.sleep(0.1)
        return unique / (time.perf_counter() - started)


def processes(images: list[bytes], es_url: str, amqp: str, tmp: Path) -> float:
    """The same pipeline as host processes; returns its images/s."""
    prefix, index = f"bench-{uuid.uuid4().hex[:8]}", f"bench-bare-{uuid.uuid4().hex[:8]}"
    model = tmp / "default.onnx"
    subprocess.run([sys.executable, "-m", "elastichash.cli", "model", "build-default",
                    str(model)], check=True, cwd=ROOT)  # fmt: skip
    search_port, gateway_port = free_port(), free_port()
    health = [free_port(), free_port()]
    es = {"INDEX__BACKEND": "opensearch", "INDEX__ENGINE__URL": es_url,
          "INDEX__ENGINE__INDEX": index}
    queue = {"AMQP__URL": amqp, "AMQP__PREFIX": prefix}
    roles: list[tuple[str, str, dict[str, str]]] = [
        ("search-service", "EH_SEARCH_", {**es, "HOST": "127.0.0.1", "PORT": str(search_port)}),
        ("indexer-worker", "EH_INDEXER_", {**es, **queue, "HEALTH_PORT": str(health[0])}),
        ("encoder-worker", "EH_ENCODER_", {**queue, "MODEL__PATH": str(model),
                                           "HEALTH_PORT": str(health[1])}),
        ("gateway", "EH_GATEWAY_", {**queue, "HOST": "127.0.0.1", "PORT": str(gateway_port),
                                    "INDEX__BACKEND": "remote",
                                    "INDEX__SEARCH_URL": f"http://127.0.0.1:{search_port}"}),
    ]  # fmt: skip
    procs = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("EH_")}
    try:
        for command, env_prefix, settings in roles:
            env = {**base_env, "ELASTICHASH_DATA": str(tmp / "data"),
                   **{env_prefix + k: v for k, v in settings.items()}}  # fmt: skip
            log = (tmp / f"{command}.log").open("wb")
            procs.append(subprocess.Popen([sys.executable, "-m", "elastichash.cli", command],
                                          cwd=ROOT, env=env, stdout=log, stderr=log))

        async def run() -> float:
            for port in (*health, gateway_port):
                await wait_http(f"http://127.0.0.1:{port}/readyz", timeout=300)
            return await ingest(f"http://127.0.0.1:{gateway_port}", images)

        return asyncio.run(run())
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(40)
            except subprocess.TimeoutExpired:
                p.kill()
        from elastichash.amqp import delete_topology

        asyncio.run(delete_topology(amqp, prefix))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/containers.json")
    args = parser.parse_args()
    env = {**os.environ, **ENV}
    images = load_images(None, args.images)
    subprocess.run([SCRIPT, "down"], env=env, check=False)
    started = time.monotonic()
    try:
        up = subprocess.run([SCRIPT, "up"], env=env, stdout=subprocess.PIPE, text=True,
                            check=True)  # fmt: skip
        up_s = time.monotonic() - started
        url = up.stdout.strip().splitlines()[-1]
        in_containers = asyncio.run(ingest(url, images))
        with tempfile.TemporaryDirectory() as tmp:
            es_url = f"http://127.0.0.1:{ENV['OPENSEARCH_PORT']}"
            bare = processes(images, es_url, args.amqp, Path(tmp))
    finally:
        subprocess.run([SCRIPT, "down"], env=env, check=False)
    ratio = in_containers / bare
    which = subprocess.run([SCRIPT, "engine"], capture_output=True, text=True, check=False)
    print()
    print(table([("", "<32"), ("images/s", ">10.1f")],
                [("stack in containers", in_containers), ("same services as processes", bare)]))
    print(f"ratio containers/processes: {ratio:.2f}; stack up to healthy: {up_s:.0f} s")
    result: dict[str, Any] = {
        "images": args.images,
        "stack_up_to_healthy_s": round(up_s, 1),
        "containers_images_per_s": round(in_containers, 2),
        "processes_images_per_s": round(bare, 2),
        "ratio": round(ratio, 3),
        "engine": which.stdout.strip(),
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "machine": platform.machine(),
    }
    write_result("containers", result, path=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
