"""An app's Terraform module runs contained: checked before `terraform init`, refused in words.

A module comes from the app's team (its repository, or its folder of the central catalog). What
it may not do, unless the app's central catalog entry allows it (``allow:``):

* run code on the worker: provisioners (``local-exec``, ``remote-exec``, ``file``) and the
  ``external`` data source;
* reach outside its app: ``terraform_remote_state`` (another state), a backend of its own
  (the pipeline configures the S3 backend per app), file functions on paths outside the module;
* bring providers or modules from elsewhere: only the providers of ``ALLOWED_PROVIDERS``
  (resource types are mapped to their provider by prefix), module sources only inside the
  module's folder.

The same check runs in preflight (nothing created yet) and in the Terraform tasks before init.
Packer templates are the platform's (include/packer), never an app's: nothing to check there.
What this cannot see: code inside an allowed provider itself, which is why the provider list is
short and the tools run with an allow-listed environment (hooks/tool.py base_environment).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amirelease.errors import ConfigError

ALLOWED_PROVIDERS = frozenset({"hashicorp/aws", "terraform"})  # terraform: the built-in terraform_data
_FILE_FUNCS = re.compile(
    r"\b(file|filebase64|filemd5|filesha1|filesha256|filesha512|fileexists|fileset|templatefile)\s*\(\s*"
    r"\"?\s*(/|~|\.\./|\$\{path\.(root|cwd)\}|[^\"),]*\.\./)"
)
_PATH_MODULE_UP = re.compile(r"\$\{path\.module\}/\.\./")


@dataclass(frozen=True)
class Allowances:
    """What an app's central entry allows beyond the defaults (``allow:``)."""

    provisioners: frozenset[str] = frozenset()
    data_sources: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()

    @classmethod
    def from_entry(cls, data: dict[str, Any] | None) -> Allowances:
        allow = (data or {}).get("allow") or {}
        return cls(
            provisioners=frozenset(allow.get("provisioners", [])),
            data_sources=frozenset(allow.get("data_sources", [])),
            providers=frozenset(allow.get("providers", [])),
        )


def _label(key: str) -> str:
    return key.strip('"')


def _blocks(doc: dict[str, Any], kind: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(type, name, body) of every `kind` block (resource, data) in a parsed file."""
    for group in doc.get(kind, []) or []:
        for rtype, named in group.items():
            if rtype == "__is_block__" or not isinstance(named, dict):
                continue
            for name, body in named.items():
                if name != "__is_block__":
                    yield _label(rtype), _label(name), body if isinstance(body, dict) else {}


def _provider_of(rtype: str) -> str:
    prefix = rtype.split("_", 1)[0]
    return "terraform" if prefix == "terraform" else f"hashicorp/{prefix}"


def _normalise_source(source: str) -> str:
    s = source.strip('"').lower().removeprefix("registry.terraform.io/")
    return s if "/" in s else f"hashicorp/{s}"


def _parse(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        doc: dict[str, Any] = json.loads(text)
        return _json_as_hcl(doc)
    import hcl2

    try:
        parsed: dict[str, Any] = hcl2.loads(text)
    except Exception as exc:  # noqa: BLE001 - lark raises many types; all mean "not valid HCL"
        raise ConfigError(
            f"{path.name}: not valid Terraform (HCL): {str(exc).splitlines()[0][:200]}",
            fix="run `terraform validate` on the module and fix the syntax",
        ) from None
    return parsed


def _json_as_hcl(doc: dict[str, Any]) -> dict[str, Any]:
    """*.tf.json in the shape hcl2 gives for *.tf (lists of single-key dicts)."""
    out: dict[str, Any] = {}
    for kind, value in doc.items():
        out[kind] = [value] if isinstance(value, dict) else value
    return out


def violations(module_dir: Path, allow: Allowances = Allowances()) -> list[str]:
    """What the module does that an app's module may not (empty: contained)."""
    found: list[str] = []
    files = sorted([*module_dir.rglob("*.tf"), *module_dir.rglob("*.tf.json")])
    files = [f for f in files if ".terraform" not in f.relative_to(module_dir).parts]
    providers = set(ALLOWED_PROVIDERS) | {_normalise_source(p) for p in allow.providers}
    for f in files:
        rel = f.relative_to(module_dir).as_posix()
        doc = _parse(f)
        for kind in ("resource", "data"):
            for rtype, name, body in _blocks(doc, kind):
                where = f"{rel}: {kind} {rtype}.{name}"
                for prov in body.get("provisioner", []) or []:
                    for ptype in prov:
                        if ptype != "__is_block__" and _label(ptype) not in allow.provisioners:
                            found.append(f"{where} runs a '{_label(ptype)}' provisioner (code on the worker)")
                if kind == "data" and rtype == "external" and "external" not in allow.data_sources:
                    found.append(f"{where} runs a program on the worker (data source 'external')")
                elif kind == "data" and rtype == "terraform_remote_state":
                    found.append(f"{where} reads another Terraform state")
                elif _provider_of(rtype) not in providers and not (kind == "data" and rtype == "external"):
                    found.append(f"{where} needs provider {_provider_of(rtype)}, which is not allowed")
        for group in doc.get("terraform", []) or []:
            for req in group.get("required_providers", []) or []:
                for pname, spec in req.items():
                    if pname == "__is_block__":
                        continue
                    source = _normalise_source(spec.get("source", pname) if isinstance(spec, dict) else pname)
                    if source not in providers:
                        found.append(f"{rel}: requires provider {source}, which is not allowed")
            for backend in group.get("backend", []) or []:
                for btype in backend:
                    if btype != "__is_block__" and _label(btype) != "s3":
                        found.append(f"{rel}: declares backend '{_label(btype)}' (the pipeline sets the S3 backend)")
        for group in doc.get("module", []) or []:
            for name, body in group.items():
                if name == "__is_block__" or not isinstance(body, dict):
                    continue
                source = str(body.get("source", "")).strip('"')
                if not source.startswith("./") or ".." in Path(source).parts:
                    found.append(f"{rel}: module {_label(name)} comes from '{source}' (only ./ folders of the module)")
        text = f.read_text(encoding="utf-8")
        for m in _FILE_FUNCS.finditer(text):
            found.append(f"{rel}: {m.group(1)}() reads a file outside the module")
        if _PATH_MODULE_UP.search(text):
            found.append(f"{rel}: a path climbs out of the module (${{path.module}}/../)")
    return found


def check_module(module_dir: Path, app: str, allow: Allowances = Allowances()) -> None:
    """Refuse, in words, a module that is not contained (ConfigError: nothing was changed)."""
    problems = violations(module_dir, allow)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ConfigError(
            f"the Terraform module of {app} may not run code on the worker or reach outside the app: {shown}",
            fix="remove it from the module (use the AWS provider's resources instead); if the platform team agrees "
            f"that {app} needs it, they list it under allow: in the app's central catalog entry (docs/trust.md)",
        )
