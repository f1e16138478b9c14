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
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from amirelease.errors import BakeError
from amirelease.hooks.tool import ToolProcess, workdir

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
        env = {k: v for k, v in os.environ.items() if not k.startswith("PKR_VAR_")}
        env.update(aws_env or {})
        env["CHECKPOINT_DISABLE"] = "1"  # no phone-home
        env["PACKER_NO_COLOR"] = "1"
        if secrets is not None:
            env["PKR_VAR_secrets"] = hcl_map(secrets)
        result = PackerResult(returncode=-1)
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
