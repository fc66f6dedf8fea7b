#!/usr/bin/env python3
"""Render a kustomization offline, without the kustomize binary.

Implements exactly the subset deploy/k8s uses, and refuses anything else rather than
rendering it differently from kustomize:

- ``resources``: YAML files (multi-document) and directories holding a kustomization;
- ``labels``: ``pairs`` with ``includeSelectors: false`` and optional ``includeTemplates``
  (pod templates of the built-in workload kinds);
- ``patches``: RFC 6902 JSON patches (inline ``patch`` or ``path``) selected by ``target``
  (group, version, kind, name, namespace);
- ``images``: ``name`` -> ``newName`` / ``newTag`` / ``digest`` on every container image;
- ``namespace``.

Order of transformations, as in kustomize: resources, labels, patches, images, namespace.
tests/unit/test_deploy.py compares the output with ``kubectl kustomize`` when kubectl is installed.

    python deploy/render.py deploy/k8s/overlays/cpu > manifests.yaml
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "labels", "patches", "images", "namespace"}
# Kinds whose spec.template is a pod template (kustomize's built-in label field specs).
POD_TEMPLATE_KINDS = {"Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job"}


class RenderError(ValueError):
    """The kustomization uses something this renderer does not implement, or is broken."""


def render(directory: Path | str) -> list[Obj]:
    """Return the objects that ``kustomize build directory`` would output (order aside)."""
    root = Path(directory)
    kfile = next((root / n for n in KUSTOMIZATION_NAMES if (root / n).is_file()), None)
    if kfile is None:
        raise RenderError(f"{root}: no kustomization.yaml")
    spec: Obj = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(spec) - SUPPORTED_KEYS
    if unknown:
        raise RenderError(f"{kfile}: unsupported kustomization fields {sorted(unknown)}")

    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        path = (root / entry).resolve()
        if path.is_dir():
            objects.extend(render(path))
        elif path.is_file():
            objects.extend(_load_documents(path))
        else:
            raise RenderError(f"{kfile}: resource {entry!r} not found")
    _check_unique(objects, kfile)

    for label in spec.get("labels", []):
        _apply_labels(objects, label, kfile)
    for patch in spec.get("patches", []):
        _apply_patch(objects, patch, root, kfile)
    for image in spec.get("images", []):
        _apply_image(objects, image)
    if "namespace" in spec:
        for obj in objects:
            obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    return objects


def _load_documents(path: Path) -> Iterator[Obj]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise RenderError(f"{path}: every document needs apiVersion and kind")
        yield doc


def _key(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta.get("name", ""))


def _check_unique(objects: list[Obj], where: Path) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        key = _key(obj)
        if key in seen:
            raise RenderError(f"{where}: duplicate resource {key}")
        seen.add(key)


def _apply_labels(objects: list[Obj], label: Obj, where: Path) -> None:
    if label.get("includeSelectors", False):
        raise RenderError(f"{where}: labels.includeSelectors: true is not implemented")
    pairs: dict[str, str] = label.get("pairs", {})
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
        if label.get("includeTemplates", False) and obj["kind"] in POD_TEMPLATE_KINDS:
            template = obj.get("spec", {}).get("template")
            if template is not None:
                template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _matches(obj: Obj, target: Obj) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    meta = obj.get("metadata", {})
    wanted = {
        "group": group,
        "version": version,
        "kind": obj["kind"],
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", ""),
    }
    unknown = set(target) - set(wanted)
    if unknown:
        raise RenderError(f"patch target fields {sorted(unknown)} are not implemented")
    return all(wanted[k] == v for k, v in target.items())


def _apply_patch(objects: list[Obj], patch: Obj, root: Path, where: Path) -> None:
    if "path" in patch:
        text = (root / patch["path"]).read_text()
    elif "patch" in patch:
        text = patch["patch"]
    else:
        raise RenderError(f"{where}: a patch needs 'patch' or 'path'")
    ops = yaml.safe_load(text)
    if not isinstance(ops, list):
        raise RenderError(f"{where}: only RFC 6902 (list of operations) patches are implemented")
    targets = [o for o in objects if _matches(o, patch.get("target", {}))]
    if not targets:
        raise RenderError(f"{where}: patch target {patch.get('target')} matches nothing")
    for obj in targets:
        for op in ops:
            json_patch(obj, op)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, for_add: bool) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit():
        raise RenderError(f"bad list index {token!r}")
    idx = int(token)
    if idx > len(container) or (idx == len(container) and not for_add):
        raise RenderError(f"list index {idx} out of range")
    return idx


def json_patch(doc: Obj, op: Obj) -> None:
    """Apply one RFC 6902 operation (add, replace, remove, test) in place."""
    kind = op.get("op")
    tokens = _pointer(op["path"])
    parent: Any = doc
    for token in tokens[:-1]:
        parent = (
            parent[_index(parent, token, for_add=False)]
            if isinstance(parent, list)
            else (parent[token])
        )
    last = tokens[-1]
    value = copy.deepcopy(op.get("value"))
    if kind == "test":
        current = (
            parent[_index(parent, last, for_add=False)]
            if isinstance(parent, list)
            else (parent.get(last))
        )
        if current != value:
            raise RenderError(f"test failed at {op['path']}: {current!r} != {value!r}")
    elif kind == "add":
        if isinstance(parent, list):
            parent.insert(_index(parent, last, for_add=True), value)
        else:
            parent[last] = value
    elif kind == "replace":
        if isinstance(parent, list):
            parent[_index(parent, last, for_add=False)] = value
        elif last not in parent:
            raise RenderError(f"replace: {op['path']} does not exist")
        else:
            parent[last] = value
    elif kind == "remove":
        if isinstance(parent, list):
            del parent[_index(parent, last, for_add=False)]
        else:
            del parent[last]
    else:
        raise RenderError(f"JSON patch op {kind!r} is not implemented")


def pod_specs(obj: Obj) -> Iterator[Obj]:
    """The pod specs inside a built-in object (Pod, workloads, CronJob)."""
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        yield spec
    elif obj["kind"] in POD_TEMPLATE_KINDS:
        yield spec.get("template", {}).get("spec", {})
    elif obj["kind"] == "CronJob":
        yield spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})


def _split_image(ref: str) -> tuple[str, str]:
    """``repo/name:tag@digest`` -> (``repo/name``, ``:tag@digest``)."""
    base = ref.split("@", 1)[0]
    last = base.rsplit("/", 1)[-1]
    name = base.rsplit(":", 1)[0] if ":" in last else base
    return name, ref[len(name) :]


def _apply_image(objects: list[Obj], image: Obj) -> None:
    for obj in objects:
        for pod in pod_specs(obj):
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                name, rest = _split_image(container.get("image", ""))
                if name != image["name"]:
                    continue
                new = image.get("newName", name)
                if "digest" in image:
                    container["image"] = f"{new}@{image['digest']}"
                elif "newTag" in image:
                    container["image"] = f"{new}:{image['newTag']}"
                else:
                    container["image"] = new + rest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: render.py KUSTOMIZATION_DIR", file=sys.stderr)
        return 2
    yaml.safe_dump_all(render(args[0]), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
