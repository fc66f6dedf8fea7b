#!/usr/bin/env python3
"""Offline checks of the deployment files; tests/unit/test_deploy.py asserts on these.

    python deploy/check.py      # prints every problem, exit status 1 if there is any

- docker-compose.yml against the Compose specification's JSON schema (deploy/schemas);
- every kustomize overlay rendered (deploy/render.py), built-in kinds validated with
  kubernetes-validate in strict mode for each Kubernetes version in K8S_VERSIONS, custom
  resources against the vendored CRD schemas (deploy/crds.py);
- environment variables: each of our containers only sets variables of its own service's
  prefix, and each one names a settings field that exists.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The services' settings classes, when run as a script from anywhere.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
import crds
import render

DEPLOY = Path(__file__).resolve().parent
REPO = DEPLOY.parent
COMPOSE = REPO / "docker-compose.yml"
OVERLAYS = DEPLOY / "k8s" / "overlays"
K8S_VERSIONS = ("1.30.0", "1.37.0")  # oldest we support, newest kubernetes-validate knows

# Command of the image -> (env prefix, package whose config.py holds the settings class).
ROLES = {
    "gateway": ("EH_GATEWAY_", "gateway"),
    "encoder-worker": ("EH_ENCODER_", "encoder_worker"),
    "indexer-worker": ("EH_INDEXER_", "indexer_worker"),
    "search-service": ("EH_SEARCH_", "search_service"),
}
# Variables set only to be expanded into another variable ($(NAME) in Kubernetes).
INTERPOLATION_ONLY = {"ELASTIC_PASSWORD"}
# Settings the deployment relies on before the services' config modules exist; once they do,
# the real settings classes are checked instead (see settings_errors).
ASSUMED_TOP_LEVEL = {"host", "port", "health_port", "drain_timeout_s"}
NESTED_GROUPS = {"model": "ModelSettings", "index": "IndexSettings", "amqp": "AmqpSettings",
                 "limits": "ImageLimits", "images": "ImageLimits"}  # fmt: skip


def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def compose_schema_errors(doc: dict[str, Any]) -> list[str]:
    import json

    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def render_overlays() -> dict[str, list[dict[str, Any]]]:
    return {d.name: render.render(d) for d in sorted(OVERLAYS.iterdir()) if d.is_dir()}


def k8s_errors(objects: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    custom = []
    for obj in objects:
        name = f"{obj['kind']}/{obj.get('metadata', {}).get('name')}"
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                custom.append(obj)
                break
            except kubernetes_validate.ValidationError as e:
                path = "/".join(map(str, e.absolute_path))
                problems.append(f"{name} (k8s {version}): {path}: {e.message}")
    try:
        problems.extend(crds.validate_all(custom))
    except crds.UnknownKindError as e:
        problems.append(str(e))
    return problems


def role_of(command: list[str] | str | None) -> str | None:
    words = command.split() if isinstance(command, str) else list(command or [])
    return next((w for w in words if w in ROLES), None)


def _settings_class(package: str, prefix: str) -> type[Any] | None:
    try:
        module = importlib.import_module(f"{package}.config")
    except ImportError:
        return None
    from pydantic_settings import BaseSettings

    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, BaseSettings)
            and value.model_config.get("env_prefix", "").upper() == prefix
        ):
            return value
    return None


def settings_errors(var: str, role: str) -> list[str]:
    """Does ``var`` name a settings field of the service that runs as ``role``?"""
    prefix, package = ROLES[role]
    if var in INTERPOLATION_ONLY:
        return []
    if not var.startswith(prefix):
        return [f"{var}: {role} reads only {prefix}* variables"]
    top, _, nested = var[len(prefix) :].lower().partition("__")
    cls = _settings_class(package, prefix)
    from elastichash import settings

    group: Any = None
    if cls is not None:
        if top not in cls.model_fields:
            return [f"{var}: {cls.__name__} has no field {top!r}"]
        group = cls.model_fields[top].annotation if nested else None
    elif nested:
        group = getattr(settings, NESTED_GROUPS.get(top, ""), None)
        if group is None:
            return [f"{var}: no settings group {top!r}"]
    elif top not in ASSUMED_TOP_LEVEL:
        return [f"{var}: unknown setting {top!r} ({package}.config not importable yet)"]
    for part in nested.split("__") if nested else []:  # groups nest: INDEX__ENGINE__URL
        fields = getattr(group, "model_fields", None)
        if not fields or part not in fields:
            return [f"{var}: settings group {top!r} has no field {nested!r}"]
        group = fields[part].annotation
    return []


def compose_env(doc: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(service, role, var, service dict) for every env var of our services in compose."""
    for name, service in doc["services"].items():
        role = role_of(service.get("command"))
        if role is None:
            continue
        env = service.get("environment", {})
        keys = env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        for var in keys:
            yield name, role, var, service


def k8s_containers(
    objects: list[dict[str, Any]],
) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    """(object, role, container) for every container of ours in rendered manifests."""
    for obj in objects:
        for pod in render.pod_specs(obj):
            for container in pod.get("containers", []):
                role = role_of(container.get("command", []) + container.get("args", []))
                if role is not None:
                    yield obj, role, container


def k8s_env_vars(objects: list[dict[str, Any]], container: dict[str, Any]) -> list[str]:
    """Env var names a container gets: env entries plus the keys of envFrom ConfigMaps."""
    names = [e["name"] for e in container.get("env", [])]
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef", {}).get("name")
        for obj in objects:
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == ref:
                names.extend(obj.get("data", {}))
    return names


def env_errors(objects: list[dict[str, Any]] | None, compose: dict[str, Any] | None) -> list[str]:
    problems: list[str] = []
    for service, role, var, _ in compose_env(compose or {"services": {}}):
        problems += [f"compose {service}: {p}" for p in settings_errors(var, role)]
    for obj, role, container in k8s_containers(objects or []):
        names = k8s_env_vars(objects or [], container)
        for var in names:
            problems += [f"{obj['kind']}/{obj['metadata']['name']}: {p}"
                         for p in settings_errors(var, role)]  # fmt: skip
        for var in INTERPOLATION_ONLY & set(names):
            uses = [e for e in container.get("env", []) if f"$({var})" in e.get("value", "")]
            if not uses:
                problems.append(f"{obj['metadata']['name']}: {var} is set but never expanded")
    return problems


def compose_variables(path: Path = COMPOSE) -> set[str]:
    """Names interpolated as ${NAME} / ${NAME:-default} in the compose file."""
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))


def main() -> int:
    problems = compose_schema_errors(load_compose())
    overlays = render_overlays()
    for name, objects in overlays.items():
        problems += [f"[{name}] {p}" for p in k8s_errors(objects)]
        problems += [f"[{name}] {p}" for p in env_errors(objects, None)]
    problems += env_errors(None, load_compose())
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
