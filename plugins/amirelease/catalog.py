"""The application catalog: one YAML file per application under include/apps/.

Loading validates each file against ``schemas/app.schema.json`` plus rules a schema cannot
say (name matches the file, the base cookbook is never listed by the app, cookbooks and the
Terraform module exist). Errors name the file, the field and the fix. Pure file I/O: safe at
DAG parse time.

The same parser reads an app's entry from a release bundle (see bundle.py), so a
re-release uses the catalog entry, cookbooks, template and module of the release it
repeats, not whatever the worker has checked out today.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from amirelease.catalog_index import REPO_ROOT as REPO_ROOT
from amirelease.catalog_index import VERSION_PATTERN as VERSION_PATTERN
from amirelease.catalog_index import app_names as app_names
from amirelease.catalog_index import apps_dir as apps_dir
from amirelease.catalog_index import include_dir as include_dir
from amirelease.catalog_index import toolchains as toolchains
from amirelease.errors import ConfigError

SCHEMA_PATH = Path(__file__).with_name("schemas") / "app.schema.json"

BASE_COOKBOOK = {"linux": "linux-base", "windows": "windows-base"}

VERSION_RE = re.compile(VERSION_PATTERN, re.ASCII)
VERSION_EXAMPLE = "1.4.2 or 2.0.0-rc.1"

# Terraform variables the pipeline sets itself on every apply; the catalog may not set them.
PIPELINE_TF_VARIABLES = ("app", "region", "release_id", "ami_id", "vpc_id", "vpc_cidr", "subnet_ids")
DEFAULT_TF_OUTPUTS = {
    "launch_template_id": "launch_template_id",
    "launch_template_version": "launch_template_version",
    "auto_scaling_groups": "auto_scaling_groups",
}


def module_variables(
    app: App, network: Any, region: str, release_id: str, ami_id: str, versions: dict[str, Any], stage: str = ""
) -> dict[str, Any]:
    """(pure) The non-secret Terraform variables of one region's apply of ``app``'s module: the
    module's and the stage's variables, then what the pipeline sets (PIPELINE_TF_VARIABLES), and
    the secrets' versions. The release applies these; drift plans the live release with them."""
    infra = app.infrastructure
    out: dict[str, Any] = {
        **infra.variables,
        **app.stage(stage).variables,
        "app": app.name,
        "region": region,
        "release_id": release_id,
        "ami_id": ami_id,
        "vpc_id": network.vpc_id,
        "vpc_cidr": network.vpc_cidr,
        "subnet_ids": list(network.subnet_ids),
    }
    if infra.secrets:
        out["secret_versions"] = dict(versions)
    return out


@dataclass(frozen=True)
class Target:
    region: str
    auto_scaling_group: str
    launch_template: str


DEFAULT_APPROVAL_MINUTES = 24 * 60  # a gate nobody answers within a day counts as a rejection


@dataclass(frozen=True)
class Stage:
    """One stage of an app's release path (staging, production…): its own groups, Terraform
    state (``terraform/<app>/<stage>/<region>/``) and variables over the module's. An app
    without ``stages:`` has one implicit stage, named "", holding its ``targets:``."""

    name: str
    targets: tuple[Target, ...]
    variables: dict[str, Any] = field(default_factory=dict)
    approval_minutes: float = DEFAULT_APPROVAL_MINUTES  # the gate before it (stages after the first)
    state: str | None = None  # its Terraform state's folder; None: its name, "": the app's own (no stage)
    verify: dict[str, Any] = field(default_factory=dict)  # over the app's verify: (e.g. its own alarms)
    approvers: tuple[str, ...] = ()  # Airflow user names: only they may answer the gate (none: every release manager)
    soak_minutes: float = 0  # before the gate: the previous stage's alarms quiet this long
    automatic: bool = False  # a quiet soak is the approval: nobody is asked

    @property
    def state_folder(self) -> str:
        """terraform/<app>/<this>/<region>/ ("": terraform/<app>/<region>/, the state of an app without stages)."""
        return self.name if self.state is None else self.state

    @property
    def regions(self) -> list[str]:
        return sorted({t.region for t in self.targets})


@dataclass(frozen=True)
class SmokeCommand:
    name: str
    run: str
    expect_exit_code: int = 0
    expect_output: str | None = None
    timeout_seconds: int = 120


@dataclass(frozen=True)
class SecretRef:
    """Keys of one Vault KV secret under the pipeline's prefix."""

    path: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Network:
    """Where builders, smoke tests and the fleet run: the VPC and subnets by their Name tags."""

    vpc: str
    subnets: tuple[str, ...]


@dataclass(frozen=True)
class Infrastructure:
    """The app's Terraform root module and how the pipeline drives it."""

    module: str  # folder under include/ (or inside a bundle)
    variables: dict[str, Any]
    secrets: tuple[SecretRef, ...]  # each key reaches Terraform as TF_VAR_<key>
    outputs: dict[str, str]  # launch_template_id / launch_template_version / auto_scaling_groups -> output name
    allow_destroy: tuple[str, ...]  # resource types a plan may destroy or replace
    iam_actions: tuple[str, ...] = ()  # what the module's resources need (printed by `cli iam-policy`)


@dataclass(frozen=True)
class App:
    name: str
    platform: str
    toolchain: str
    base_image_owners: tuple[str, ...]
    base_image_name: str
    architecture: str
    instance_type: str
    cookbooks: tuple[str, ...]
    secrets: tuple[SecretRef, ...]
    network: Network
    infrastructure: Infrastructure
    targets: tuple[Target, ...]
    refresh: dict[str, Any]
    smoke_commands: tuple[SmokeCommand, ...]
    smoke_instance_type: str
    smoke_boot_timeout: int
    verify: dict[str, Any]
    source_file: str
    description: str = ""  # shown on the Releases page
    owner: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)  # Chef node attributes (chef.node_json)
    allow: dict[str, Any] = field(default_factory=dict)  # what its module may do beyond the defaults (contained.py)
    aws_role: str = ""  # the app-scoped role its Packer and Terraform run with ("": the workers' own)
    stages: tuple[Stage, ...] = ()  # in order; () for an app without stages: one implicit stage

    @property
    def staged(self) -> bool:
        return bool(self.stages)

    @property
    def path(self) -> tuple[Stage, ...]:
        """The stages a release goes through, in order (one implicit stage without ``stages:``)."""
        return self.stages or (Stage(name="", targets=self.targets),)

    def stage(self, name: str) -> Stage:
        """A stage by name; "" is the first one (the one ami_release releases to)."""
        if not name:
            return self.path[0]
        for s in self.stages:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.stages) or "(none: the app has no stages)"
        raise ConfigError(f"{self.name} has no stage '{name}'", fix=f"choose one of: {known}")

    def verify_rules(self, name: str) -> dict[str, Any]:
        """How stage ``name`` ("" = the first) is verified: the app's ``verify:``, with the stage's
        own over it (its alarms are also what a soak before the next stage watches)."""
        return {**self.verify, **self.stage(name).verify}

    def next_stage(self, name: str) -> Stage | None:
        """The stage after ``name`` ("" = the first), or None after the last."""
        return self._beside(name, 1)

    def previous_stage(self, name: str) -> Stage | None:
        """The stage before ``name``, or None before the first."""
        return self._beside(name, -1)

    def _beside(self, name: str, step: int) -> Stage | None:
        at = [s.name for s in self.path].index(self.stage(name).name) + step
        return self.path[at] if 0 <= at < len(self.path) else None

    @property
    def run_list(self) -> list[str]:
        return stacked_run_list(self.platform, self.cookbooks)

    @property
    def regions(self) -> list[str]:
        return sorted({t.region for t in self.targets})

    @property
    def home_region(self) -> str:
        """The region Packer builds in (the first target's); other regions get copies."""
        return self.targets[0].region


def packer_files(platform: str, root: Path | None = None) -> list[str]:
    """What one Packer build loads, relative to include/ (or a bundle): the shared variables,
    the platform's template and its support folder (e.g. packer/windows/ for the SSH bootstrap)."""
    root = root or include_dir()
    names = ["packer/variables.pkr.hcl", f"packer/{platform}.pkr.hcl"]
    if (root / "packer" / platform).is_dir():
        names.append(f"packer/{platform}")
    return names


def packer_file_paths(platform: str, root: Path | None = None) -> list[Path]:
    """The files behind packer_files(), folders expanded."""
    root = root or include_dir()
    out: list[Path] = []
    for rel in packer_files(platform, root):
        path = root / rel
        out.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return out


def stacked_run_list(platform: str, cookbooks: tuple[str, ...] | list[str]) -> list[str]:
    """The Chef run list: the platform base cookbook first, then the app's cookbooks in order.

    >>> stacked_run_list("linux", ["demo-web::default@1.2.0"])
    ['recipe[linux-base]', 'recipe[demo-web::default@1.2.0]']
    """
    base = BASE_COOKBOOK[platform]
    for cb in cookbooks:
        if cookbook_name(cb) in BASE_COOKBOOK.values():
            raise ConfigError(
                f"cookbook '{cb}' is a platform base cookbook",
                fix=f"remove it: the pipeline always runs '{base}' first for {platform} apps",
            )
    return [f"recipe[{base}]"] + [f"recipe[{cb}]" for cb in cookbooks]


def cookbook_name(entry: str) -> str:
    return entry.removeprefix("recipe[").removesuffix("]").split("@", 1)[0].split("::", 1)[0]


def validate_version(version: object) -> str:
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise ConfigError(
            f"version {version!r} is not a semantic version",
            fix=f"type MAJOR.MINOR.PATCH in ASCII digits with an optional -prerelease, e.g. {VERSION_EXAMPLE}",
        )
    return version


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def _field_path(err: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return path.lstrip(".") or "(top level)"


def _secret_refs(items: list[dict[str, Any]]) -> tuple[SecretRef, ...]:
    return tuple(SecretRef(path=s["path"], keys=tuple(s["keys"])) for s in items)


def parse_app(data: Any, source: str, root: Path | None = None) -> App:
    """Validate one catalog document and build an App. Raises ConfigError naming file and field.

    root: the folder holding cookbooks/ and the Terraform modules (include/ or a bundle);
    when given, they must exist.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level", fix="see include/apps/demo-web.yaml")
    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{_field_path(e)}: {e.message}" for e in errors[:10]]
        raise ConfigError(
            f"{source}: invalid application definition: " + "; ".join(lines),
            fix=f"correct the field(s) named above; the schema is {SCHEMA_PATH.relative_to(REPO_ROOT)}",
        )
    stem = Path(source).stem
    if Path(source).suffix in (".yaml", ".yml") and data["name"] != stem:
        raise ConfigError(
            f"{source}: name '{data['name']}' does not match the file name",
            fix=f"rename the file to {data['name']}.yaml or set name: {stem}",
        )
    try:
        stacked_run_list(data["platform"], data["cookbooks"])
    except ConfigError as exc:
        raise ConfigError(f"{source}: cookbooks: {exc.problem}", fix=exc.fix) from None
    infra = data["infrastructure"]
    _own_secrets(data.get("secrets"), data["name"], source, "secrets")
    _own_secrets(infra.get("secrets"), data["name"], source, "infrastructure.secrets")
    reserved = sorted(set(infra.get("variables", {})) & set(PIPELINE_TF_VARIABLES))
    if reserved:
        raise ConfigError(
            f"{source}: infrastructure.variables sets {', '.join(reserved)}, which the pipeline sets on every apply",
            fix=f"remove them; the pipeline passes {', '.join(PIPELINE_TF_VARIABLES)} itself",
        )
    secret_keys = [k for s in infra.get("secrets", []) for k in s["keys"]]
    clash = sorted(set(secret_keys) & (set(infra.get("variables", {})) | set(PIPELINE_TF_VARIABLES)))
    if clash:
        raise ConfigError(
            f"{source}: infrastructure.secrets key(s) {', '.join(clash)} are also plain variables",
            fix="a Terraform variable comes either from Vault or from the catalog, not both",
        )
    stages = _stages(data, infra, source)
    if root is not None:
        for cb in [BASE_COOKBOOK[data["platform"]], *data["cookbooks"]]:
            if not (root / "cookbooks" / cookbook_name(cb)).is_dir():
                raise ConfigError(
                    f"{source}: cookbooks: '{cookbook_name(cb)}' not found in {root / 'cookbooks'}",
                    fix="add the cookbook there or correct its name",
                )
        module_dir = root / infra["module"]
        if not module_dir.is_dir() or not any(module_dir.glob("*.tf")):
            raise ConfigError(
                f"{source}: infrastructure.module '{infra['module']}' is not a Terraform module folder under {root}",
                fix="point it at a folder with the app's *.tf files (e.g. terraform/<app>)",
            )
        _check_module_interface(source, infra, module_dir, stages)
    refresh = dict(data.get("refresh", {}))
    cps = refresh.get("checkpoint_percentages")
    if cps and cps != sorted(set(cps)):
        raise ConfigError(f"{source}: refresh.checkpoint_percentages must be strictly increasing", fix=f"got {cps}")
    all_targets = [t for st in stages for t in st["targets"]] if stages else list(data["targets"])
    seen = set()
    for t in all_targets:
        key = (t["region"], t["auto_scaling_group"])
        if key in seen:
            raise ConfigError(
                f"{source}: targets: group {key[1]} in {key[0]} is listed twice",
                fix="list each group once (a group belongs to one stage)",
            )
        seen.add(key)
    smoke = data["smoke_test"]
    for c in smoke["commands"]:
        if c.get("expect_output") is not None:
            try:
                re.compile(c["expect_output"])
            except re.error as exc:
                raise ConfigError(
                    f"{source}: smoke_test.commands[{c['name']}].expect_output is not a valid regex: {exc}",
                    fix="write a Python regular expression, e.g. ^ok$",
                ) from None
    base = data["base_image"]
    return App(
        name=data["name"],
        platform=data["platform"],
        toolchain=data["toolchain"],
        base_image_owners=tuple(base["owners"]),
        base_image_name=base["name"],
        architecture=base.get("architecture", "x86_64"),
        instance_type=data.get("instance_type", "t3.micro"),
        cookbooks=tuple(data["cookbooks"]),
        secrets=_secret_refs(data.get("secrets", [])),
        network=Network(vpc=data["network"]["vpc"], subnets=tuple(data["network"]["subnets"])),
        infrastructure=Infrastructure(
            module=infra["module"],
            variables=dict(infra.get("variables", {})),
            secrets=_secret_refs(infra.get("secrets", [])),
            outputs={**DEFAULT_TF_OUTPUTS, **infra.get("outputs", {})},
            allow_destroy=tuple(infra.get("allow_destroy", [])),
            iam_actions=tuple(infra.get("iam_actions", [])),
        ),
        targets=tuple(Target(**t) for t in all_targets),
        refresh=refresh,
        smoke_commands=tuple(SmokeCommand(**c) for c in smoke["commands"]),
        smoke_instance_type=smoke.get("instance_type", data.get("instance_type", "t3.micro")),
        smoke_boot_timeout=smoke.get("boot_timeout_seconds", 300),
        verify=dict(data.get("verify", {})),
        source_file=source,
        description=str(data.get("description", "")),
        owner=str(data.get("owner", "")),
        attributes=dict(data.get("attributes", {})),
        allow=dict(data.get("allow", {})),
        aws_role=_aws_role(data),
        stages=tuple(_stage(st) for st in stages),
    )


def _stage(st: dict[str, Any]) -> Stage:
    """One checked ``stages:`` document (_stages) as a Stage."""
    gate = st.get("approval") or {}
    return Stage(
        name=st["name"],
        targets=tuple(Target(**t) for t in st["targets"]),
        variables=dict(st.get("variables", {})),
        approval_minutes=float(gate.get("timeout_minutes", DEFAULT_APPROVAL_MINUTES)),
        state=st.get("state"),
        verify=dict(st.get("verify", {})),
        approvers=tuple(gate.get("approvers", ())),
        soak_minutes=float(gate.get("soak_minutes", 0)),
        automatic=bool(gate.get("automatic", False)),
    )


def _stages(data: dict[str, Any], infra: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """The ``stages:`` documents, checked beyond the schema: exactly one of targets/stages, unique
    names, no variable the pipeline sets or a secret provides."""
    if ("targets" in data) == ("stages" in data):
        raise ConfigError(
            f"{source}: give either targets: (one stage) or stages: (each with its targets), "
            + ("not both" if "targets" in data else "neither is there"),
            fix="see docs/stages.md; an app released in one step lists targets:",
        )
    stages: list[dict[str, Any]] = list(data.get("stages") or [])
    names = [st["name"] for st in stages]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{source}: stages: {', '.join(twice)} listed twice", fix="give each stage its own name")
    secret_keys = {k for s in infra.get("secrets", []) for k in s["keys"]}
    folders = [st.get("state", st["name"]) for st in stages]
    shared = sorted({f or '""' for f in folders if folders.count(f) > 1})
    if shared:
        raise ConfigError(
            f"{source}: stages share the Terraform state folder {', '.join(shared)}",
            fix='give each stage its own state (the default is its name; "" is the app\'s state from before stages)',
        )
    if stages and stages[0].get("approval"):
        raise ConfigError(
            f"{source}: stages[{stages[0]['name']}].approval: the first stage has no gate (it follows the bake and "
            "the smoke test)",
            fix="remove approval: from the first stage; a gate belongs to the stage it lets a release into",
        )
    for at, st in enumerate(stages):
        gate = st.get("approval") or {}
        if gate.get("automatic") and not gate.get("soak_minutes"):
            raise ConfigError(
                f"{source}: stages[{st['name']}].approval.automatic needs soak_minutes: an automatic gate is a soak "
                "time with the previous stage's alarms quiet",
                fix="add approval.soak_minutes (e.g. 30), or remove automatic: to have a person approve",
            )
        if gate.get("automatic") and gate.get("approvers"):
            raise ConfigError(
                f"{source}: stages[{st['name']}].approval names approvers and is automatic: nobody would be asked",
                fix="remove automatic: (the approvers answer after the soak) or approvers: (the soak alone decides)",
            )
        if gate.get("soak_minutes") and at > 0:
            before = stages[at - 1]
            if not {**data.get("verify", {}), **before.get("verify", {})}.get("alarms"):
                raise ConfigError(
                    f"{source}: stages[{st['name']}].approval.soak_minutes watches {before['name']}'s alarms, and "
                    f"{before['name']} has none",
                    fix=f"name alarms in verify.alarms (the app's) or stages[{before['name']}].verify.alarms",
                )
        bad = sorted(set(st.get("variables", {})) & (set(PIPELINE_TF_VARIABLES) | secret_keys))
        if bad:
            raise ConfigError(
                f"{source}: stages[{st['name']}].variables sets {', '.join(bad)}, which the pipeline or Vault provides",
                fix="remove them from the stage; a stage sets only plain module variables",
            )
    return stages


_BLOCK = re.compile(r'^[ \t]*(variable|output)[ \t]+"([^"]+)"', re.MULTILINE)


def module_interface(module_dir: Path) -> tuple[set[str], set[str]]:
    """The variables and outputs a Terraform module declares (its *.tf and *.tf.json files)."""
    variables: set[str] = set()
    outputs: set[str] = set()
    for f in sorted(module_dir.glob("*.tf")):
        for kind, name in _BLOCK.findall(f.read_text(encoding="utf-8")):
            (variables if kind == "variable" else outputs).add(name)
    for f in sorted(module_dir.glob("*.tf.json")):
        doc = json.loads(f.read_text(encoding="utf-8"))
        variables.update(doc.get("variable", {}) or {})
        outputs.update(doc.get("output", {}) or {})
    return variables, outputs


def _check_module_interface(
    source: str, infra: dict[str, Any], module_dir: Path, stages: list[dict[str, Any]] | None = None
) -> None:
    """Every value the pipeline hands the module must have a variable to land in: Terraform ignores
    a TF_VAR_ with no variable silently, so a missing one would drop a secret (or the AMI) without
    a word. And the outputs roll_out reads must exist."""
    variables, outputs = module_interface(module_dir)
    needed = {"ami_id": "the pipeline's new AMI"}
    needed.update({k: "infrastructure.variables" for k in infra.get("variables", {})})
    for stage in stages or []:
        needed.update({k: f"stages[{stage['name']}].variables" for k in stage.get("variables", {})})
    secret_keys = [k for s in infra.get("secrets", []) for k in s["keys"]]
    needed.update({k: "infrastructure.secrets" for k in secret_keys})
    if secret_keys:
        needed["secret_versions"] = "the pipeline (Vault versions of the secrets)"
    missing = sorted(k for k in needed if k not in variables)
    if missing:
        raise ConfigError(
            f"{source}: the Terraform module {infra['module']} declares no variable for "
            + ", ".join(f"{k} (from {needed[k]})" for k in missing),
            fix="add a `variable` block for each to the module (secrets with sensitive = true), "
            "or remove the key from the catalog file",
        )
    wanted = {**DEFAULT_TF_OUTPUTS, **infra.get("outputs", {})}
    absent = sorted(name for name in wanted.values() if name not in outputs)
    if absent:
        raise ConfigError(
            f"{source}: the Terraform module {infra['module']} has no output {', '.join(absent)}",
            fix="add the output(s) to the module, or name the module's outputs in infrastructure.outputs",
        )


# -- apps whose AMI project lives in their own git repository ----------------------------------
# The central catalog (include/apps/<app>.yaml, owned by the platform team) says which apps exist
# and what each may do; the app's repository (source.path/ami-release.yaml, owned by the app
# team) says how its release is built and rolled out. A key belongs to exactly one side: a key
# on the wrong side is refused, never silently overridden (docs/sources.md).
CENTRAL_KEYS = (
    "name",
    "description",
    "owner",
    "platform",
    "toolchain",
    "base_image",
    "network",
    "source",
    "allow",
    "aws",
    "notify",  # who is told about releases and drift (notify.py)
    "rollback",  # may a release that failed on the fleet start ami_rollback on its own (roll_forward.py)
)
PLATFORM_INFRASTRUCTURE_KEYS = ("allow_destroy", "iam_actions")  # guardrails: central, under infrastructure:
DEFINITION_KEYS = (
    "instance_type",
    "cookbooks",
    "attributes",
    "secrets",
    "infrastructure",
    "targets",
    "stages",
    "refresh",
    "smoke_test",
    "verify",
)
DEFINITION_FILE = "ami-release.yaml"
PROJECT_DIR = "project"  # where the app's Terraform module sits inside a bundle
_CONN_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,250}", re.ASCII)


@dataclass(frozen=True)
class Source:
    """Where an app's AMI project lives: a git repository, a folder in it, a git connection."""

    repository: str
    path: str
    connection: str | None


@dataclass(frozen=True)
class Entry:
    """What the central catalog says about any app, embedded or git-sourced (cheap, no git)."""

    name: str
    platform: str
    toolchain: str
    description: str
    owner: str
    source: Source | None
    iam_actions: tuple[str, ...]
    file: str
    document: dict[str, Any]
    targets: tuple[Target, ...] = ()  # embedded apps; a git-sourced app's come from its releases
    aws_role: str = ""  # aws.role_arn: the app's own role ("": the workers')


def _relative_folder(value: Any, where: str, field: str, example: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {field} must be a folder name", fix=f"e.g. {field}: {example}")
    path = Path(value.strip().strip("/") or ".")
    if path.is_absolute() or ".." in path.parts or value.strip().startswith("/"):
        raise ConfigError(
            f"{where}: {field} '{value}' leaves its folder", fix=f"give a path inside it without '..', e.g. {example}"
        )
    return path.as_posix()


def parse_source(data: dict[str, Any], where: str) -> Source:
    """The `source:` block of a central entry, checked; and that the entry holds central keys only."""
    src = data.get("source")
    if not isinstance(src, dict) or not isinstance(src.get("repository"), str) or not src["repository"].strip():
        raise ConfigError(
            f"{where}: source needs a repository",
            fix="source: {repository: https://git.example.com/team/app.git, path: deploy/ami, connection: git_app}",
        )
    unknown = sorted(set(src) - {"repository", "path", "connection"})
    if unknown:
        raise ConfigError(
            f"{where}: source has unknown key(s) {', '.join(unknown)}", fix="use repository, path, connection"
        )
    repo = src["repository"].strip()
    if re.search(r"://[^/@]*:[^/@]*@", repo):
        raise ConfigError(
            f"{where}: source.repository carries a password or token in its URL",
            fix="remove it from the URL and put it in the git connection named by source.connection (type git)",
        )
    if repo.startswith(("ext::", "fd::", "-")):
        raise ConfigError(
            f"{where}: source.repository '{repo}' is not a repository URL", fix="use https://, ssh:// or file://"
        )
    conn = src.get("connection")
    if conn is not None and (not isinstance(conn, str) or not _CONN_ID_RE.fullmatch(conn)):
        raise ConfigError(f"{where}: source.connection {conn!r} is not a connection id", fix="e.g. git_demo_web")
    misplaced = sorted(k for k in data if k in DEFINITION_KEYS and k != "infrastructure")
    infra = data.get("infrastructure") or {}
    if not isinstance(infra, dict):
        raise ConfigError(f"{where}: infrastructure must be a mapping", fix="infrastructure: {allow_destroy: []}")
    misplaced += sorted(f"infrastructure.{k}" for k in infra if k not in PLATFORM_INFRASTRUCTURE_KEYS)
    if misplaced:
        raise ConfigError(
            f"{where}: {', '.join(misplaced)} belong(s) to the app's own repository ({DEFINITION_FILE}), "
            "not to the central catalog entry of a git-sourced app",
            fix=f"move them to {src.get('path') or '.'}/{DEFINITION_FILE} in {repo}; the central entry keeps "
            f"{', '.join(CENTRAL_KEYS)} and infrastructure.{{{', '.join(PLATFORM_INFRASTRUCTURE_KEYS)}}}",
        )
    unknown = sorted(set(data) - set(CENTRAL_KEYS) - {"infrastructure"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}", fix="see docs/sources.md")
    for key in ("name", "platform", "toolchain", "base_image", "network"):
        if key not in data:
            raise ConfigError(f"{where}: '{key}' is required in the central entry", fix="see docs/sources.md")
    path = _relative_folder(src.get("path", "."), where, "source.path", "deploy/ami")
    return Source(repository=repo, path=path, connection=conn)


def merge_definition(central: dict[str, Any], definition: Any, where: str) -> dict[str, Any]:
    """The whole app entry: the central entry (minus source) plus the app repository's definition.

    The definition may not set central keys (who the app is, where it runs, what it may
    destroy); its secrets stay under the app's own Vault folder; its module path is moved under
    project/ as the bundle lays it out.
    """
    if not isinstance(definition, dict):
        raise ConfigError(
            f"{where}: expected a mapping at the top level", fix=f"see docs/sources.md ({DEFINITION_FILE})"
        )
    name = central["name"]
    misplaced = sorted(k for k in definition if k in CENTRAL_KEYS)
    infra = definition.get("infrastructure")
    if isinstance(infra, dict):
        misplaced += sorted(f"infrastructure.{k}" for k in infra if k in PLATFORM_INFRASTRUCTURE_KEYS)
    if misplaced:
        raise ConfigError(
            f"{where}: {', '.join(misplaced)} may only be set by the platform's central catalog entry "
            f"(include/apps/{name}.yaml), not by the app's repository",
            fix=f"remove them from {DEFINITION_FILE}; ask the platform team to change the central entry",
        )
    unknown = sorted(set(definition) - set(DEFINITION_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}",
            fix=f"{DEFINITION_FILE} may hold {', '.join(DEFINITION_KEYS)}",
        )
    _own_secrets(definition.get("secrets"), name, where, "secrets")
    if isinstance(infra, dict):
        _own_secrets(infra.get("secrets"), name, where, "infrastructure.secrets")
    merged = {k: v for k, v in central.items() if k not in ("source", "infrastructure")}
    merged.update(definition)
    if isinstance(infra, dict):
        module = _relative_folder(infra.get("module", "terraform"), where, "infrastructure.module", "terraform")
        merged["infrastructure"] = {
            **infra,
            **(central.get("infrastructure") or {}),
            "module": f"{PROJECT_DIR}/{module}",
        }
    return merged


def _aws_role(data: dict[str, Any]) -> str:
    return str((data.get("aws") or {}).get("role_arn", ""))


def _own_secrets(items: Any, app: str, where: str, field: str) -> None:
    """A git-sourced app reads only its own Vault folder (<prefix>/<app>/...)."""
    for item in items or []:
        path = item.get("path") if isinstance(item, dict) else None
        if isinstance(path, str) and (not path.startswith(f"{app}/") or ".." in path.split("/")):
            raise ConfigError(
                f"{where}: {field} path '{path}' is outside the app's own Vault folder '{app}/'",
                fix=f"keep the app's secrets under {app}/ (e.g. {app}/bake); another app's secrets are not its to read",
            )


def load_entry(path: Path) -> Entry:
    data = read_entry(path)
    where = str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level", fix="see include/apps/demo-web.yaml")
    if "source" in data:
        src = parse_source(data, where)
        if data.get("name") != path.stem:
            raise ConfigError(
                f"{where}: name '{data.get('name')}' does not match the file name",
                fix=f"rename the file to {data.get('name')}.yaml or set name: {path.stem}",
            )
        if data.get("platform") not in BASE_COOKBOOK:
            raise ConfigError(f"{where}: platform must be linux or windows", fix="platform: linux")
        return Entry(
            name=data["name"],
            platform=data["platform"],
            toolchain=str(data["toolchain"]),
            description=str(data.get("description", "")),
            owner=str(data.get("owner", "")),
            source=src,
            iam_actions=tuple((data.get("infrastructure") or {}).get("iam_actions", [])),
            file=where,
            document=data,
            aws_role=_aws_role(data),
        )
    root = path.parent.parent
    app = parse_app(data, where, root if (root / "cookbooks").is_dir() else None)
    return Entry(
        name=app.name,
        platform=app.platform,
        toolchain=app.toolchain,
        description=app.description,
        owner=app.owner,
        source=None,
        iam_actions=app.infrastructure.iam_actions,
        file=where,
        document=data,
        targets=app.targets,
        aws_role=app.aws_role,
    )


def load_entries(directory: Path | None = None) -> dict[str, Entry]:
    """Every app of the central catalog, embedded or git-sourced (all-or-nothing, like load_catalog)."""
    directory = directory or apps_dir()
    return {e.name: e for e in (load_entry(p) for p in sorted(directory.glob("*.y*ml")))}


def known_app(name: str, directory: Path | None = None) -> Entry:
    entries = load_entries(directory)
    if name not in entries:
        known = ", ".join(sorted(entries)) or "(none)"
        raise ConfigError(f"unknown app '{name}'", fix=f"choose one of: {known}; or add include/apps/{name}.yaml")
    return entries[name]


def read_entry(path: Path) -> Any:
    """One catalog file's document (YAML), or a ConfigError naming the file."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", fix="fix the YAML syntax") from None


def load_catalog(directory: Path | None = None) -> dict[str, App]:
    """Every app in the catalog, validated. Any invalid file is an error (a catalog is all-or-nothing)."""
    directory = directory or apps_dir()
    root = directory.parent
    apps: dict[str, App] = {}
    for path in sorted(directory.glob("*.y*ml")):
        data = read_entry(path)
        if isinstance(data, dict) and "source" in data:
            load_entry(path)  # validated here too; its definition is read from git at release time
            continue
        app = parse_app(data, str(path), root if (root / "cookbooks").is_dir() else None)
        apps[app.name] = app
    return apps


def app_file(name: str, directory: Path | None = None) -> Path:
    """The catalog file of an app (after get_app validated it)."""
    directory = directory or apps_dir()
    for suffix in (".yaml", ".yml"):
        if (directory / f"{name}{suffix}").exists():
            return directory / f"{name}{suffix}"
    raise ConfigError(f"no catalog file for app '{name}' in {directory}", fix=f"add {directory}/{name}.yaml")


def get_app(name: str, directory: Path | None = None) -> App:
    """An embedded app's whole definition (a git-sourced app's is read from git by preflight)."""
    catalog = load_catalog(directory)
    if name not in catalog:
        entry = load_entries(directory).get(name)
        if entry is not None and entry.source is not None:
            raise ConfigError(
                f"app '{name}' is released from its git repository {entry.source.repository}; "
                "its definition is read from there at release time",
                fix="release it with a git_ref (tag, branch or commit)",
            )
        known = ", ".join(sorted(catalog)) or "(none)"
        raise ConfigError(
            f"unknown app '{name}'",
            fix=f"choose one of: {known}; or add include/apps/{name}.yaml",
        )
    return catalog[name]


def cookbook_versions(run_list: list[str], cookbooks_dir: Path) -> dict[str, str]:
    """name -> version: the pinned version, else the version in the cookbook's metadata.rb."""
    out: dict[str, str] = {}
    for entry in run_list:
        e = entry.removeprefix("recipe[").removesuffix("]")
        name = cookbook_name(e)
        if "@" in e:
            out[name] = e.split("@", 1)[1]
            continue
        meta = cookbooks_dir / name / "metadata.rb"
        m = re.search(r"^\s*version\s+['\"]([^'\"]+)['\"]", meta.read_text(), re.M) if meta.exists() else None
        out[name] = m.group(1) if m else "unknown"
    return out
