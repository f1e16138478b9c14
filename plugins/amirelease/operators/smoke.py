"""Smoke test: one instance of the new AMI, the app's SSM commands, always torn down."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.configuration import conf
from botocore.exceptions import ClientError, WaiterError

from amirelease.constants import (
    PURPOSE_SMOKE,
    TAG_APP,
    TAG_NAME,
    TAG_PURPOSE,
    TAG_RELEASE_ID,
)
from amirelease.errors import SmokeTestError, aws_error, aws_error_code
from amirelease.operators.base import Ec2ClientHookMixin, ReleaseOperatorMixin

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mypy_boto3_ssm import SSMClient

    from amirelease import catalog
    from amirelease.handoffs import SmokeCommandResult

SMOKE_INSTANCES = "smoke-test instance(s)"
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


def smoke_commands(app: catalog.App, release_id: str, provisioned: bool) -> list[catalog.SmokeCommand]:
    """The app's smoke commands; first, when Chef ran, that the image says it is this release."""
    from amirelease import catalog, chef

    if not provisioned:
        return list(app.smoke_commands)
    run, expect = chef.identity_check_command(app.platform, release_id)
    return [
        catalog.SmokeCommand(name="the image is this release (identity file)", run=run, expect_output=expect),
        *app.smoke_commands,
    ]


class SmokeTestOperator(Ec2ClientHookMixin, ReleaseOperatorMixin, AwsBaseOperator[EC2Hook]):
    """
    Launch one instance of the baked AMI, run the app's smoke commands through SSM, and
    terminate it on success, failure, timeout and kill.

    The instance comes from the app's own launch template when it exists (same profile,
    security groups and user data as production, with the new image); on an app's first
    release, before Terraform has created the template, from the catalog's smoke instance
    type in the app's first subnet.

    :param plan: the ReleasePlan from preflight.
    :param bake: the BakeResult (the AMI to test).
    :param poll_interval: seconds between polls of the instance and SSM
        (default ``[ami_release] smoke_poll_seconds``).
    """

    aws_hook_class = EC2Hook
    template_fields: Sequence[str] = aws_template_fields("plan", "bake")
    ui_color = "#eaf7e6"
    pushback_changed = (
        "The smoke-test instance this step started, if any, is terminated by the step's own cleanup; nothing "
        "else was changed by it."
    )
    iam_actions = (
        "ec2:CreateTags",
        "ec2:DescribeInstances",
        "ec2:DescribeLaunchTemplates",
        "ec2:RunInstances",
        "ec2:TerminateInstances",
        "ssm:GetCommandInvocation",
        "ssm:SendCommand",
    )

    def __init__(self, *, plan: Any, bake: Any, poll_interval: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.bake = bake
        self.poll_interval = poll_interval
        self._instance: tuple[str, str] | None = None  # (region, instance id) while one is up

    def execute(self, context: Context) -> dict[str, Any]:
        from amirelease.handoffs import BakeResult, ReleasePlan, SmokeResult

        plan = ReleasePlan.from_xcom(self.plan)
        baked = BakeResult.from_xcom(self.bake)
        poll = self.poll_interval or conf.getfloat("ami_release", "smoke_poll_seconds", fallback=5.0)
        app = plan.app_spec
        target = plan.targets[0]
        region = target.region
        ami = baked.amis[region]
        ec2 = self.clients.ec2_release(region)
        rid = plan.release_id
        ec2.remove_release_instances(rid, PURPOSE_SMOKE, what=SMOKE_INSTANCES, why="left by an earlier try")

        subnet = plan.network(region).subnet_ids[0]
        template_id = ec2.launch_template_id(target.launch_template)
        if template_id:
            launch: dict[str, Any] = {"LaunchTemplate": {"LaunchTemplateId": template_id, "Version": "$Default"}}
            launched_from = f"launch template {target.launch_template} ($Default, image replaced by {ami})"
        else:
            launch = {"InstanceType": app.smoke_instance_type}
            launched_from = (
                f"{app.smoke_instance_type} in subnet {subnet} (launch template "
                f"{target.launch_template} does not exist yet: the first apply creates it)"
            )
        instance_id = ec2.run_instance(
            ImageId=ami,
            SubnetId=subnet,
            tags={TAG_RELEASE_ID: rid, TAG_PURPOSE: PURPOSE_SMOKE, TAG_APP: app.name, TAG_NAME: f"smoke-test {rid}"},
            **launch,
        )
        self._instance = (region, instance_id)
        self.log.info("Smoke-test instance %s of %s launched in %s from %s", instance_id, ami, region, launched_from)
        results: list[SmokeCommandResult] = []
        try:
            ec2.wait_running(instance_id, delay=poll, timeout=app.smoke_boot_timeout)
            self.log.info(
                "Instance %s is running; running %d smoke command(s) via SSM", instance_id, len(app.smoke_commands)
            )
            ssm = self.clients.ssm(region)
            failures = []
            for cmd in smoke_commands(app, plan.release_id, baked.provisioned):
                outcome = self._run(ssm, instance_id, app.platform, cmd, poll, register_timeout=app.smoke_boot_timeout)
                results.append(outcome)
                if outcome.problem:
                    failures.append(f"'{cmd.name}': {outcome.problem}")
                    self.log.error("FAIL  %s: %s", cmd.name, outcome.problem)
                else:
                    self.log.info("PASS  %s", cmd.name)
            if failures:
                raise SmokeTestError(
                    f"smoke test of {ami} failed: " + "; ".join(failures),
                    resource=f"instance {instance_id}",
                    fix="nothing was rolled out; fix the cookbook or the smoke command in the app's catalog file and "
                    "release again",
                )
        except WaiterError as exc:
            raise SmokeTestError(
                f"smoke-test instance {instance_id} of {ami} did not reach 'running': "
                f"{aws_error(exc) if aws_error(exc).code else exc}",
                fix="check the AMI boots (console output) and the launch template; nothing was rolled out",
            ) from None
        finally:
            ec2.terminate_and_wait([instance_id], what=SMOKE_INSTANCES, why="smoke test finished")
            self._instance = None
        return SmokeResult(
            ami_id=ami, instance_id=instance_id, passed=True, commands=tuple(results), launched_from=launched_from
        ).to_xcom()

    def _run(
        self,
        ssm: SSMClient,
        instance_id: str,
        platform: str,
        cmd: catalog.SmokeCommand,
        poll: float,
        register_timeout: float = 300,
    ) -> SmokeCommandResult:
        from amirelease.handoffs import SmokeCommandResult

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
                code = aws_error_code(exc)
                # A booting instance's SSM agent registers a little after 'running'.
                if code == "InvalidInstanceId" and time.monotonic() < deadline:
                    self.log.info("SSM agent on %s not registered yet; retrying", instance_id)
                    time.sleep(poll)
                    continue
                return SmokeCommandResult(name=cmd.name, exit_code=None, problem=f"SendCommand failed: {code}")
        try:
            ssm.get_waiter("command_executed").wait(
                CommandId=command_id,
                InstanceId=instance_id,
                WaiterConfig={
                    "Delay": max(1, int(poll)),
                    "MaxAttempts": max(2, int(cmd.timeout_seconds / max(1, poll)) + 1),
                },
            )
        except WaiterError:
            pass  # a failed command ends the waiter too; the invocation below says how it ended
        inv = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        exit_code: int | None = inv.get("ResponseCode")
        if exit_code == -1:  # AWS: no exit code (still running, timed out, undeliverable)
            exit_code = None
        stdout = inv.get("StandardOutputContent", "")
        problem = check_invocation(cmd, inv["Status"], exit_code, stdout)
        if problem and inv.get("StandardErrorContent"):
            problem += f"; stderr: {inv['StandardErrorContent'].strip()[:200]}"
        return SmokeCommandResult(name=cmd.name, status=inv["Status"], exit_code=exit_code, problem=problem)

    def on_kill(self) -> None:
        if self._instance:
            region, instance_id = self._instance
            self.clients.ec2_release(region).terminate_and_wait([instance_id], what=SMOKE_INSTANCES, why="task killed")
