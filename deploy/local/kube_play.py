#!/usr/bin/env python3
"""Run the rendered cpu overlay with ``podman kube play``, on the local images.

    python deploy/local/kube_play.py up [--port 24180]   # prints the gateway's URL last
    python deploy/local/kube_play.py down

podman runs what Kubernetes itself would run from these manifests: the Deployments (one pod
each) and their ConfigMaps. Left out, and said so on every run:

- the operator-managed objects: RabbitmqCluster (RabbitMQ Cluster Operator), Elasticsearch
  (ECK), ScaledObject and TriggerAuthentication (KEDA); one pod each of the local RabbitMQ and
  engine images stands in for the first two, under the names the operators would give them
  (the engine is OpenSearch: the ConfigMaps' index backend becomes ``opensearch``);
- HorizontalPodAutoscaler and PodDisruptionBudget: nothing to scale or evict here;
- published ports: podman 4.3 publishes every containerPort on the host, so only the
  gateway's is kept (as a hostPort) and the probes name their ports by number;
- Services: podman has none. Pods reach each other by pod name, so the service names in the
  ConfigMaps and the AMQP Secret are replaced by the pods' names.

Secrets are podman secrets (podman 4.3 reads a JSON map of base64 values; it cannot use a
Secret object from the YAML), and podman 4.3 does not expand $(NAME) in env values as
Kubernetes does: the harness expands the one the manifests use (the engine's password).
podman here runs no probes (they need systemd timers): readiness
is checked from outside, through the same /readyz and /healthz endpoints the probes use.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy"))

from render import render  # noqa: E402

Obj = dict[str, Any]
OVERLAY = REPO / "deploy/k8s/overlays/cpu"
STATE = Path(os.environ.get("EH_KUBE_STATE", Path(tempfile.gettempdir()) / "elastichash-kube"))
NETWORK = "elastichash-kube"
APP_IMAGE = os.environ.get("EH_APP_IMAGE", "localhost/elastichash:latest")
RABBITMQ_IMAGE = os.environ.get("RABBITMQ_IMAGE", "localhost/elastichash-rabbitmq:local")
ENGINE_IMAGE = os.environ.get("ES_IMAGE", "localhost/elastichash-engine:local")
ENGINE_BACKEND = os.environ.get("ENGINE_BACKEND", "opensearch")
AMQP_USER, AMQP_PASSWORD = "elastichash", "kube-play-local"
ES_PASSWORD = "kube-play-local"
LEFT_OUT = {
    "RabbitmqCluster": "operator object (RabbitMQ Cluster Operator): a local RabbitMQ pod instead",
    "Elasticsearch": "operator object (ECK): a local engine pod instead",
    "ScaledObject": "KEDA object: no autoscaling here",
    "TriggerAuthentication": "KEDA object: no autoscaling here",
    "HorizontalPodAutoscaler": "no autoscaling here",
    "PodDisruptionBudget": "nothing evicts pods here",
    "Service": "podman has no Services: URLs point at pod names instead",
}
KEPT = {"Deployment", "ConfigMap"}


def pod_host(deployment: str) -> str:
    """The name a Deployment's (first) pod answers to on the podman network."""
    return f"{deployment}-pod-0"


# Service names in the manifests -> the pod behind each.
HOSTS = {
    "elastichash-search": pod_host("elastichash-search"),
    "elastichash-es-http": pod_host("elastichash-es"),
    "elastichash-rabbitmq": pod_host("elastichash-rabbitmq"),
}


def to_pods(value: str) -> str:
    """Service host names in a URL -> the pods' names."""
    for service, pod in HOSTS.items():
        value = re.sub(rf"(?<=[/@]){re.escape(service)}(?=[:/]|$)", pod, value)
    return value


def stand_in(name: str, image: str, env: dict[str, str]) -> Obj:
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "elastichash"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": name.rsplit("-", 1)[-1],
                        "image": image,
                        "env": [{"name": k, "value": v} for k, v in env.items()],
                    }],
                },
            },
        },
    }  # fmt: skip


def expand_env(container: Obj) -> None:
    """Kubernetes expands $(NAME) of earlier env entries in a value; podman 4.3 does not, so
    do it here for the ones that come from our secrets (the engine's password in its URL)."""
    known = {"ELASTIC_PASSWORD": ES_PASSWORD}
    for entry in container.get("env", []):
        if "value" in entry:
            for name, value in known.items():
                entry["value"] = entry["value"].replace(f"$({name})", value)


def unpublish(container: Obj, host_port: int | None) -> None:
    """podman 4.3 publishes every containerPort on the host (two workers' 9100 collide):
    keep only the gateway's, as ``host_port``; probes get numbers for the names they used."""
    numbers = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container.get(probe, {}).get("httpGet")
        if get is not None and get["port"] in numbers:
            get["port"] = numbers[get["port"]]
    if host_port is None:
        container.pop("ports", None)
    else:
        for p in container.get("ports", []):
            p["hostPort"] = host_port


def manifests(port: int) -> tuple[list[Obj], list[str]]:
    kept: list[Obj] = []
    notes: list[str] = []
    for obj in render(OVERLAY):
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind not in KEPT:
            notes.append(f"left out {kind}/{name}: {LEFT_OUT.get(kind, 'not supported by podman')}")
            continue
        if kind == "ConfigMap":
            obj["data"] = {k: to_pods(v) for k, v in obj.get("data", {}).items()}
            for key in obj["data"]:
                if key.endswith("_INDEX__BACKEND") and obj["data"][key] == "elasticsearch":
                    obj["data"][key] = ENGINE_BACKEND  # the engine pod runs OpenSearch
        else:
            spec = obj["spec"]
            if spec.get("replicas", 1) != 1:
                notes.append(f"Deployment/{name}: 1 replica instead of {spec['replicas']}")
                spec["replicas"] = 1
            for container in spec["template"]["spec"]["containers"]:
                container["image"] = APP_IMAGE
                expand_env(container)
                for entry in container.get("env", []):
                    if "value" in entry:
                        entry["value"] = to_pods(entry["value"])
                unpublish(container, port if name == "elastichash-gateway" else None)
        kept.append(obj)
    kept.append(stand_in("elastichash-rabbitmq", RABBITMQ_IMAGE, {
        "RABBITMQ_DEFAULT_USER": AMQP_USER, "RABBITMQ_DEFAULT_PASS": AMQP_PASSWORD}))
    kept.append(stand_in("elastichash-es", ENGINE_IMAGE, {
        "discovery.type": "single-node", "xpack.security.enabled": "false",
        "ES_JAVA_OPTS": "-Xms512m -Xmx512m"}))  # fmt: skip
    return kept, notes


def podman(*args: str, check: bool = True, stdin: bytes | None = None,
           timeout: float = 120) -> str:
    """One podman command, bounded: a hung podman is an error that names the command."""
    try:
        out = subprocess.run(["podman", *args], input=stdin, capture_output=True, check=False,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        if not check:
            return ""
        raise SystemExit(f"podman {' '.join(args)} did not finish within {timeout:.0f}s") from None
    if check and out.returncode != 0:
        raise SystemExit(f"podman {' '.join(args)} failed: {out.stderr.decode()[-2000:]}")
    return out.stdout.decode()


def secret(name: str, values: dict[str, str]) -> None:
    podman("secret", "rm", name, check=False)
    data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    podman("secret", "create", name, "-", stdin=json.dumps(data).encode())


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def probe_passes(container: str, probe: list[str]) -> bool:
    try:
        return subprocess.run(["podman", "exec", container, *probe], capture_output=True,
                              check=False, timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def up(port: int, timeout_s: float) -> int:
    started = time.monotonic()
    objects, notes = manifests(port)
    for note in notes:
        print(f"kube-play: {note}", file=sys.stderr)
    STATE.mkdir(parents=True, exist_ok=True)
    path = STATE / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    amqp = f"amqp://{AMQP_USER}:{AMQP_PASSWORD}@{HOSTS['elastichash-rabbitmq']}:5672/"
    secret("elastichash-amqp", {"url": amqp})
    secret("elastichash-es-elastic-user", {"elastic": ES_PASSWORD})
    if subprocess.run(["podman", "network", "exists", NETWORK], check=False,
                      timeout=60).returncode:
        podman("network", "create", NETWORK)
    podman("kube", "play", "--network", NETWORK, str(path), timeout=300)
    deployments = [o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"]
    workers = {  # podman names a pod's container <pod>-<container>
        f"{pod_host(o['metadata']['name'])}-{c['name']}"
        for o in objects
        if o["kind"] == "Deployment"
        and o["metadata"]["name"] in ("elastichash-encoder", "elastichash-indexer")
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    print(f"kube-play: {len(deployments)} pods started: {', '.join(deployments)}",
          file=sys.stderr)
    # The workers' /healthz (9100), then the gateway's /readyz, which needs AMQP and search.
    pending = sorted(workers)
    deadline = started + timeout_s
    while pending or not ready(f"http://127.0.0.1:{port}/readyz"):
        probe = ["python", "/usr/local/bin/eh-healthcheck", "9100"]
        pending = [c for c in pending if not probe_passes(c, probe)]
        if time.monotonic() > deadline:
            print(podman("pod", "ps", check=False), file=sys.stderr)
            raise SystemExit(f"kube-play: not ready within {timeout_s:.0f}s (waiting: "
                             f"{pending or ['gateway /readyz']})")
        time.sleep(2)
    print(f"kube-play: ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(f"http://127.0.0.1:{port}")
    return 0


def down(port: int) -> int:
    """Remove what ``up`` made, also after a run that died before writing its state: the
    manifests are rendered again (the same names) when the state file is gone."""
    path = STATE / "manifests.yaml"
    if not path.exists():
        STATE.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump_all(manifests(port)[0], sort_keys=False))
    podman("kube", "down", str(path), check=False, timeout=300)
    path.unlink()
    for name in ("elastichash-amqp", "elastichash-es-elastic-user"):
        podman("secret", "rm", name, check=False)
    podman("network", "rm", "-f", NETWORK, check=False)
    print("kube-play: removed", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["up", "down", "print"])
    parser.add_argument("--port", type=int, default=24180, help="host port of the gateway")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    os.environ.setdefault("CONTAINERS_CONF", str(REPO / "deploy/local/containers.conf"))
    if args.action == "print":
        objects, notes = manifests(args.port)
        print("\n".join(f"# {n}" for n in notes))
        print(yaml.safe_dump_all(objects, sort_keys=False))
        return 0
    return up(args.port, args.timeout) if args.action == "up" else down(args.port)


if __name__ == "__main__":
    sys.exit(main())
