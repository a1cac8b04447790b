#!/usr/bin/env python3
"""Minimal kustomize renderer for Jimini's own k8s/ tree (no kustomize binary needed).

It implements exactly the subset of kustomize v5 that k8s/ uses and refuses anything else, so
a kustomization that would render differently under real kustomize fails loudly here:

  resources        files (multi-document YAML) and directories holding a kustomization
  configMapGenerator / secretGenerator
                   files (``path`` or ``key=path``), literals (``K=V``), envs (``K=V`` lines),
                   options / generatorOptions: disableNameSuffixHash, labels, annotations;
                   secret ``type``; the name-suffix hash is kustomize's (same 10 characters)
  patches          ``path`` or inline ``patch``: strategic merge (merge keys for the pod-spec
                   lists, ``$patch: delete`` of whole objects and of list items) or JSON 6902
                   (with ``target``); targets by kind / name / namespace / group / version
  namespace        sets metadata.namespace on namespaced kinds (renames a Namespace object,
                   as kustomize does)
  labels           pairs, includeSelectors, includeTemplates
  images           name, newName, newTag, digest
  name references  generated ConfigMap/Secret names (hash suffix) are rewritten wherever a pod
                   spec refers to them: volumes, projected volumes, env, envFrom

Usage: kustomize_render.py DIR [-o FILE]   (prints multi-document YAML, like `kustomize build`)
"""

from __future__ import annotations

import argparse
import base64
import copy
import fnmatch
import hashlib
import json
import os
import sys
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "patches",
    "namespace",
    "labels",
    "images",
}

# Kinds without a namespace (the ones that can plausibly show up in this repo).
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
    "RuntimeClass",
}

# kustomize's legacy output order (the default of `kustomize build`), first kinds ...
ORDER_FIRST = [
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
]
# ... and last kinds; everything else sorts in between by kind, then name.
ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]

# Strategic-merge keys for the lists this repo patches (from the Kubernetes API's
# patchMergeKey tags). Lists not named here are replaced wholesale, as the API does.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "topologySpreadConstraints": "topologyKey",
}

WORKLOAD_POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}

SELECTOR_PATHS = {
    "Deployment": [("spec", "selector", "matchLabels")],
    "StatefulSet": [("spec", "selector", "matchLabels")],
    "DaemonSet": [("spec", "selector", "matchLabels")],
    "ReplicaSet": [("spec", "selector", "matchLabels")],
    "Service": [("spec", "selector")],
    "PodDisruptionBudget": [("spec", "selector", "matchLabels")],
}

TEMPLATE_LABEL_PATHS = {
    "Deployment": ("spec", "template", "metadata", "labels"),
    "StatefulSet": ("spec", "template", "metadata", "labels"),
    "DaemonSet": ("spec", "template", "metadata", "labels"),
    "ReplicaSet": ("spec", "template", "metadata", "labels"),
    "Job": ("spec", "template", "metadata", "labels"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "metadata", "labels"),
}

# Annotation used internally to remember a generated object's name before its hash suffix.
ORIG_NAME = "internal.jimini/original-name"


class RenderError(Exception):
    pass


# --------------------------------------------------------------------------- helpers


def _load_yaml_docs(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise RenderError(f"{path}: every document must be a Kubernetes object with apiVersion and kind")
        d.setdefault("metadata", {})
        if "name" not in d["metadata"]:
            raise RenderError(f"{path}: {d['kind']} without metadata.name")
    return docs


def _find_kustomization(directory: str) -> str:
    for name in KUSTOMIZATION_FILES:
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    raise RenderError(f"{directory}: no kustomization.yaml")


def _inside(root: str, path: str) -> bool:
    root = os.path.realpath(root)
    path = os.path.realpath(path)
    return path == root or path.startswith(root + os.sep)


def _file_in_root(root: str, rel: str, what: str) -> str:
    p = os.path.normpath(os.path.join(root, rel))
    # kustomize's default load restrictor: files must live under the kustomization root.
    if not _inside(root, p):
        raise RenderError(f"{root}: {what} '{rel}' is outside the kustomization root (LoadRestrictionsRootOnly)")
    if not os.path.isfile(p):
        raise RenderError(f"{root}: {what} '{rel}' not found")
    return p


def _go_json(obj: Any) -> str:
    """json.Marshal as Go does it: sorted keys, compact, HTML characters escaped."""
    s = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (
        s.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def kustomize_hash(obj: dict) -> str:
    """The suffix kustomize appends to generated names (api/hasher).

    kustomize looks up "metadata/name" as ONE path segment, which never matches, so the name
    it hashes is always "" — reproduced here on purpose to get byte-identical names.
    """
    if obj["kind"] == "ConfigMap":
        m: dict[str, Any] = {"kind": "ConfigMap", "name": "", "data": obj.get("data", "")}
        if isinstance(obj.get("binaryData"), dict):
            m["binaryData"] = obj["binaryData"]
    elif obj["kind"] == "Secret":
        m = {"kind": "Secret", "type": obj.get("type", ""), "name": "", "data": obj.get("data", "")}
        if isinstance(obj.get("stringData"), dict):
            m["stringData"] = obj["stringData"]
    else:
        raise RenderError(f"cannot hash kind {obj['kind']}")
    hexd = hashlib.sha256(_go_json(m).encode("utf-8")).hexdigest()[:10]
    return hexd.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        if not isinstance(obj, dict) or p not in obj:
            return None
        obj = obj[p]
    return obj


def _ensure(obj: dict, path: tuple) -> dict:
    for p in path:
        if obj.get(p) is None:
            obj[p] = {}
        obj = obj[p]
    return obj


def _key(obj: dict) -> tuple:
    md = obj.get("metadata", {})
    return (obj["apiVersion"], obj["kind"], md.get("namespace", ""), md["name"])


# --------------------------------------------------------------------------- generators


def _parse_kv(text: str, where: str) -> tuple[str, str]:
    if "=" not in text:
        raise RenderError(f"{where}: '{text}' is not KEY=VALUE")
    k, v = text.split("=", 1)
    k = k.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        v = v[1:-1]
    return k, v


def _generator_data(root: str, gen: dict, where: str) -> dict[str, str]:
    data: dict[str, str] = {}
    allowed = {"name", "namespace", "behavior", "files", "literals", "envs", "options", "type"}
    unknown = set(gen) - allowed
    if unknown:
        raise RenderError(f"{where}: unsupported generator fields {sorted(unknown)}")
    if gen.get("behavior", "create") != "create":
        raise RenderError(f"{where}: only behavior: create is supported")

    def put(k: str, v: str) -> None:
        if k in data:
            raise RenderError(f"{where}: duplicate key '{k}'")
        data[k] = v

    for env in gen.get("envs", []) or []:
        p = _file_in_root(root, env, "env file")
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if "=" not in line:
                    raise RenderError(f"{p}:{n}: env line without '=' (values from the environment are not supported)")
                k, v = line.split("=", 1)
                put(k.strip(), v)
    for lit in gen.get("literals", []) or []:
        put(*_parse_kv(lit, where))
    for spec in gen.get("files", []) or []:
        if "=" in spec:
            k, rel = spec.split("=", 1)
        else:
            k, rel = os.path.basename(spec), spec
        p = _file_in_root(root, rel, "generator file")
        with open(p, encoding="utf-8") as f:
            put(k, f.read())
    return data


def _run_generators(root: str, kust: dict) -> list[dict]:
    out = []
    global_opts = kust.get("generatorOptions") or {}
    for kind, field in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for gen in kust.get(field, []) or []:
            where = f"{root}: {field} {gen.get('name')}"
            if "name" not in gen:
                raise RenderError(f"{root}: {field} entry without name")
            data = _generator_data(root, gen, where)
            opts = dict(global_opts)
            opts.update(gen.get("options") or {})
            unknown = set(opts) - {"disableNameSuffixHash", "labels", "annotations"}
            if unknown:
                raise RenderError(f"{where}: unsupported generator options {sorted(unknown)}")
            obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": gen["name"]}}
            if gen.get("namespace"):
                obj["metadata"]["namespace"] = gen["namespace"]
            if opts.get("labels"):
                obj["metadata"]["labels"] = dict(opts["labels"])
            if opts.get("annotations"):
                obj["metadata"]["annotations"] = dict(opts["annotations"])
            # An empty generator yields no `data` key at all (as kustomize does).
            if kind == "ConfigMap":
                if data:
                    obj["data"] = data
            else:
                obj["type"] = gen.get("type", "Opaque")
                if data:
                    obj["data"] = {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in data.items()}
            if not opts.get("disableNameSuffixHash"):
                obj["metadata"].setdefault("annotations", {})[ORIG_NAME] = gen["name"]
                obj["metadata"]["name"] = f"{gen['name']}-{kustomize_hash(obj)}"
            out.append(obj)
    return out


# --------------------------------------------------------------------------- patches


def _merge_key_for(field: str, items: list) -> str | None:
    if field == "ports":
        if all(isinstance(i, dict) and "containerPort" in i for i in items):
            return "containerPort"
        if all(isinstance(i, dict) and "port" in i for i in items):
            return "port"
        return None
    return MERGE_KEYS.get(field)


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    if isinstance(patch, dict) and isinstance(base, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        out = dict(base)
        for k, v in patch.items():
            if k == "$patch":
                continue
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = _strip_directives(copy.deepcopy(v))
        return out
    if isinstance(patch, list) and isinstance(base, list):
        mk = _merge_key_for(field, base + patch)
        if mk is None:
            return _strip_directives(copy.deepcopy(patch))
        # kustomize (kyaml) order: the patch's items first, in patch order (merged with their base
        # counterpart), then the base items the patch does not mention, in base order.
        by_key = {b.get(mk): b for b in base if isinstance(b, dict)}
        mentioned = set()
        out = []
        for item in patch:
            if not isinstance(item, dict) or mk not in item:
                raise RenderError(f"strategic merge: item of '{field}' lacks merge key '{mk}'")
            mentioned.add(item[mk])
            if item.get("$patch") == "delete":
                continue
            if item[mk] in by_key:
                out.append(strategic_merge(by_key[item[mk]], item, field))
            else:
                out.append(_strip_directives(copy.deepcopy(item)))
        out.extend(b for b in base if not (isinstance(b, dict) and b.get(mk) in mentioned))
        return out
    return _strip_directives(copy.deepcopy(patch))


def _strip_directives(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _strip_directives(x) for k, x in v.items() if k != "$patch"}
    if isinstance(v, list):
        return [_strip_directives(x) for x in v if not (isinstance(x, dict) and x.get("$patch") == "delete")]
    return v


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer '{path}' must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json6902(obj: dict, ops: list) -> dict:
    obj = copy.deepcopy(obj)
    for op in ops:
        kind = op.get("op")
        parts = _pointer(op["path"])
        parent: Any = obj
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if kind in ("add", "replace"):
            val = copy.deepcopy(op["value"])
            if isinstance(parent, list):
                if last == "-":
                    parent.append(val)
                elif kind == "add":
                    parent.insert(int(last), val)
                else:
                    parent[int(last)] = val
            else:
                if kind == "replace" and last not in parent:
                    raise RenderError(f"json6902 replace: {op['path']} does not exist")
                parent[last] = val
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                del parent[last]
        elif kind == "test":
            cur = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if cur != op.get("value"):
                raise RenderError(f"json6902 test failed at {op['path']}")
        else:
            raise RenderError(f"json6902: unsupported op '{kind}'")
    return obj


def _matches_target(obj: dict, target: dict) -> bool:
    unknown = set(target) - {"kind", "name", "namespace", "group", "version"}
    if unknown:
        raise RenderError(f"patch target: unsupported selectors {sorted(unknown)}")
    api = obj["apiVersion"]
    group, version = (api.split("/", 1) if "/" in api else ("", api))
    md = obj["metadata"]
    checks = [
        ("kind", obj["kind"]),
        ("name", md["name"]),
        ("namespace", md.get("namespace", "")),
        ("group", group),
        ("version", version),
    ]
    for field, value in checks:
        if field in target and not fnmatch.fnmatchcase(value, target[field]):
            return False
    return True


def _apply_patches(root: str, kust: dict, resources: list[dict]) -> list[dict]:
    for i, p in enumerate(kust.get("patches", []) or []):
        where = f"{root}: patches[{i}]"
        unknown = set(p) - {"path", "patch", "target", "options"}
        if unknown or p.get("options"):
            raise RenderError(f"{where}: unsupported fields {sorted(unknown | set(p.get('options') or {}))}")
        if "path" in p:
            with open(_file_in_root(root, p["path"], "patch"), encoding="utf-8") as f:
                text = f.read()
        elif "patch" in p:
            text = p["patch"]
        else:
            raise RenderError(f"{where}: needs path or patch")
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        if len(docs) == 1 and isinstance(docs[0], list):
            # JSON 6902 needs an explicit target.
            if "target" not in p:
                raise RenderError(f"{where}: a JSON 6902 patch needs a target")
            hits = [n for n, r in enumerate(resources) if _matches_target(r, p["target"])]
            if not hits:
                raise RenderError(f"{where}: target {p['target']} matches nothing")
            for n in hits:
                resources[n] = json6902(resources[n], docs[0])
            continue
        for doc in docs:
            if not isinstance(doc, dict):
                raise RenderError(f"{where}: not a strategic merge patch")
            if "target" in p:
                hits = [n for n, r in enumerate(resources) if _matches_target(r, p["target"])]
            else:
                md = doc.get("metadata") or {}
                hits = [
                    n
                    for n, r in enumerate(resources)
                    if r["kind"] == doc.get("kind")
                    and r["metadata"]["name"] == md.get("name")
                    and ("namespace" not in md or r["metadata"].get("namespace", "") == md["namespace"])
                ]
            if not hits:
                raise RenderError(f"{where}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')} matches nothing")
            if doc.get("$patch") == "delete":
                resources = [r for n, r in enumerate(resources) if n not in hits]
                continue
            for n in hits:
                body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
                if "target" in p:
                    body.get("metadata", {}).pop("name", None)
                resources[n] = strategic_merge(resources[n], body)
    return resources


# --------------------------------------------------------------------------- transformers


def _set_namespace(resources: list[dict], ns: str) -> None:
    for r in resources:
        if r["kind"] == "Namespace":
            r["metadata"]["name"] = ns
        elif r["kind"] not in CLUSTER_SCOPED:
            r["metadata"]["namespace"] = ns
        for s in r.get("subjects", []) or []:
            if s.get("kind") == "ServiceAccount":
                s["namespace"] = ns


def _apply_labels(resources: list[dict], specs: list) -> None:
    for spec in specs:
        unknown = set(spec) - {"pairs", "includeSelectors", "includeTemplates"}
        if unknown:
            raise RenderError(f"labels: unsupported fields {sorted(unknown)}")
        pairs = {str(k): str(v) for k, v in (spec.get("pairs") or {}).items()}
        sel = bool(spec.get("includeSelectors"))
        tmpl = bool(spec.get("includeTemplates")) or sel
        for r in resources:
            _ensure(r, ("metadata", "labels")).update(pairs)
            if tmpl and r["kind"] in TEMPLATE_LABEL_PATHS:
                _ensure(r, TEMPLATE_LABEL_PATHS[r["kind"]]).update(pairs)
            if sel:
                if r["kind"] in ("NetworkPolicy", "ServiceMonitor", "PodMonitor"):
                    raise RenderError(f"labels.includeSelectors on {r['kind']} is not supported by this renderer")
                for path in SELECTOR_PATHS.get(r["kind"], []):
                    _ensure(r, path).update(pairs)


def _pod_specs(r: dict) -> list[dict]:
    path = WORKLOAD_POD_SPEC_PATHS.get(r["kind"])
    if not path:
        return []
    spec = _get(r, path)
    return [spec] if isinstance(spec, dict) else []


def _containers(pod: dict) -> list[dict]:
    return (pod.get("initContainers") or []) + (pod.get("containers") or [])


def _split_image(image: str) -> tuple[str, str]:
    """('repo/name', suffix) where suffix is ':tag', '@digest' or ''."""
    if "@" in image:
        n, d = image.split("@", 1)
        return n, "@" + d
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _apply_images(resources: list[dict], images: list) -> None:
    for img in images:
        unknown = set(img) - {"name", "newName", "newTag", "digest"}
        if unknown:
            raise RenderError(f"images: unsupported fields {sorted(unknown)}")
        for r in resources:
            for pod in _pod_specs(r):
                for c in _containers(pod):
                    name, suffix = _split_image(c.get("image", ""))
                    if name != img["name"]:
                        continue
                    new = str(img.get("newName", name))
                    if "digest" in img:
                        suffix = "@" + str(img["digest"])
                    elif "newTag" in img:
                        suffix = ":" + str(img["newTag"])
                    c["image"] = new + suffix


def _fix_name_references(resources: list[dict]) -> None:
    renames: dict[tuple, str] = {}
    for r in resources:
        md = r["metadata"]
        orig = (md.get("annotations") or {}).get(ORIG_NAME)
        if orig:
            renames[(r["kind"], md.get("namespace", ""), orig)] = md["name"]
    if not renames:
        return

    def fix(kind: str, ns: str, holder: dict, field: str) -> None:
        if isinstance(holder, dict) and field in holder:
            new = renames.get((kind, ns, holder[field]))
            if new:
                holder[field] = new

    for r in resources:
        ns = r["metadata"].get("namespace", "")
        for pod in _pod_specs(r):
            for v in pod.get("volumes") or []:
                fix("ConfigMap", ns, v.get("configMap"), "name")
                fix("Secret", ns, v.get("secret"), "secretName")
                for src in (v.get("projected") or {}).get("sources") or []:
                    fix("ConfigMap", ns, src.get("configMap"), "name")
                    fix("Secret", ns, src.get("secret"), "name")
            for c in _containers(pod):
                for e in c.get("env") or []:
                    vf = e.get("valueFrom") or {}
                    fix("ConfigMap", ns, vf.get("configMapKeyRef"), "name")
                    fix("Secret", ns, vf.get("secretKeyRef"), "name")
                for e in c.get("envFrom") or []:
                    fix("ConfigMap", ns, e.get("configMapRef"), "name")
                    fix("Secret", ns, e.get("secretRef"), "name")


# --------------------------------------------------------------------------- build


def build(directory: str, _stack: tuple = ()) -> list[dict]:
    directory = os.path.realpath(directory)
    if directory in _stack:
        raise RenderError(f"cycle: {' -> '.join(_stack + (directory,))}")
    kpath = _find_kustomization(directory)
    with open(kpath, encoding="utf-8") as f:
        kust = yaml.safe_load(f) or {}
    unknown = set(kust) - SUPPORTED_KEYS
    if unknown:
        raise RenderError(f"{kpath}: unsupported kustomization fields {sorted(unknown)}")
    if kust.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{kpath}: only kind: Kustomization is supported")

    resources: list[dict] = []
    for res in kust.get("resources", []) or []:
        p = os.path.normpath(os.path.join(directory, res))
        if os.path.isdir(p):
            resources.extend(build(p, _stack + (directory,)))
        else:
            resources.extend(_load_yaml_docs(_file_in_root(directory, res, "resource")))
    resources.extend(_run_generators(directory, kust))

    resources = _apply_patches(directory, kust, resources)
    if kust.get("namespace"):
        _set_namespace(resources, kust["namespace"])
    _apply_labels(resources, kust.get("labels", []) or [])
    _apply_images(resources, kust.get("images", []) or [])
    _fix_name_references(resources)

    seen: dict[tuple, str] = {}
    for r in resources:
        k = _key(r)
        if k in seen:
            raise RenderError(f"{kpath}: duplicate resource {k[1]}/{k[3]} in namespace '{k[2]}'")
        seen[k] = kpath
    return resources


def _order(r: dict) -> tuple:
    kind = r["kind"]
    if kind in ORDER_FIRST:
        rank = ORDER_FIRST.index(kind)
    elif kind in ORDER_LAST:
        rank = 1000 + ORDER_LAST.index(kind)
    else:
        rank = 500
    md = r["metadata"]
    return (rank, kind, md.get("namespace", ""), md["name"])


def render(directory: str) -> list[dict]:
    """Build DIR and return the objects in kustomize's legacy order, internal markers removed."""
    out = build(directory)
    for r in out:
        ann = r["metadata"].get("annotations")
        if ann and ORIG_NAME in ann:
            del ann[ORIG_NAME]
            if not ann:
                del r["metadata"]["annotations"]
    return sorted(out, key=_order)


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line strings (config files inside ConfigMaps) as readable literal blocks.
    if "\n" in value and not any(ch in value for ch in "\t\r") and value == value.rstrip(" "):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_representer)


def to_yaml(objs: list[dict]) -> str:
    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=1 << 20, allow_unicode=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("-o", "--output")
    args = ap.parse_args()
    try:
        text = to_yaml(render(args.dir))
    except (RenderError, OSError, yaml.YAMLError) as e:
        print(f"kustomize_render: {e}", file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
