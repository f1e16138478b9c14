"""Run ``packer build -machine-readable`` as a subprocess.

* Non-secret variables go in a JSON var file; secrets only in Packer's environment as
  ``PKR_VAR_secrets`` (never argv, which any local user can read in /proc).
* Packer's output is parsed line by line and streamed to the task log as it comes.
* ``interrupt()`` sends SIGINT, which makes Packer tear down its builder instance,
  security group and key pair before exiting; it is called on kill, timeout and error.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from airflow.sdk import BaseHook

from amirelease.errors import BakeError

log = logging.getLogger(__name__)


def hcl_string(value: str) -> str:
    """Quote a string for HCL: JSON escaping plus HCL's template sequences (${ and %{)."""
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def hcl_map(values: dict[str, str]) -> str:
    return "{" + ", ".join(f"{hcl_string(k)} = {hcl_string(v)}" for k, v in values.items()) + "}"


def unescape(field_: str) -> str:
    return field_.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")


@dataclass
class PackerResult:
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
    """Packer on this worker (the bake task's toolchain queue guarantees it is installed)."""

    hook_name = "Packer"

    def __init__(self, packer_bin: str = "packer", interrupt_grace: float = 120.0) -> None:
        super().__init__()
        self.packer_bin = packer_bin
        self.interrupt_grace = interrupt_grace
        self._proc: subprocess.Popen | None = None

    def binary(self) -> str:
        path = shutil.which(self.packer_bin)
        if not path:
            raise BakeError(
                f"packer binary '{self.packer_bin}' not found on this worker",
                fix="install Packer >= 1.6 on the workers of this toolchain queue, or route the app to a queue that has it",
            )
        return path

    def version(self) -> str:
        return subprocess.run([self.binary(), "version"], capture_output=True, text=True, check=False).stdout.strip()

    def build(
        self,
        template: Path,
        variables: dict,
        *,
        secrets: dict[str, str] | None = None,
        only: str | None = None,
        aws_env: dict[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
        timeout: float | None = None,
    ) -> PackerResult:
        on_line = on_line or log.info
        env = {k: v for k, v in os.environ.items() if not k.startswith("PKR_VAR_")}
        env.update(aws_env or {})
        env["CHECKPOINT_DISABLE"] = "1"  # no phone-home
        env["PACKER_NO_COLOR"] = "1"
        if secrets is not None:
            env["PKR_VAR_secrets"] = hcl_map(secrets)
        result = PackerResult(returncode=-1)
        with tempfile.TemporaryDirectory(prefix="packer-") as tmp:
            var_file = Path(tmp) / "release.pkrvars.json"
            var_file.write_text(json.dumps(variables, indent=2))
            cmd = [self.binary(), "build", "-machine-readable", "-color=false", f"-var-file={var_file}"]
            if only:
                cmd.append(f"-only={only}")
            cmd.append(str(template))
            on_line(
                f"$ {' '.join(cmd)}   (secrets via PKR_VAR_secrets in the environment: {sorted((secrets or {}).keys())})"
            )
            self._proc = subprocess.Popen(
                cmd,
                cwd=str(template.parent),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                start_new_session=True,  # our signals go to Packer and its plugins only
            )
            deadline = time.monotonic() + timeout if timeout else None
            try:
                assert self._proc.stdout is not None
                for raw in self._proc.stdout:
                    self._handle_line(raw.rstrip("\n"), result, on_line)
                    if deadline and time.monotonic() > deadline:
                        on_line(f"packer exceeded {timeout:.0f}s: interrupting")
                        self.interrupt()
                        result.interrupted = True
                        break
                result.returncode = self._proc.wait()
            finally:
                # Any exit from this block other than Packer finishing (task timeout, kill,
                # a bug of ours) must still let Packer clean up its builder.
                if self._proc.poll() is None:
                    result.interrupted = True
                    self.interrupt()
                self._proc = None
        return result

    def _handle_line(self, line: str, result: PackerResult, on_line: Callable[[str], None]) -> None:
        parts = line.split(",", 3)
        if len(parts) < 3 or not parts[0].isdigit():
            on_line(line)
            return
        _ts, target, kind = parts[0], parts[1], parts[2]
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
                result.artifacts.update(parse_artifact_id(unescape(fields[2])))
        elif kind == "error":
            result.errors.append(unescape(data).strip())

    def interrupt(self) -> None:
        """SIGINT Packer (it then deletes its builder instance etc.), escalate if it hangs."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        log.warning("Interrupting packer (pid %s) so it tears down its builder instance", proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=self.interrupt_grace)
        except subprocess.TimeoutExpired:
            log.error("packer did not exit %ss after SIGINT; terminating", self.interrupt_grace)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
