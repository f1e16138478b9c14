"""Realistic SSM Run Command results.

moto answers every ``SendCommand`` with Success and empty output.  The sandbox
matches each line of an ``AWS-RunShellScript``/``AWS-RunPowerShellScript``
``commands`` parameter against the ``ssm_responses`` rules of account.yaml
(``command_regex`` searched in the line; first matching rule wins): stdout is
the matched rules' ``stdout`` joined by newlines, the exit code is the last
line's (shell semantics without ``set -e``).  Unmatched lines succeed with no
output.  ``faults.fail_ssm(instance_id, ...)`` overrides everything for that
instance.  ``ListCommandInvocations`` (missing in moto) is added.
"""

from __future__ import annotations

import re
from typing import Any

from moto.core.responses import ActionResult
from moto.ssm import models as ssm_models
from moto.ssm.responses import SimpleSystemManagerResponse

from .state import RUNTIME

_ORIGINAL: dict[str, Any] = {}


def _result_for(command: Any, instance_id: str) -> tuple[int, str, str]:
    fault = RUNTIME.faults.ssm_fault(instance_id)
    if fault is not None:
        return fault.exit_code, fault.stdout, fault.stderr
    lines: list[str] = []
    for entry in (command.parameters or {}).get("commands", []) or []:
        lines.extend(str(entry).splitlines())
    image_answer = _from_image_files(command, instance_id, lines)
    if image_answer is not None:
        return image_answer
    stdout: list[str] = []
    stderr: list[str] = []
    exit_code = 0
    for line in lines:
        if not line.strip():
            continue
        rule = next((r for r in RUNTIME.ssm_rules if re.search(r["command_regex"], line)), None)
        if rule is None:
            exit_code = 0
            continue
        if rule.get("stdout"):
            stdout.append(str(rule["stdout"]).rstrip("\n"))
        if rule.get("stderr"):
            stderr.append(str(rule["stderr"]).rstrip("\n"))
        exit_code = int(rule.get("exit_code", 0))
    return exit_code, "\n".join(stdout) + ("\n" if stdout else ""), "\n".join(stderr) + ("\n" if stderr else "")


_CAT = re.compile(r"^\s*(?:cat\s+(/[\w./-]+)|Get-Content\s+-Raw\s+'([A-Za-z]:[^']+)')\s*$")


def _from_image_files(command: Any, instance_id: str, lines: list[str]) -> tuple[int, str, str] | None:
    """`cat <file>` on an instance whose image a sandbox builder baked: the file as the bake left
    it (sandbox/builders), or cat's own error when the image has no such file."""
    builders = RUNTIME.builders
    if builders is None or len([ln for ln in lines if ln.strip()]) != 1:
        return None
    m = _CAT.match(next(ln for ln in lines if ln.strip()))
    if m is None:
        return None
    from moto.ec2.models import ec2_backends

    image_id = None
    for region_backend in ec2_backends[command.account_id].values():
        for reservation in region_backend.reservations.values():
            for instance in reservation.instances:
                if instance.id == instance_id:
                    image_id = instance.image_id
    if image_id is None or not builders.baked_by_builder(image_id):
        return None
    path = m.group(1) or m.group(2)
    data = builders.image_file(image_id, path)
    if data is None:
        if m.group(2):
            return 1, "", f"Get-Content : Cannot find path '{path}' because it does not exist.\n"
        return 1, "", f"cat: {path}: No such file or directory\n"
    return 0, data.decode(errors="replace"), ""


def _invocation_response(self: Any, instance_id: str, plugin_name: str) -> dict[str, Any]:
    out = _ORIGINAL["invocation_response"](self, instance_id, plugin_name)
    exit_code, stdout, stderr = _result_for(self, instance_id)
    out["ResponseCode"] = exit_code
    out["StandardOutputContent"] = stdout
    out["StandardErrorContent"] = stderr
    if exit_code != 0:
        out["Status"] = "Failed"
        out["StatusDetails"] = "Failed"
    return out


def _command_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _ORIGINAL["__init__"](self, *args, **kwargs)
    failed = [i for i in self.invocations if i["Status"] != "Success"]
    if failed:
        self.status = "Failed"
        self.status_details = "Failed"
        self.error_count = len(failed)


def _list_command_invocations(self: Any) -> ActionResult:
    command_id = self._get_param("CommandId")
    instance_id = self._get_param("InstanceId")
    details = self._get_param("Details", False)
    if command_id:
        commands = [self.ssm_backend.get_command_by_id(command_id)]
    else:
        commands = list(self.ssm_backend._commands)
    result = []
    for command in commands:
        for inv in command.invocations:
            if instance_id and inv["InstanceId"] != instance_id:
                continue
            item: dict[str, Any] = {
                "CommandId": command.command_id,
                "InstanceId": inv["InstanceId"],
                "Comment": command.comment,
                "DocumentName": command.document_name,
                "DocumentVersion": "$DEFAULT",
                "RequestedDateTime": command.requested_date_time,
                "Status": inv["Status"],
                "StatusDetails": inv["StatusDetails"],
                "StandardOutputUrl": "",
                "StandardErrorUrl": "",
            }
            if details:
                item["CommandPlugins"] = [
                    {
                        "Name": inv["PluginName"],
                        "Status": inv["Status"],
                        "StatusDetails": inv["StatusDetails"],
                        "ResponseCode": inv["ResponseCode"],
                        "Output": inv["StandardOutputContent"] + inv["StandardErrorContent"],
                        "StandardOutputUrl": "",
                        "StandardErrorUrl": "",
                    }
                ]
            result.append(item)
    return ActionResult({"CommandInvocations": result})


def install() -> None:
    if "invocation_response" not in _ORIGINAL:
        _ORIGINAL["invocation_response"] = ssm_models.Command.invocation_response
        ssm_models.Command.invocation_response = _invocation_response  # type: ignore[method-assign]
        _ORIGINAL["__init__"] = ssm_models.Command.__init__
        ssm_models.Command.__init__ = _command_init  # type: ignore[method-assign]
        SimpleSystemManagerResponse.list_command_invocations = _list_command_invocations  # type: ignore[attr-defined]
