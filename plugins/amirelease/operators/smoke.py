"""Smoke test: one instance of the new AMI, the app's SSM commands, always torn down."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.hooks.ssm import SsmHook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.configuration import conf
from botocore.exceptions import ClientError, WaiterError

from amirelease import catalog
from amirelease.errors import SmokeTestError
from amirelease.operators.base import Ec2ClientHookMixin, RegionalHooksMixin, group_launch_template
from amirelease.release import TAG_PURPOSE, TAG_RELEASE_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

SMOKE_PURPOSE = "ami-smoke-test"
DOCUMENT = {"linux": "AWS-RunShellScript", "windows": "AWS-RunPowerShellScript"}


def check_invocation(cmd: catalog.SmokeCommand, status: str, exit_code: int | None, stdout: str) -> str | None:
    """None when the command passed, else what was wrong (pure, for tests)."""
    if exit_code is None:
        return f"no exit code (status {status})"
    if exit_code != cmd.expect_exit_code:
        return f"exit code {exit_code}, expected {cmd.expect_exit_code} (status {status})"
    if cmd.expect_output is not None and not re.search(cmd.expect_output, stdout, re.MULTILINE):
        return f"output {stdout.strip()[:200]!r} does not match /{cmd.expect_output}/"
    return None


class SmokeTestOperator(Ec2ClientHookMixin, RegionalHooksMixin, AwsBaseOperator[EC2Hook]):
    """Launch one instance of the baked AMI from the app's own launch template (same
    profile, security groups, user data as production), run the smoke commands through
    SSM, and terminate it on success, failure, timeout and kill."""

    aws_hook_class = EC2Hook
    template_fields: Sequence[str] = aws_template_fields("plan", "bake")
    ui_color = "#eaf7e6"

    def __init__(
        self, *, plan: dict | str, bake: dict | str, poll_interval: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.bake = bake
        self.poll_interval = poll_interval
        self._instance: tuple[str, str] | None = None  # (region, instance id) while one is up

    def execute(self, context: Context) -> dict:
        plan, bake = self.plan, self.bake
        if self.poll_interval is None:
            self.poll_interval = conf.getfloat("ami_release", "smoke_poll_seconds", fallback=5.0)
        app = catalog.get_app(plan["app"])
        target = plan["targets"][0]
        region = target["region"]
        ami = bake["amis"][region]
        ec2 = self.ec2(region)
        rid = plan["release_id"]
        self._terminate(ec2, self._leftovers(ec2, rid), reason="left by an earlier try")

        group = self.autoscaling(region).describe_group(target["auto_scaling_group"]) or {}
        lt = group_launch_template(group) or {}
        subnets = [s for s in (group.get("VPCZoneIdentifier") or "").split(",") if s]
        run_args: dict[str, Any] = {
            "ImageId": ami,
            "InstanceType": app.smoke_instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "TagSpecifications": [
                {
                    "ResourceType": "instance",
                    "Tags": [
                        {"Key": TAG_RELEASE_ID, "Value": rid},
                        {"Key": TAG_PURPOSE, "Value": SMOKE_PURPOSE},
                        {"Key": "App", "Value": app.name},
                        {"Key": "Name", "Value": f"smoke-test {rid}"},
                    ],
                }
            ],
        }
        if lt.get("LaunchTemplateId") or lt.get("LaunchTemplateName"):
            key = "LaunchTemplateId" if lt.get("LaunchTemplateId") else "LaunchTemplateName"
            run_args["LaunchTemplate"] = {key: lt[key], "Version": lt.get("Version", "$Default")}
        if subnets:
            run_args["SubnetId"] = subnets[0]

        instance_id = ec2.run_instances(**run_args)["Instances"][0]["InstanceId"]
        self._instance = (region, instance_id)
        self.log.info("Smoke-test instance %s of %s launched in %s", instance_id, ami, region)
        results: list[dict] = []
        try:
            ec2.get_waiter("instance_running").wait(
                InstanceIds=[instance_id],
                WaiterConfig={
                    "Delay": self.poll_interval,
                    "MaxAttempts": max(1, int(app.smoke_boot_timeout / self.poll_interval)),
                },
            )
            self.log.info(
                "Instance %s is running; running %d smoke command(s) via SSM", instance_id, len(app.smoke_commands)
            )
            ssm = SsmHook(
                aws_conn_id=self.aws_conn_id, region_name=region, verify=self.verify, config=self.botocore_config
            ).conn
            failures = []
            for cmd in app.smoke_commands:
                outcome = self._run(ssm, instance_id, app.platform, cmd, register_timeout=app.smoke_boot_timeout)
                results.append(outcome)
                if outcome["problem"]:
                    failures.append(f"'{cmd.name}': {outcome['problem']}")
                    self.log.error("FAIL  %s: %s", cmd.name, outcome["problem"])
                else:
                    self.log.info("PASS  %s", cmd.name)
            if failures:
                raise SmokeTestError(
                    f"smoke test of {ami} failed: " + "; ".join(failures),
                    resource=f"instance {instance_id}",
                    fix="nothing was rolled out; fix the cookbook or the smoke command in the app's catalog file and release again",
                )
        except WaiterError as exc:
            raise SmokeTestError(
                f"smoke-test instance {instance_id} of {ami} did not reach 'running': {exc.last_response.get('Error', exc)}",
                fix="check the AMI boots (console output) and the launch template; nothing was rolled out",
            ) from None
        finally:
            self._terminate(ec2, [instance_id], reason="smoke test finished")
            self._instance = None
        return {"ami_id": ami, "instance_id": instance_id, "passed": True, "commands": results}

    def _run(
        self, ssm, instance_id: str, platform: str, cmd: catalog.SmokeCommand, register_timeout: float = 300
    ) -> dict:
        deadline = time.monotonic() + register_timeout
        while True:
            try:
                command_id = ssm.send_command(
                    InstanceIds=[instance_id],
                    DocumentName=DOCUMENT[platform],
                    Parameters={"commands": [cmd.run]},
                    TimeoutSeconds=max(30, cmd.timeout_seconds),
                    Comment=f"smoke: {cmd.name}"[:100],
                )["Command"]["CommandId"]
                break
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                # A booting instance's SSM agent registers a little after 'running'.
                if code == "InvalidInstanceId" and time.monotonic() < deadline:
                    self.log.info("SSM agent on %s not registered yet; retrying", instance_id)
                    time.sleep(self.poll_interval)
                    continue
                return {"name": cmd.name, "problem": f"SendCommand failed: {code}", "exit_code": None}
        try:
            ssm.get_waiter("command_executed").wait(
                CommandId=command_id,
                InstanceId=instance_id,
                WaiterConfig={
                    "Delay": max(1, int(self.poll_interval)),
                    "MaxAttempts": max(2, int(cmd.timeout_seconds / max(1, self.poll_interval)) + 1),
                },
            )
        except WaiterError:
            pass  # a failed command ends the waiter too; the invocation below says how it ended
        inv = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        exit_code = inv.get("ResponseCode")
        if exit_code == -1:  # AWS: no exit code (still running, timed out, undeliverable)
            exit_code = None
        stdout = inv.get("StandardOutputContent", "")
        problem = check_invocation(cmd, inv["Status"], exit_code, stdout)
        if problem and inv.get("StandardErrorContent"):
            problem += f"; stderr: {inv['StandardErrorContent'].strip()[:200]}"
        return {"name": cmd.name, "status": inv["Status"], "exit_code": exit_code, "problem": problem}

    def _leftovers(self, ec2, rid: str) -> list[str]:
        res = ec2.describe_instances(
            Filters=[
                {"Name": f"tag:{TAG_RELEASE_ID}", "Values": [rid]},
                {"Name": f"tag:{TAG_PURPOSE}", "Values": [SMOKE_PURPOSE]},
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
            ]
        )["Reservations"]
        return [i["InstanceId"] for r in res for i in r["Instances"]]

    def _terminate(self, ec2, ids: list[str], reason: str) -> None:
        if not ids:
            return
        self.log.info("Terminating smoke-test instance(s) %s (%s)", ids, reason)
        ec2.terminate_instances(InstanceIds=ids)
        try:
            ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 2, "MaxAttempts": 150})
        except WaiterError:
            self.log.warning("Instance(s) %s not yet terminated; termination was requested", ids)

    def on_kill(self) -> None:
        if self._instance:
            region, instance_id = self._instance
            self._terminate(self.ec2(region), [instance_id], reason="task killed")
