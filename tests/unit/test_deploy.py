"""Deployment files, checked offline: compose, kustomize overlays, CRDs, Dockerfile, env vars.

No Docker engine or cluster is needed. kubectl, where installed, cross-checks our renderer.
"""

from __future__ import annotations

import copy
import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy"))

import check  # noqa: E402
import crds  # noqa: E402
import render  # noqa: E402

Obj = dict[str, Any]
DRAIN_TIMEOUT_S = 30  # the workers' default EH_*_DRAIN_TIMEOUT_S
WORKER_QUEUES = {"elastichash-encoder": "elastichash.ingest",
                 "elastichash-indexer": "elastichash.index"}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> Obj:
    return check.load_compose()


@pytest.fixture(scope="module")
def overlays() -> dict[str, list[Obj]]:
    return check.render_overlays()


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


# ----------------------------------------------------------------- compose


def test_compose_file_is_valid_against_the_compose_specification(compose: Obj) -> None:
    assert check.compose_schema_errors(compose) == []


def test_compose_schema_check_rejects_an_unknown_service_key(compose: Obj) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["helthcheck"] = {"test": ["CMD", "true"]}
    broken["services"]["indexer"]["depends_on"]["rabbitmq"]["condition"] = "healthy"
    errors = check.compose_schema_errors(broken)
    assert any("helthcheck" in e for e in errors)
    assert any("healthy" in e for e in errors)


def test_every_compose_service_has_a_healthcheck_and_waits_for_healthy_dependencies(
    compose: Obj,
) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"
        for dep, cond in service.get("depends_on", {}).items():
            # required: false only for an engine of another profile (opensearch)
            optional = cond.get("required") is False and "profiles" in services[dep]
            assert cond == {"condition": "service_healthy", **({"required": False}
                                                               if optional else {})}, (
                f"{name} -> {dep}")
            assert dep in services
    assert set(services["gateway"]["depends_on"]) == {"rabbitmq", "search"}
    assert set(services["indexer"]["depends_on"]) == {"rabbitmq", "elasticsearch", "opensearch"}
    assert services["opensearch"]["profiles"] == ["opensearch"]


def test_our_compose_healthchecks_probe_the_service_port_with_the_images_probe(
    compose: Obj,
) -> None:
    ports = {"gateway": 8080, "search-service": 8081, "encoder-worker": 9100,
             "indexer-worker": 9100}  # fmt: skip
    for name, service in compose["services"].items():
        role = check.role_of(service.get("command"))
        if role is None:
            continue
        # The image's probe, on the service's own port. No argument with a space: podman
        # 4.3's Docker API splits them (seen with docker compose against its socket).
        test = service["healthcheck"]["test"]
        assert test == ["CMD", "python", "/usr/local/bin/eh-healthcheck", str(ports[role])], name


def test_workers_get_longer_than_their_drain_timeout_to_stop(compose: Obj) -> None:
    for name, service in compose["services"].items():
        if check.role_of(service.get("command")) in {"encoder-worker", "indexer-worker"}:
            drain = next(int(v) for k, v in service["environment"].items()
                         if k.endswith("_DRAIN_TIMEOUT_S"))  # fmt: skip
            assert seconds(service["stop_grace_period"]) > drain, name


def test_gpu_encoder_is_a_profile_that_reserves_an_nvidia_gpu(compose: Obj) -> None:
    services = compose["services"]
    gpu = services["encoder-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["environment"]["EH_ENCODER_MODEL__REQUIRE_GPU"] == "true"
    # The CPU encoder runs by default, without a profile.
    assert "profiles" not in services["encoder"]
    assert services["encoder"]["build"]["target"] == "cpu"


def test_elasticsearch_image_major_matches_the_python_client_pin(compose: Obj) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    es_extra = " ".join(pyproject["project"]["optional-dependencies"]["es"])
    client_major = int(re.search(r"<\s*(\d+)", es_extra).group(1)) - 1  # type: ignore[union-attr]
    image = compose["services"]["elasticsearch"]["image"]
    version = re.search(r":\$\{ES_VERSION:-([\d.]+)\}\}$", image).group(1)  # type: ignore[union-attr]
    assert int(version.split(".")[0]) == client_major
    env_default = re.search(r"^ES_VERSION=([\d.]+)$", (REPO / ".env.example").read_text(), re.M)
    assert env_default is not None
    assert env_default.group(1) == version
    k8s_es = yaml.safe_load((REPO / "deploy/k8s/base/elasticsearch.yaml").read_text())
    assert k8s_es["spec"]["version"] == version
    env = compose["services"]["elasticsearch"]["environment"]
    assert env["discovery.type"] == "single-node"
    assert env["xpack.security.enabled"] == "false"
    assert "-Xms" in env["ES_JAVA_OPTS"]
    assert "-Xmx" in env["ES_JAVA_OPTS"]


def test_compose_variables_are_documented_in_env_example_and_named_volumes_declared(
    compose: Obj,
) -> None:
    example = (REPO / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.M))
    assert check.compose_variables() <= documented
    prefixes = tuple(p for p, _ in check.ROLES.values())
    # Interpolation variables must not look like service settings (they never reach one).
    assert not [v for v in documented if v.startswith(prefixes)]
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in declared, f"{name}: {source} is not a named volume"


def test_rabbitmq_has_management_and_a_healthcheck(compose: Obj) -> None:
    rabbit = compose["services"]["rabbitmq"]
    # The official image by default; RABBITMQ_IMAGE swaps in a local one (scripts/containers.sh).
    official = r"rabbitmq:(3\.13|4\.\d+)-management"
    assert re.fullmatch(rf"\$\{{RABBITMQ_IMAGE:-{official}\}}", rabbit["image"])
    assert "rabbitmq-diagnostics" in rabbit["healthcheck"]["test"]


# ----------------------------------------------------------------- kubernetes


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("namePrefix: x-\nresources: []\n")
    with pytest.raises(render.RenderError, match="namePrefix"):
        render.render(tmp_path)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_renderer_output_equals_kubectl_kustomize(
    overlay: str, overlays: dict[str, list[Obj]]
) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(check.OVERLAYS / overlay)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    theirs = {render._key(o): o for o in yaml.safe_load_all(out.stdout) if o}
    ours = {render._key(o): o for o in overlays[overlay]}
    assert ours == theirs


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_rendered_manifests_are_valid_kubernetes_and_crd_objects(
    overlay: str, overlays: dict[str, list[Obj]]
) -> None:
    assert check.k8s_errors(overlays[overlay]) == []
    kinds = {o["kind"] for o in overlays[overlay]}
    assert {"ScaledObject", "TriggerAuthentication", "Elasticsearch", "RabbitmqCluster",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"} <= kinds  # fmt: skip


def test_strict_validation_catches_a_misspelt_field_in_a_deployment(
    overlays: dict[str, list[Obj]],
) -> None:
    deployment = copy.deepcopy(find(overlays["cpu"], "Deployment", "elastichash-gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    errors = check.k8s_errors([deployment])
    assert errors
    assert "readinesProbe" in errors[0]


@pytest.mark.parametrize(
    ("kind", "name", "path", "value", "expected"),
    [
        ("ScaledObject", "elastichash-encoder", ["spec", "minReplicas"], 1, "minReplicas"),
        ("ScaledObject", "elastichash-encoder", ["spec", "maxReplicaCount"], "20", "integer"),
        ("TriggerAuthentication", "elastichash-rabbitmq", ["spec", "secretTargetRef"],
         [{"parameter": "host", "name": "elastichash-amqp"}], "'key' is a required"),
        ("Elasticsearch", "elastichash", ["spec", "nodeSets", 0, "name"],
         "a-node-set-name-longer-than-23", "too long"),
        ("Elasticsearch", "elastichash", ["spec", "nodeSet"], [], "nodeSet"),
        ("RabbitmqCluster", "elastichash-rabbitmq", ["spec", "replicas"], -1, "minimum"),
        ("RabbitmqCluster", "elastichash-rabbitmq", ["spec", "persistence", "storage"],
         "20 GB", "not valid under any"),
    ],
)  # fmt: skip
def test_crd_schemas_reject_wrong_fields(
    overlays: dict[str, list[Obj]],
    kind: str,
    name: str,
    path: list[Any],
    value: Any,
    expected: str,
) -> None:
    obj = copy.deepcopy(find(overlays["cpu"], kind, name))
    node = obj
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    errors = crds.validate_all([obj])
    assert any(expected in e for e in errors), errors


def test_every_crd_kind_in_the_manifests_has_a_vendored_schema() -> None:
    assert set(crds.load_schemas()) == {
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("keda.sh/v1alpha1", "TriggerAuthentication"),
        ("elasticsearch.k8s.elastic.co/v1", "Elasticsearch"),
        ("rabbitmq.com/v1beta1", "RabbitmqCluster"),
    }


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_deployments_have_probes_resources_security_and_a_disruption_budget(
    overlay: str, overlays: dict[str, list[Obj]]
) -> None:
    objects = overlays[overlay]
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert container["readinessProbe"]["httpGet"]["path"] in {"/readyz", "/healthz"}
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["resources"]["requests"]["cpu"], name
            assert container["resources"]["limits"]["memory"], name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert any(set(b["spec"]["selector"]["matchLabels"].items()) <= set(labels.items())
                   for b in budgets), f"{name} has no PodDisruptionBudget"  # fmt: skip


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_workers_scale_on_their_queue_with_keda_and_outlive_their_drain_timeout(
    overlay: str, overlays: dict[str, list[Obj]]
) -> None:
    objects = overlays[overlay]
    for name, queue in WORKER_QUEUES.items():
        deployment = find(objects, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > DRAIN_TIMEOUT_S
        container = pod["containers"][0]
        assert container["livenessProbe"]["httpGet"]["port"] == "health"
        assert container["ports"] == [{"name": "health", "containerPort": 9100}]
        scaled = find(objects, "ScaledObject", name)
        assert scaled["spec"]["scaleTargetRef"]["name"] == name
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq"
        meta = trigger["metadata"]
        assert (meta["protocol"], meta["mode"], meta["queueName"]) == ("http", "QueueLength", queue)
        assert int(meta["value"]) > 0
        auth = find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert {"parameter": "host", "name": "elastichash-amqp", "key": "management-url"} in (
            auth["spec"]["secretTargetRef"]
        )


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_gateway_and_search_have_hpas_and_services(
    overlay: str, overlays: dict[str, list[Obj]]
) -> None:
    objects = overlays[overlay]
    for name, port in (("elastichash-gateway", 8080), ("elastichash-search", 8081)):
        hpa = find(objects, "HorizontalPodAutoscaler", name)
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": name}  # fmt: skip
        assert hpa["spec"]["minReplicas"] >= 2
        service = find(objects, "Service", name)
        assert service["spec"]["ports"][0]["port"] == port
        deployment = find(objects, "Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert set(service["spec"]["selector"].items()) <= set(labels.items())
    gateway = find(objects, "ConfigMap", "elastichash-gateway")["data"]
    assert gateway["EH_GATEWAY_INDEX__SEARCH_URL"] == "http://elastichash-search:8081"


def test_gpu_overlay_gives_encoders_the_gpu_image_and_one_gpu_and_nothing_else_a_gpu(
    overlays: dict[str, list[Obj]],
) -> None:
    for overlay in ("cpu", "gpu"):
        for obj, role, container in check.k8s_containers(overlays[overlay]):
            limits = container["resources"].get("limits", {})
            gpu = overlay == "gpu" and role == "encoder-worker"
            assert ("nvidia.com/gpu" in limits) == gpu, (overlay, obj["metadata"]["name"])
            assert container["image"].startswith("elastichash-gpu:" if gpu else "elastichash:")
    encoder = find(overlays["gpu"], "ConfigMap", "elastichash-encoder")["data"]
    assert encoder["EH_ENCODER_MODEL__REQUIRE_GPU"] == "true"
    assert encoder["EH_ENCODER_MODEL__PROVIDERS"] == '["CUDAExecutionProvider"]'


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_config_and_secret_references_resolve(overlay: str, overlays: dict[str, list[Obj]]) -> None:
    objects = overlays[overlay]
    config_maps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    # Created outside kustomize: by make-amqp-secret.sh and by ECK for the Elasticsearch object.
    external_secrets = {"elastichash-amqp": {"url", "management-url"},
                        "elastichash-es-elastic-user": {"elastic"}}  # fmt: skip
    for _, _, container in check.k8s_containers(objects):
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in config_maps
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in external_secrets[ref["name"]]
        assert not [e for e in container.get("env", []) if "password" in e.get("value", "")]
    assert find(objects, "Elasticsearch", "elastichash")
    assert find(objects, "RabbitmqCluster", "elastichash-rabbitmq")


# ----------------------------------------------------------------- env vars


def test_every_env_var_has_its_service_prefix_and_names_a_setting(
    compose: Obj, overlays: dict[str, list[Obj]]
) -> None:
    assert check.env_errors(None, compose) == []
    for objects in overlays.values():
        assert check.env_errors(objects, None) == []


@pytest.mark.parametrize(
    ("var", "role", "expected"),
    [
        ("EH_GATEWAY_AMQP__URL", "encoder-worker", "reads only EH_ENCODER_"),
        ("EH_INDEXER_INDEX__ES_ULR", "indexer-worker", "no field 'es_ulr'"),
        ("EH_ENCODER_MODLE__PATH", "encoder-worker", "modle"),
    ],
)
def test_env_var_check_flags_wrong_prefixes_and_unknown_settings(
    var: str, role: str, expected: str
) -> None:
    errors = check.settings_errors(var, role)
    assert errors
    assert expected in errors[0]


# ----------------------------------------------------------------- Dockerfile


def dockerfile_stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> [(INSTRUCTION, arguments)], with continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        if instr.upper() == "FROM":
            match = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            assert match is not None
            current = [("FROM", match.group(1))]
            stages[match.group(2) or f"stage{len(stages)}"] = current
        else:
            current.append((instr.upper(), args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, list[tuple[str, str]]]:
    return dockerfile_stages(REPO / "deploy" / "Dockerfile")


def args_of(stage: list[tuple[str, str]], instr: str) -> list[str]:
    return [a for i, a in stage if i == instr]


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_runtime_images_run_as_non_root_under_an_init_with_a_healthcheck(
    stages: dict[str, list[tuple[str, str]]], target: str
) -> None:
    stage = stages[target]
    (user,) = args_of(stage, "USER")
    assert user.split(":")[0] not in {"root", "0"}
    assert int(user.split(":")[0]) >= 1000
    (entrypoint,) = args_of(stage, "ENTRYPOINT")
    exec_form = yaml.safe_load(entrypoint)
    assert exec_form[0].endswith("/tini")
    assert exec_form[1:] == ["--", "elastichash"]
    assert any("tini" in a for s in ("cpu", "gpu-base") for a in args_of(stages[s], "RUN"))
    (health,) = args_of(stage, "HEALTHCHECK")
    assert "CMD" in health
    assert "eh-healthcheck" in health
    assert any("/models" in a for a in args_of(stage, "COPY"))


def test_one_build_stage_serves_both_targets_installing_exactly_one_onnxruntime(
    stages: dict[str, list[tuple[str, str]]],
) -> None:
    assert stages["cpu-base"][0][1] == "${PYTHON_IMAGE}"
    assert stages["gpu-base"][0][1] == "${CUDA_IMAGE}"
    assert stages["build"][0][1] == "${RUNTIME}-base"
    assert "cpu-build" not in stages
    assert "gpu-build" not in stages
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "ARG RUNTIME=cpu" in text
    assert re.search(r"ARG CUDA_IMAGE=nvidia/cuda:12\.\S+-cudnn-runtime", text)
    build = stages["build"]
    installs = [a for a in args_of(build, "RUN") if "pip install" in a]
    # Dependencies of exactly one onnxruntime extra first (their own layer), then the
    # project without dependencies.
    assert len(installs) == 2
    assert 'requirements.py pyproject.toml "${RUNTIME},${EXTRAS}"' in installs[0]
    assert installs[1] == "pip install --no-deps --no-build-isolation /src"
    assert not any("onnxruntime" in a for a in args_of(build, "ARG"))
    models = " ".join(args_of(build, "RUN"))
    assert "build-default /models/efficientnet-lite0.onnx" in models
    assert "build-default --model visual /models/visual.onnx" in models
    for target in ("cpu", "gpu"):
        copies = args_of(stages[target], "COPY")
        assert "--from=build /opt/venv /opt/venv" in copies
        assert "--from=build /models /models" in copies
        # a venv built for the other runtime (other base, other Python) is refused
        assert any(f"grep -qx {target} /opt/venv/runtime" in a
                   for a in args_of(stages[target], "RUN"))
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras["cpu"] == ["onnxruntime>=1.18"] or "onnxruntime-gpu" not in str(extras["cpu"])
    assert all("onnxruntime" not in str(extras[e]) for e in ("es", "amqp", "faiss"))


def test_build_context_keeps_what_the_dockerfile_copies(
    stages: dict[str, list[tuple[str, str]]],
) -> None:
    patterns = [p for p in (REPO / ".dockerignore").read_text().splitlines()
                if p and not p.startswith("#")]  # fmt: skip
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    for stage in stages.values():
        for copy_args in args_of(stage, "COPY"):
            if copy_args.startswith("--from"):
                continue
            for source in copy_args.split()[:-1]:
                ignored = False
                for pattern in patterns:
                    negate = pattern.startswith("!")
                    if fnmatch.fnmatch(source, pattern.lstrip("!")):
                        ignored = not negate
                assert not ignored, f"{source} is excluded by .dockerignore"
                assert (REPO / source).exists() or f"{source}*" in packages, source


# ----------------------------------------------------------------- helper scripts


def test_container_healthcheck_passes_only_when_healthz_answers_200() -> None:
    import http.server
    import threading

    import healthcheck

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert healthcheck.main([str(port)]) == 0
        server_closed_port = port
    finally:
        server.shutdown()
        server.server_close()
    assert healthcheck.main([str(server_closed_port)]) == 1


def test_amqp_secret_script_is_valid_bash_and_writes_the_keys_the_manifests_read() -> None:
    script = REPO / "deploy" / "k8s" / "make-amqp-secret.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=10)
    text = script.read_text()
    assert "--from-literal=url=" in text
    assert "--from-literal=management-url=" in text


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_queue_length_targets_exceed_the_consumer_prefetch(
    overlay: str, overlays: dict[str, list[Obj]]
) -> None:
    # KEDA counts unacked (prefetched) messages too: a target at or below the prefetch would
    # keep every replica busy-looking and never let the workers scale in.
    from elastichash.settings import AmqpSettings

    prefetch = AmqpSettings().prefetch
    for name in WORKER_QUEUES:
        (trigger,) = find(overlays[overlay], "ScaledObject", name)["spec"]["triggers"]
        assert int(trigger["metadata"]["value"]) > prefetch


def test_compose_does_not_add_a_second_init_in_front_of_the_images_tini(compose: Obj) -> None:
    # `init: true` would run docker-init as PID 1 and tini as its child, which then warns
    # that it cannot reap orphans; the image's own tini is the init.
    for name, service in compose["services"].items():
        if check.role_of(service.get("command")):
            assert "init" not in service, name
