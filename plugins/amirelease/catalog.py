"""The application catalog: one YAML file per application under include/apps/.

Loading validates each file against ``schemas/app.schema.json`` plus rules a schema cannot
say (name matches the file, the base cookbook is never listed by the app, cookbooks exist).
Errors name the file, the field and the fix. Pure file I/O: safe at DAG parse time.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from amirelease.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
INCLUDE_DIR = Path(os.environ.get("AMI_RELEASE_INCLUDE_DIR", REPO_ROOT / "include"))
SCHEMA_PATH = Path(__file__).with_name("schemas") / "app.schema.json"

BASE_COOKBOOK = {"linux": "linux-base", "windows": "windows-base"}
VERSION_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z]+(\.[0-9A-Za-z]+)*)?$")
VERSION_PATTERN = VERSION_RE.pattern


@dataclass(frozen=True)
class Target:
    region: str
    auto_scaling_group: str
    launch_template: str


@dataclass(frozen=True)
class SmokeCommand:
    name: str
    run: str
    expect_exit_code: int = 0
    expect_output: str | None = None
    timeout_seconds: int = 120


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
    secrets: tuple[tuple[str, tuple[str, ...]], ...]
    targets: tuple[Target, ...]
    refresh: dict[str, Any]
    smoke_commands: tuple[SmokeCommand, ...]
    smoke_instance_type: str
    smoke_boot_timeout: int
    verify: dict[str, Any]
    source_file: str
    description: str = ""
    owner: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def base_cookbook(self) -> str:
        return BASE_COOKBOOK[self.platform]

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


def packer_template(platform: str) -> Path:
    """The Packer template a platform's AMIs are built with."""
    return INCLUDE_DIR / "packer" / f"{platform}.pkr.hcl"


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
    return entry.split("@", 1)[0].split("::", 1)[0]


def validate_version(version: Any) -> str:
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise ConfigError(
            f"version {version!r} is not a semantic version",
            fix="use MAJOR.MINOR.PATCH with an optional -prerelease, e.g. 1.4.2 or 2.0.0-rc.1",
        )
    return version


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _field_path(err: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return path.lstrip(".") or "(top level)"


def parse_app(data: Any, source: str, cookbooks_dir: Path | None = None) -> App:
    """Validate one catalog document and build an App. Raises ConfigError naming file and field."""
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
    if cookbooks_dir is not None:
        for cb in [BASE_COOKBOOK[data["platform"]], *data["cookbooks"]]:
            if not (cookbooks_dir / cookbook_name(cb)).is_dir():
                raise ConfigError(
                    f"{source}: cookbooks: '{cookbook_name(cb)}' not found in {cookbooks_dir}",
                    fix="add the cookbook there or correct its name",
                )
    refresh = dict(data.get("refresh", {}))
    cps = refresh.get("checkpoint_percentages")
    if cps and cps != sorted(set(cps)):
        raise ConfigError(f"{source}: refresh.checkpoint_percentages must be strictly increasing", fix=f"got {cps}")
    seen = set()
    for t in data["targets"]:
        key = (t["region"], t["auto_scaling_group"])
        if key in seen:
            raise ConfigError(
                f"{source}: targets: group {key[1]} in {key[0]} is listed twice", fix="list each group once"
            )
        seen.add(key)
    smoke = data["smoke_test"]
    for c in smoke["commands"]:
        if c.get("expect_output") is not None:
            try:
                re.compile(c["expect_output"])
            except re.error as exc:
                raise ConfigError(
                    f"{source}: smoke_test.commands[{c['name']}].expect_output is not a valid regex: {exc}"
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
        secrets=tuple((s["path"], tuple(s["keys"])) for s in data.get("secrets", [])),
        targets=tuple(Target(**t) for t in data["targets"]),
        refresh=refresh,
        smoke_commands=tuple(SmokeCommand(**c) for c in smoke["commands"]),
        smoke_instance_type=smoke.get("instance_type", data.get("instance_type", "t3.micro")),
        smoke_boot_timeout=smoke.get("boot_timeout_seconds", 300),
        verify=dict(data.get("verify", {})),
        source_file=source,
        description=data.get("description", ""),
        owner=data.get("owner", ""),
        raw=data,
    )


def apps_dir() -> Path:
    return Path(os.environ.get("AMI_RELEASE_APPS_DIR", INCLUDE_DIR / "apps"))


def load_catalog(directory: Path | None = None) -> dict[str, App]:
    """Every app in the catalog, validated. Any invalid file is an error (a catalog is all-or-nothing)."""
    directory = directory or apps_dir()
    cookbooks_dir = directory.parent / "cookbooks"
    apps: dict[str, App] = {}
    for path in sorted(directory.glob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}", fix="fix the YAML syntax") from None
        app = parse_app(data, str(path), cookbooks_dir if cookbooks_dir.is_dir() else None)
        apps[app.name] = app
    return apps


def app_names(directory: Path | None = None) -> list[str]:
    """Names for the trigger form's dropdown: file names only, cheap and safe at parse time."""
    directory = directory or apps_dir()
    return sorted(p.stem for p in directory.glob("*.y*ml"))


def get_app(name: str, directory: Path | None = None) -> App:
    catalog = load_catalog(directory)
    if name not in catalog:
        known = ", ".join(sorted(catalog)) or "(none)"
        raise ConfigError(
            f"unknown app '{name}'",
            fix=f"choose one of: {known}; or add include/apps/{name}.yaml",
        )
    return catalog[name]


def toolchains(directory: Path | None = None) -> list[str]:
    """Distinct toolchain queues named by catalog files, for routing the bake task.

    Tolerant on purpose (used at DAG parse time): an unreadable file is skipped here and
    reported by preflight, so one broken file cannot take the release DAG down for every app.
    """
    directory = directory or apps_dir()
    found = set()
    for path in directory.glob("*.y*ml"):
        try:
            value = (yaml.safe_load(path.read_text()) or {}).get("toolchain")
        except (yaml.YAMLError, OSError, AttributeError):
            continue
        if isinstance(value, str) and re.fullmatch(r"[a-z0-9][a-z0-9_-]*", value):
            found.add(value)
    return sorted(found)


def validate_run_list(app: App, run_list: list[str] | str) -> list[str]:
    """A recorded run list (re-release): base cookbook first, then known cookbooks only."""
    if isinstance(run_list, str):
        run_list = [r for r in re.split(r"[,\s]+", run_list) if r]
    entries = [r.removeprefix("recipe[").removesuffix("]") for r in run_list]
    if not entries or entries[0] != app.base_cookbook:
        raise ConfigError(
            f"run list {run_list} must start with {app.base_cookbook}",
            fix="the platform base cookbook always runs first",
        )
    stacked = stacked_run_list(app.platform, entries[1:])
    cookbooks_dir = INCLUDE_DIR / "cookbooks"
    for e in entries:
        if not (cookbooks_dir / cookbook_name(e)).is_dir():
            raise ConfigError(
                f"cookbook '{cookbook_name(e)}' of the run list is not in {cookbooks_dir}",
                fix="restore the cookbook (check out the release's git_ref) or choose another release",
            )
    return stacked


def cookbook_versions(run_list: list[str]) -> dict[str, str]:
    """name -> version: the pinned version, else the version in the cookbook's metadata.rb."""
    out: dict[str, str] = {}
    for entry in run_list:
        e = entry.removeprefix("recipe[").removesuffix("]")
        name = cookbook_name(e)
        if "@" in e:
            out[name] = e.split("@", 1)[1]
            continue
        meta = INCLUDE_DIR / "cookbooks" / name / "metadata.rb"
        m = re.search(r"^\s*version\s+['\"]([^'\"]+)['\"]", meta.read_text(), re.M) if meta.exists() else None
        out[name] = m.group(1) if m else "unknown"
    return out
