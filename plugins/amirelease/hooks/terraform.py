"""Run Terraform (init / validate / plan / apply) on an app's root module.

* The module is copied into a working folder of this worker keyed by the app, the region and
  the release bundle's digest (:meth:`TerraformHook.workspace`): the bundle or a checkout is
  never written to, and the tasks of one release that run here (the check, the apply) share
  one ``init``; the providers come from a plugin cache shared by every folder. The last
  Terraform task of a release removes its folder; a folder unused for
  ``[ami_release] terraform_workspace_max_age_hours`` (default 12) is removed by the next task.
  A module's exact bytes are validated once per worker.
* State: the S3 backend, settings given at init (-backend-config): the bucket, one key per
  app and region, server-side encryption, and S3-native locking (``use_lockfile``).
* The AWS provider gets the deployment's retry policy (``max_retries``, ``retry_mode``) and,
  where the AWS connection names a custom endpoint (the sandbox, a VPC endpoint), that
  endpoint through a generated override file (``zz_pipeline_override.tf``); the backend gets
  the endpoint at init: the module itself never knows where it runs.
* Providers come from a local filesystem mirror when one is configured or found
  ([ami_release] terraform_plugin_dir); otherwise ``init`` downloads them as usual.
* Non-secret variables go in a JSON var file; secrets only as ``TF_VAR_<name>`` in the
  environment (declare them ``sensitive`` and ``ephemeral`` and use them in write-only
  arguments: then they are in no plan file and no state either).
* Output is machine-readable (``-json``): the plan summary, each resource change and each
  error with its file and line come from Terraform's own JSON messages.
* SIGINT on interrupt (Terraform stops cleanly and releases its state lock), SIGKILL after
  the grace period; Terraform dies with its task (see hooks/_reaper.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.configuration import conf

from amirelease.errors import InfrastructureError
from amirelease.hooks.tool import ToolProcess, base_environment
from amirelease.retry import policy

if TYPE_CHECKING:
    from amirelease.handoffs import PlanSummary, ResourceChange

log = logging.getLogger(__name__)

MIN_VERSION = (1, 10)  # S3-native state locking (use_lockfile)
# The S3 state backend's own calls (state object and its .tflock lock object), for every module.
BACKEND_IAM_ACTIONS = ("s3:DeleteObject", "s3:GetObject", "s3:ListBucket", "s3:PutObject")
OVERRIDE_FILE = "zz_pipeline_override.tf"
# Services an app module may use; each gets the custom endpoint when the connection has one.
PROVIDER_ENDPOINT_SERVICES = (
    "autoscaling", "cloudwatch", "ec2", "elbv2", "iam", "kms", "logs", "s3", "sns", "ssm", "sts",
)  # fmt: skip
MIRROR_CANDIDATES = (
    "/opt/tf-plugins",
    "~/.terraform.d/plugins",
    "~/.local/share/terraform/plugins",
    "/usr/local/share/terraform/plugins",
    "/usr/share/terraform/plugins",
)
_DESTROYING = ("delete", "replace")
# Warnings that say nothing to the person reading the log: with a local provider mirror,
# Terraform can only hash providers for this platform, and says so on every init.
QUIET_WARNINGS = ("Incomplete lock file information for providers",)


def plugin_dir() -> Path | None:
    """The provider mirror: [ami_release] terraform_plugin_dir, else a known location that has
    the AWS provider, else None (init downloads providers)."""
    configured = conf.get("ami_release", "terraform_plugin_dir", fallback="").strip()
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise InfrastructureError(
                f"[ami_release] terraform_plugin_dir = {configured} is not a folder",
                fix="point it at a Terraform provider mirror (…/registry.terraform.io/hashicorp/aws/<version>/…) "
                "or unset it to let terraform init download providers",
            )
        return path
    for candidate in MIRROR_CANDIDATES:
        path = Path(candidate).expanduser()
        if (path / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
            return path
    return None


def workspace_root() -> Path:
    """Where this worker keeps Terraform working folders: [ami_release] terraform_workspace_dir,
    else <temp>/amirelease.terraform (private to the worker's user)."""
    configured = conf.get("ami_release", "terraform_workspace_dir", fallback="").strip()
    return Path(configured).expanduser() if configured else Path(tempfile.gettempdir()) / "amirelease.terraform"


def workspace_key(app: str, region: str, bundle_sha256: str, backend: Backend) -> str:
    """One folder per app, region, bundle digest (the module's exact bytes and the catalog) and
    state backend (bucket, key, endpoint): two accounts or endpoints served by one worker
    never share a folder, its initialised backend or a saved plan."""
    where = hashlib.sha256(_init_key(backend).encode()).hexdigest()[:16]
    return f"{app}-{region}-{bundle_sha256[:32]}-{where}"


def tree_digest(folder: Path) -> str:
    """sha256 over a folder's files (relative path and bytes), ignoring Terraform's own data."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".terraform" not in p.parts):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@dataclass
class Workspace:
    """A Terraform working folder on this worker, held (flock) by one task at a time."""

    path: Path
    reused: bool  # prepared by an earlier task (of this release, or of one with the same bundle)

    @property
    def module(self) -> Path:
        return self.path / "module"

    def _marker(self, name: str) -> Path:
        return self.path / f".{name}"

    def initialised_for(self, backend: Backend) -> bool:
        marker = self._marker("init")
        return (self.path / "data").is_dir() and marker.is_file() and marker.read_text() == _init_key(backend)

    def mark_initialised(self, backend: Backend) -> None:
        self._marker("init").write_text(_init_key(backend))


def _init_key(backend: Backend) -> str:
    return json.dumps(backend.init_args())


def _sweep_workspaces(root: Path, max_age: float) -> None:
    """Remove folders nobody has used for max_age seconds and nobody holds now."""
    now = time.time()
    for path in root.iterdir():
        if not path.is_dir() or path.name in ("plugins", "validated") or now - path.stat().st_mtime < max_age:
            continue
        try:
            with open(path / ".lock", "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue  # held by a running task, or already gone


def plugin_cache(workdir: Path) -> Path:
    """The provider plugin cache the working folders of one workspace root share (TerraformHook.workspace)."""
    return workdir.parent / "plugins"


@contextmanager
def provider_cache_lock(env: Mapping[str, str], *, exclusive: bool) -> Iterator[None]:
    """Terraform's provider plugin cache is not safe while an ``init`` fills or links it
    (Terraform's documentation: concurrent inits on one cache are undefined). The workspaces of
    one worker share ``<workspace root>/plugins``, and a worker runs several tasks at once (Celery
    concurrency; two test workers did it here: a plan failed reading a provider folder another
    process's init was linking). So an ``init`` runs alone (an exclusive flock) and every other
    command beside the others (shared). Workspaces are locked first, this second: no cycle."""
    data = env.get("TF_DATA_DIR")
    cache = plugin_cache(Path(data).parent) if data else None
    if cache is None or not cache.is_dir():
        yield
        return
    with open(cache.with_name("plugins.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def hcl_quote(value: str) -> str:
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def override_file(endpoint_url: str | None) -> str:
    """The pipeline's AWS provider settings, merged into the module's default provider block:
    the deployment's retry policy (retry.py) always, a custom endpoint when the connection
    names one."""
    settings = "\n".join(f"  {k} = {v}" for k, v in policy().terraform_provider_settings().items())
    lines = [
        "# Written by the release pipeline: the deployment's AWS retry policy ([ami_release] aws_max_attempts,",
        "# aws_retry_mode)" + (" and the AWS connection's custom endpoint." if endpoint_url else "."),
        'provider "aws" {',
        settings,
    ]
    if endpoint_url:
        endpoints = "\n".join(f"    {svc} = {hcl_quote(endpoint_url)}" for svc in PROVIDER_ENDPOINT_SERVICES)
        lines += ["  s3_use_path_style = true", "  endpoints {", endpoints, "  }"]
    return "\n".join([*lines, "}", ""])


@dataclass(frozen=True)
class Backend:
    """Terraform's S3 state backend for one app and region: encrypted, S3-native lock file."""

    bucket: str
    key: str
    region: str
    endpoint_url: str | None = None
    kms_key_id: str | None = None

    def init_args(self) -> list[str]:
        cfg = {
            "bucket": self.bucket,
            "key": self.key,
            "region": self.region,
            "encrypt": "true",
            "use_lockfile": "true",
        }
        if self.kms_key_id:
            cfg["kms_key_id"] = self.kms_key_id
        if self.endpoint_url:
            cfg["use_path_style"] = "true"
            cfg["endpoints"] = f"{{s3={hcl_quote(self.endpoint_url)},sts={hcl_quote(self.endpoint_url)}}}"
        return [f"-backend-config={k}={v}" for k, v in cfg.items()]

    @property
    def lock_key(self) -> str:
        return f"{self.key}.tflock"


@dataclass
class Diagnostic:
    """One error or warning from Terraform's -json output, with its file:line when it has one."""

    severity: str
    summary: str
    detail: str = ""
    where: str = ""  # file:line

    def __str__(self) -> str:
        text = f"{self.summary}" + (f" ({self.where})" if self.where else "")
        return text + (f": {self.detail}" if self.detail else "")


@dataclass
class TerraformRun:
    """What one Terraform command gave: exit code, diagnostics, planned changes, outputs, the
    ID of a lock it met, and how long it took."""

    returncode: int
    interrupted: bool
    diagnostics: list[Diagnostic] = field(default_factory=list)
    changes: list[ResourceChange] = field(default_factory=list)
    summary: dict[str, int] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    lock_id: str | None = None
    seconds: float = 0.0

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def plan_summary(self) -> PlanSummary:
        from amirelease.handoffs import PlanSummary

        s = self.summary or {}
        return PlanSummary(
            add=int(s.get("add", 0)),
            change=int(s.get("change", 0)),
            destroy=int(s.get("remove", 0)),
            changes=tuple(self.changes),
        )


def destroys(
    summary: PlanSummary, allowed_types: tuple[str, ...], created: frozenset[str] = frozenset()
) -> list[ResourceChange]:
    """The changes that would destroy (or replace) a resource whose type is not allowed (pure).

    ``created``: the addresses this release created (its check planned them as new). Terraform
    replacing one of them because it is *tainted* (this release's apply created it and then
    failed half-way, e.g. AWS answered an error to a call that had worked) destroys nothing that
    existed before the release, so it is not refused: the apply's retry converges."""
    return [
        c
        for c in summary.changes
        if c.action in _DESTROYING
        and c.resource_type not in allowed_types
        and not (c.action == "replace" and c.reason == "tainted" and c.address in created)
    ]


class TerraformHook(BaseHook):
    """Terraform on this worker (the task's toolchain queue guarantees it is installed).

    :param terraform_bin: the binary, a name on PATH or a path.
    :param interrupt_grace: seconds Terraform gets after SIGINT to stop and release its state lock.
    """

    hook_name = "Terraform"

    def __init__(self, terraform_bin: str = "terraform", interrupt_grace: float = 60.0) -> None:
        super().__init__()
        self.terraform_bin = terraform_bin
        self._tool = ToolProcess(interrupt_grace=interrupt_grace, death_grace=10.0)
        self.seconds: dict[str, float] = {}  # each command's time, summed over its runs (the step's phase)
        self._seconds_lock = threading.Lock()  # the regions' runs may overlap

    # -- setup ------------------------------------------------------------------------------
    def binary(self) -> str:
        path = shutil.which(self.terraform_bin)
        if not path:
            raise InfrastructureError(
                f"terraform binary '{self.terraform_bin}' not found on this worker",
                fix="install Terraform >= 1.10 on the workers of this toolchain queue "
                "(https://developer.hashicorp.com/terraform/install), or route the app to a queue that has it",
            )
        return path

    def version(self) -> str:
        out = subprocess.run([self.binary(), "version", "-json"], capture_output=True, text=True, check=False)
        try:
            version = str(json.loads(out.stdout)["terraform_version"])
        except (ValueError, KeyError):
            raise InfrastructureError(
                f"cannot read the Terraform version: {out.stderr.strip()[:200]}", fix="check the terraform binary"
            ) from None
        nums = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
        if nums < MIN_VERSION:
            raise InfrastructureError(
                f"Terraform {version} is too old: state locking in S3 (use_lockfile) needs 1.10 or newer",
                fix="install Terraform >= 1.10 on this toolchain's workers",
            )
        return version

    def prepare(self, module_dir: Path, workdir: Path, endpoint_url: str | None) -> Path:
        """Copy the module into workdir/module and add the pipeline's files; return the folder."""
        wd = workdir / "module"
        shutil.copytree(module_dir, wd, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "*.tfplan"))
        (wd / OVERRIDE_FILE).write_text(override_file(endpoint_url))
        mirror = plugin_dir()
        cli = workdir / "terraform.tfrc"
        cache = plugin_cache(workdir)  # shared by the folders of workspace(): one copy of each provider
        text = f"plugin_cache_dir = {hcl_quote(str(cache))}\n" if cache.is_dir() else ""
        if mirror is not None:
            text += f"provider_installation {{\n  filesystem_mirror {{\n    path = {hcl_quote(str(mirror))}\n  }}\n}}\n"
        else:
            text += "# no provider mirror: providers are downloaded from their registries\n"
        cli.write_text(text)
        return wd

    @contextmanager
    def workspace(self, module_dir: Path, key: str, endpoint_url: str | None) -> Iterator[Workspace]:
        """This worker's working folder for ``key`` (workspace_key), prepared from module_dir the
        first time and reused by later tasks while the module's bytes, the endpoint and the
        provider mirror are the same. Held exclusively (flock) while the caller runs Terraform."""
        root = workspace_root()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        (root / "plugins").mkdir(mode=0o700, exist_ok=True)
        (root / "validated").mkdir(mode=0o700, exist_ok=True)
        max_age = float(conf.get("ami_release", "terraform_workspace_max_age_hours", fallback="12")) * 3600
        _sweep_workspaces(root, max_age)
        path = root / key
        path.mkdir(mode=0o700, exist_ok=True)
        with open(path / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            os.utime(path)
            wanted = json.dumps([tree_digest(module_dir), endpoint_url, str(plugin_dir())])
            prepared = path / ".prepared"
            reused = prepared.is_file() and prepared.read_text() == wanted and (path / "module").is_dir()
            if not reused:
                for stale in ("module", "data", ".init", ".prepared", ".planned", "release.tfplan"):
                    target = path / stale
                    if target.is_dir():
                        shutil.rmtree(target)
                    elif target.exists():
                        target.unlink()
                self.prepare(module_dir, path, endpoint_url)
                prepared.write_text(wanted)
            yield Workspace(path=path, reused=reused)

    @staticmethod
    def remove_workspace(key: str) -> None:
        """The release is done with this folder on this worker (its last Terraform task ended)."""
        path = workspace_root() / key
        if not path.is_dir():
            return
        with open(path / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def validated_marker(module: Path, terraform_version: str) -> Path:
        """The marker that this Terraform version validated these exact module bytes on this worker."""
        digest = hashlib.sha256(f"{tree_digest(module)} {terraform_version}".encode()).hexdigest()
        return workspace_root() / "validated" / digest

    def environment(
        self, workdir: Path, aws_env: Mapping[str, str], secrets: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        env = {k: v for k, v in base_environment().items() if not k.startswith("AWS_")}
        env.update(aws_env)
        env.update(policy().terraform_environment())  # the S3 state backend's retries
        env.update(
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",
            TF_CLI_CONFIG_FILE=str(workdir / "terraform.tfrc"),
            TF_DATA_DIR=str(workdir / "data"),
        )
        for name, value in (secrets or {}).items():
            if "\x00" in value:
                raise InfrastructureError(
                    f"the Vault value for Terraform variable '{name}' contains a NUL character",
                    fix="an environment variable cannot carry NUL; store the value without it (e.g. base64) in Vault",
                )
            env[f"TF_VAR_{name}"] = value  # a string variable from the environment is taken literally
        return env

    # -- commands -----------------------------------------------------------------------------
    def run(
        self,
        args: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        on_line: Callable[[str], None],
        timeout: float | None = None,
    ) -> TerraformRun:
        """Run one terraform command with -json output (when it has one), parsing its messages."""
        result = TerraformRun(returncode=-1, interrupted=False)
        cmd = [self.binary(), *args]
        on_line(f"$ terraform {' '.join(args)}")
        started = time.monotonic()
        with provider_cache_lock(env, exclusive=args[0] == "init"):
            run = self._tool.run(
                cmd, cwd=cwd, env=env, on_line=lambda line: self._handle(line, result, on_line), timeout=timeout
            )
        result.returncode, result.interrupted = run.returncode, run.interrupted
        result.seconds = time.monotonic() - started
        with self._seconds_lock:
            self.seconds[args[0]] = self.seconds.get(args[0], 0.0) + result.seconds
        on_line(f"(terraform {args[0]}: {result.seconds:.1f} s, exit code {run.returncode})")
        return result

    def init(
        self, cwd: Path, backend: Backend | None, env: Mapping[str, str], on_line: Callable[[str], None]
    ) -> TerraformRun:
        args = ["init", "-input=false", "-no-color"]
        args += backend.init_args() if backend else ["-backend=false"]
        return self.run(args, cwd=cwd, env=env, on_line=on_line, timeout=600)

    def validate(self, cwd: Path, env: Mapping[str, str], on_line: Callable[[str], None]) -> TerraformRun:
        """``validate -json`` prints one JSON document over many lines: collect it, then report."""
        lines: list[str] = []
        run = self.run(["validate", "-json", "-no-color"], cwd=cwd, env=env, on_line=lines.append, timeout=300)
        if lines and lines[0].startswith("$ "):
            on_line(lines[0])
        body = [line for line in lines if not line.startswith(("$ ", "(terraform "))]
        try:
            doc = json.loads("\n".join(body))
        except ValueError:
            for line in lines[1:]:
                on_line(line)
            return run
        for d in doc.get("diagnostics", []):
            self._diagnostic(d, run, on_line)
        if doc.get("valid"):
            on_line("The module is valid.")
        return run

    def plan(
        self,
        cwd: Path,
        var_file: Path,
        env: Mapping[str, str],
        on_line: Callable[[str], None],
        *,
        out: Path | None = None,
        lock: bool = True,
        lock_timeout: int = 300,
    ) -> TerraformRun:
        args = ["plan", "-json", "-input=false", f"-var-file={var_file}"]
        args += [f"-lock-timeout={lock_timeout}s"] if lock else ["-lock=false"]
        if out is not None:
            args.append(f"-out={out}")
        return self.run(args, cwd=cwd, env=env, on_line=on_line, timeout=1800)

    def apply(self, cwd: Path, plan_file: Path, env: Mapping[str, str], on_line: Callable[[str], None]) -> TerraformRun:
        return self.run(
            ["apply", "-json", "-input=false", str(plan_file)], cwd=cwd, env=env, on_line=on_line, timeout=3600
        )

    def force_unlock(
        self, cwd: Path, lock_id: str, env: Mapping[str, str], on_line: Callable[[str], None]
    ) -> TerraformRun:
        return self.run(["force-unlock", "-force", lock_id], cwd=cwd, env=env, on_line=on_line, timeout=120)

    def interrupt(self) -> None:
        """SIGINT Terraform (it stops cleanly and releases its state lock), SIGKILL if it hangs."""
        self._tool.interrupt()

    # -- output parsing ---------------------------------------------------------------------------
    def _handle(self, line: str, result: TerraformRun, on_line: Callable[[str], None]) -> None:
        from amirelease.handoffs import ResourceChange

        try:
            msg = json.loads(line)
        except ValueError:
            if line.strip():
                on_line(line)
            return
        if not isinstance(msg, dict):
            on_line(line)
            return
        if "valid" in msg and "diagnostics" in msg:  # validate -json: one document
            for d in msg["diagnostics"]:
                self._diagnostic(d, result, on_line)
            return
        kind = msg.get("type")
        if kind == "diagnostic":
            self._diagnostic(msg.get("diagnostic", {}), result, on_line)
        elif kind == "planned_change":
            change = msg.get("change", {})
            res = change.get("resource", {})
            rc = ResourceChange(
                address=str(res.get("addr", "?")),
                resource_type=str(res.get("resource_type", "?")),
                action=str(change.get("action", "?")),
                reason=str(change.get("reason") or ""),
            )
            result.changes.append(rc)
            why = f", {rc.reason}" if rc.reason else ""
            on_line(f"  {_SYMBOL.get(rc.action, '?')} {rc.address} ({rc.action}{why})")
        elif kind == "change_summary":
            result.summary = msg.get("changes", {})
            on_line(str(msg.get("@message", "")))
        elif kind == "outputs":
            result.outputs = {
                k: v.get("value") for k, v in (msg.get("outputs") or {}).items() if not v.get("sensitive")
            }
        elif kind in ("apply_complete", "apply_errored", "resource_drift", "refresh_complete") or kind == "version":
            if kind != "refresh_complete":
                on_line(str(msg.get("@message", "")))
        elif kind in ("apply_start", "apply_progress", "refresh_start", "provision_start"):
            return  # one line per resource is enough: apply_complete says it
        elif msg.get("@message"):
            on_line(str(msg["@message"]))

    @staticmethod
    def _diagnostic(d: dict[str, Any], result: TerraformRun, on_line: Callable[[str], None]) -> None:
        if str(d.get("summary", "")).startswith(QUIET_WARNINGS) and d.get("severity") == "warning":
            return
        rng = d.get("range") or {}
        where = f"{rng['filename']}:{rng.get('start', {}).get('line', '?')}" if rng.get("filename") else ""
        diag = Diagnostic(
            severity=str(d.get("severity", "error")),
            summary=str(d.get("summary", "")),
            detail=str(d.get("detail", "")).strip(),
            where=where,
        )
        result.diagnostics.append(diag)
        m = re.search(r"ID:\s+([0-9a-f-]{36})", diag.detail)
        if m and "lock" in diag.summary.lower():
            result.lock_id = m.group(1)
        on_line(f"{diag.severity.upper()}: {diag}")


_SYMBOL = {"create": "+", "update": "~", "delete": "-", "replace": "-/+", "read": "<=", "noop": " ", "move": "->"}
