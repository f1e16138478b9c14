"""Run ``packer build -machine-readable`` on a folder of HCL2 files.

* Non-secret variables go in a JSON var file (in a private working folder); secrets only in
  Packer's environment as ``PKR_VAR_secrets`` (never argv, which any local user can read in
  /proc, and never a file).
* Packer's output is parsed line by line and streamed to the task log as it comes.
* Packer runs under the tool runner (hooks/tool.py): ``interrupt()`` sends SIGINT, which
  makes Packer tear down its builder instance, security group and key pair before exiting;
  it is called on kill, timeout and error; and Packer dies with its task if the task dies.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from amirelease.errors import BakeError
from amirelease.hooks.tool import ToolProcess, base_environment, workdir
from amirelease.retry import policy

log = logging.getLogger(__name__)

# What Packer's amazon-ebs builder calls during a bake (the bake task's own calls are declared
# on BakeAmiOperator): checked against what Packer really called in the tests (iam.py).
PACKER_IAM_ACTIONS: tuple[str, ...] = (
    "ec2:CopyImage",
    "ec2:CreateImage",
    "ec2:CreateKeyPair",
    "ec2:CreateTags",
    "ec2:DeleteKeyPair",
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeRegions",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVolumes",  # cleanup: volumes the builder left (also after an interrupt)
    "ec2:ModifyImageAttribute",  # the AMI's description, set after the image is taken
    "ec2:RunInstances",
    "ec2:StopInstances",
    "ec2:TerminateInstances",
)

SYSPREP = re.compile(r"ec2launch\.exe'?\s+sysprep|SysprepInstance\.ps1|sysprep\.exe\b.*/generalize", re.IGNORECASE)


def _hcl_text(value: Any) -> str:
    """A string as python-hcl2 gives it ('"…"' with HCL escapes) -> its text."""
    s = str(value)
    if len(s) >= 2 and s[0] == s[-1] == '"':
        s = s[1:-1]
        s = re.sub(r'\\(["\\nrt])', lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), s)
    return s


def sysprep_problem(template: Path, source: str = "amazon-ebs.provisioned") -> str | None:
    """None when the last provisioner that runs for `source` ends with Sysprep (EC2Launch v2's
    `ec2launch.exe sysprep`, v1's SysprepInstance.ps1, or sysprep.exe /generalize); else what
    is wrong. A Windows image that was not generalised clones its machine identity (SID,
    host name, the builder's keys) into every instance launched from it."""
    import hcl2

    parsed = hcl2.loads(template.read_text())
    steps: list[tuple[str, dict[str, Any]]] = []
    for build in parsed.get("build", []):
        for block in build.get("provisioner", []):
            for kind, body in block.items():
                only = [_hcl_text(x) for x in body.get("only", [])]
                skip = [_hcl_text(x) for x in body.get("except", [])]
                if (only and source not in only) or source in skip:
                    continue
                steps.append((_hcl_text(kind), body))
    if not steps:
        return f"{template.name} has no provisioner for {source}, so nothing runs Sysprep"
    kind, body = steps[-1]
    lines = [_hcl_text(x) for x in body.get("inline", [])]
    if kind != "powershell" or not lines or not SYSPREP.search(lines[-1]):
        last = f"{kind} provisioner" + (f" ending with {lines[-1]!r}" if lines else "")
        return f"the last step of {template.name} for {source} is a {last}, not Sysprep"
    return None


_HCL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def hcl_string(value: str) -> str:
    """A string literal HCL reads back exactly: quotes and backslashes escaped, every other
    control character as \\uNNNN (HCL has no \\b or \\f, which JSON escaping would produce),
    and HCL's template sequences ${ and %{ doubled so they stay literal."""
    out = []
    for ch in value:
        if ch in _HCL_ESCAPES:
            out.append(_HCL_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out).replace("${", "$${").replace("%{", "%%{") + '"'


def hcl_map(values: dict[str, str]) -> str:
    return "{" + ", ".join(f"{hcl_string(k)} = {hcl_string(v)}" for k, v in values.items()) + "}"


def unescape(field_: str) -> str:
    return field_.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")


@dataclass
class PackerResult:
    """What one ``packer build`` gave: its exit code, the AMI per region, the error lines."""

    returncode: int
    artifacts: dict[str, str] = field(default_factory=dict)  # region -> AMI id
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False


def parse_artifact_id(value: str) -> dict[str, str]:
    """'us-east-1:ami-1,eu-west-1:ami-2' -> {'us-east-1': 'ami-1', 'eu-west-1': 'ami-2'}."""
    out: dict[str, str] = {}
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        region, _, ami = part.partition(":")
        if not ami.startswith("ami-"):
            raise BakeError(
                f"unexpected Packer artifact id '{value}'", fix="check the template's builder is amazon-ebs"
            )
        out[region] = ami
    return out


# Packer >= 1.7 loads the amazon builder and the chef-solo provisioner as plugins: the build
# gets a generated `packer { required_plugins }` file and `packer init` first. Packer 1.6
# bundles both and rejects that block ("Blocks of type required_plugins are not expected
# here"), so for it nothing is generated. Sources and constraints are deployment settings:
# [ami_release] packer_plugin_amazon / packer_plugin_chef ("<source> <constraint>"), and
# [ami_release] packer_plugin_path for workers without internet (a `packer plugins install`
# or `packer init` done once into that folder: PACKER_PLUGIN_PATH).
PLUGINS_FROM = (1, 7, 0)
DEFAULT_PLUGINS = {
    "amazon": "github.com/hashicorp/amazon >= 1.3.0",
    "chef": "github.com/hashicorp/chef >= 1.0.0",
}
PLUGINS_FILE = "zz-required-plugins.pkr.hcl"
_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def parse_packer_version(text: str) -> tuple[int, int, int]:
    """(1, 6, 6) from `packer version` output ("Packer v1.6.6", "Packer v1.11.2\n\nYour version…")."""
    m = _VERSION_RE.search(text)
    if not m:
        raise BakeError(f"cannot read Packer's version from {text.strip()[:80]!r}", fix="install Packer >= 1.6")
    return int(m[1]), int(m[2]), int(m[3])


def required_plugins_hcl(version: tuple[int, int, int], plugins: dict[str, str]) -> str | None:
    """The `packer { required_plugins {...} }` file for this Packer, or None where it has none."""
    if version < PLUGINS_FROM:
        return None
    lines = ["# generated by the pipeline for Packer >= 1.7 (plugins/amirelease/hooks/packer.py)", "packer {"]
    lines.append("  required_plugins {")
    for name, spec in sorted(plugins.items()):
        source, _, constraint = spec.strip().partition(" ")
        if not re.fullmatch(r"[a-z0-9.-]+(/[A-Za-z0-9_.-]+){2}", source) or not constraint.strip():
            raise BakeError(
                f"Packer plugin setting for '{name}' is {spec!r}",
                fix="write '<source> <version constraint>', e.g. github.com/hashicorp/amazon >= 1.3.0",
            )
        lines += [
            f"    {name} = {{",
            f"      source  = {hcl_string(source)}",
            f"      version = {hcl_string(constraint.strip())}",
            "    }",
        ]
    lines += ["  }", "}", ""]
    return "\n".join(lines)


class PackerHook(BaseHook):
    """Packer on this worker (the task's toolchain queue guarantees it is installed).

    :param packer_bin: the binary, a name on PATH or a path.
    :param interrupt_grace: seconds Packer gets after SIGINT to tear its builder down, before SIGKILL.
    """

    hook_name = "Packer"

    def __init__(self, packer_bin: str = "packer", interrupt_grace: float = 120.0) -> None:
        super().__init__()
        self.packer_bin = packer_bin
        self._tool = ToolProcess(interrupt_grace=interrupt_grace, death_grace=5.0)

    def binary(self) -> str:
        path = shutil.which(self.packer_bin)
        if not path:
            raise BakeError(
                f"packer binary '{self.packer_bin}' not found on this worker",
                fix="install Packer >= 1.6 on the workers of this toolchain queue, or route the app to a queue "
                "that has it",
            )
        return path

    def build(
        self,
        template_dir: Path,
        variables: dict[str, Any],
        *,
        secrets: dict[str, str] | None = None,
        only: str | None = None,
        aws_env: dict[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
        timeout: float | None = None,
    ) -> PackerResult:
        """Build every *.pkr.hcl in template_dir (or one template file)."""
        emit = on_line or log.info
        env = base_environment()
        env.update(aws_env or {})
        # the deployment's retry policy (retry.py): API retries, and how Packer's waiters poll
        env.update(policy().packer_environment())
        env["CHECKPOINT_DISABLE"] = "1"  # no phone-home
        env["PACKER_NO_COLOR"] = "1"
        if secrets is not None:
            env["PKR_VAR_secrets"] = hcl_map(secrets)
        result = PackerResult(returncode=-1)
        if template_dir.is_dir():
            self._require_plugins(template_dir, env, emit)
        with workdir("packer") as tmp:
            var_file = tmp / "release.pkrvars.json"
            var_file.write_text(json.dumps(variables, indent=2))
            cmd = [self.binary(), "build", "-machine-readable", "-color=false", f"-var-file={var_file}"]
            if only:
                cmd.append(f"-only={only}")
            cmd.append(str(template_dir))
            emit(
                f"$ {' '.join(cmd)}   (secrets via PKR_VAR_secrets in the environment: "
                f"{sorted((secrets or {}).keys())})"
            )
            cwd = template_dir if template_dir.is_dir() else template_dir.parent
            run = self._tool.run(
                cmd, cwd=cwd, env=env, on_line=lambda line: self._handle_line(line, result, emit), timeout=timeout
            )
        result.returncode = run.returncode
        result.interrupted = run.interrupted
        return result

    def version(self) -> tuple[int, int, int]:
        out = subprocess.run([self.binary(), "version"], capture_output=True, text=True, timeout=60, check=False)
        return parse_packer_version(out.stdout or out.stderr)

    def _require_plugins(self, template_dir: Path, env: dict[str, str], emit: Callable[[str], None]) -> None:
        """Packer >= 1.7: the required_plugins file beside the templates, then `packer init`."""
        from airflow.sdk.configuration import conf

        version = self.version()
        plugins = {
            name: str(conf.get("ami_release", f"packer_plugin_{name}", fallback=default))
            for name, default in DEFAULT_PLUGINS.items()
        }
        text = required_plugins_hcl(version, plugins)
        if text is None:
            emit(f"Packer {'.'.join(map(str, version))}: amazon and chef are built in (no packer init)")
            return
        plugin_path = conf.get("ami_release", "packer_plugin_path", fallback="")
        if plugin_path:
            env["PACKER_PLUGIN_PATH"] = plugin_path
        (template_dir / PLUGINS_FILE).write_text(text)
        emit(f"Packer {'.'.join(map(str, version))}: packer init for {', '.join(sorted(plugins.values()))}")
        run = self._tool.run(
            [self.binary(), "init", str(template_dir)], cwd=template_dir, env=env, on_line=emit, timeout=600
        )
        if run.returncode != 0:
            raise BakeError(
                f"packer init failed (exit {run.returncode}) for the plugins {', '.join(sorted(plugins.values()))}",
                fix="give the workers access to the plugin source, or install the plugins once into "
                "[ami_release] packer_plugin_path (packer plugins install …)",
            )

    def _handle_line(self, line: str, result: PackerResult, on_line: Callable[[str], None]) -> None:
        parts = line.split(",", 3)
        if len(parts) < 3 or not parts[0].isdigit():
            on_line(line)
            return
        kind = parts[2]
        data = parts[3] if len(parts) > 3 else ""
        if kind == "ui":
            level, _, message = data.partition(",")
            for msg_line in unescape(message).splitlines() or [""]:
                on_line(msg_line)
            if level == "error":
                result.errors.append(unescape(message).strip())
        elif kind == "artifact":
            fields = data.split(",", 2)
            if len(fields) == 3 and fields[1] == "id":
                try:
                    result.artifacts.update(parse_artifact_id(unescape(fields[2])))
                except BakeError as exc:  # not an AMI (another builder): the bake reports "no artifact"
                    result.errors.append(exc.problem)
        elif kind == "error":
            result.errors.append(unescape(data).strip())

    def interrupt(self) -> None:
        """SIGINT Packer (it then deletes its builder instance etc.), SIGKILL if it hangs."""
        self._tool.interrupt()
