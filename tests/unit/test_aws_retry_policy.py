"""One retry policy, declared once ([ami_release] aws_retry_mode / aws_max_attempts), reaches
every AWS client the product makes: the provider hooks of our operators, our own clients, the
instance-refresh trigger, retention, Terraform's AWS provider and backend, and Packer. And
AWS's throttling and 5xx, once they outlast it, become one error in words (issue 28)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from botocore.config import Config
from botocore.exceptions import ClientError

from amirelease.aws import AwsClients, with_retry_policy
from amirelease.errors import AwsPushbackError, ConfigError, PreflightError
from amirelease.hooks.autoscaling import AutoScalingHook
from amirelease.hooks.packer import PackerHook
from amirelease.hooks.terraform import OVERRIDE_FILE, TerraformHook
from amirelease.hooks.tool import workdir
from amirelease.operators.base import NOTHING_CHANGED, ReleaseOperatorMixin
from amirelease.operators.preflight import ReleasePreflightOperator
from amirelease.retry import AwsRetryPolicy, policy, pushback_error, pushback_kind
from amirelease.triggers.instance_refresh import InstanceRefreshCompleteTrigger

REPO = Path(__file__).parents[2]
HOOKS = REPO / "tests" / "hooks"
STANDARD_10 = {"mode": "standard", "total_max_attempts": 10}


@pytest.fixture
def attempts(monkeypatch):
    """Set [ami_release] aws_max_attempts (and optionally the mode) for one test."""

    def set_(n: int, mode: str | None = None) -> None:
        monkeypatch.setenv("AIRFLOW__AMI_RELEASE__AWS_MAX_ATTEMPTS", str(n))
        if mode:
            monkeypatch.setenv("AIRFLOW__AMI_RELEASE__AWS_RETRY_MODE", mode)

    return set_


# --- the setting ---------------------------------------------------------------------------


def test_the_default_policy_is_standard_mode_with_ten_attempts(monkeypatch):
    monkeypatch.delenv("AIRFLOW__AMI_RELEASE__AWS_MAX_ATTEMPTS", raising=False)
    monkeypatch.delenv("AIRFLOW__AMI_RELEASE__AWS_RETRY_MODE", raising=False)
    assert policy().botocore_retries() == STANDARD_10


def test_the_policy_is_a_deployment_setting(attempts):
    attempts(4, "adaptive")
    assert policy() == AwsRetryPolicy(mode="adaptive", max_attempts=4)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("AWS_MAX_ATTEMPTS", "ten", "aws_max_attempts = 'ten' is not a whole number from 1 to 50"),
        ("AWS_MAX_ATTEMPTS", "0", "aws_max_attempts = '0' is not a whole number from 1 to 50"),
        ("AWS_RETRY_MODE", "legacy", "aws_retry_mode = 'legacy' is not a retry mode this product uses"),
        ("AWS_STEP_RETRIES", "-1", "aws_step_retries = '-1' is not a whole number from 0 to 10"),
    ],
)
def test_a_bad_setting_is_refused_in_words(monkeypatch, key, value, words):
    monkeypatch.setenv(f"AIRFLOW__AMI_RELEASE__{key}", value)
    with pytest.raises(ConfigError) as err:
        policy()
    assert words in str(err.value) and "Fix:" in str(err.value), err.value


# --- every client gets it --------------------------------------------------------------------


def _retries(client: Any) -> dict[str, Any]:
    return dict(client.meta.config.retries)


def test_our_clients_get_the_policy(aws_sandbox, attempts):
    attempts(7)
    clients = AwsClients()
    want = {"mode": "standard", "total_max_attempts": 7}
    for client in (
        clients.ec2(),
        clients.ec2("eu-west-1"),
        clients.s3(),
        clients.ssm(),
        clients.elbv2(),
        clients.cloudwatch(),
        clients.autoscaling().conn,
        clients.base_hook().conn,
    ):
        assert _retries(client) == want, client.meta.service_model.service_name


def test_the_connections_own_botocore_settings_are_kept(aws_sandbox, monkeypatch, attempts):
    attempts(6)
    conn = json.loads(__import__("os").environ["AIRFLOW_CONN_AWS_DEFAULT"])
    conn["extra"]["config_kwargs"] = {"read_timeout": 17}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_TUNED", json.dumps(conn))
    ec2 = AwsClients(aws_conn_id="aws_tuned").ec2()
    assert ec2.meta.config.read_timeout == 17
    assert _retries(ec2) == {"mode": "standard", "total_max_attempts": 6}
    # a connection (or a task) that sets retries itself keeps them
    conn["extra"]["config_kwargs"] = {"retries": {"mode": "legacy", "max_attempts": 2}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_TUNED", json.dumps(conn))
    # (botocore reads max_attempts 2 as two retries: three attempts in all)
    assert _retries(AwsClients(aws_conn_id="aws_tuned").ec2()) == {"mode": "legacy", "total_max_attempts": 3}


def test_an_operators_provider_hook_gets_the_policy(aws_sandbox, attempts):
    attempts(8)
    op = ReleasePreflightOperator(task_id="preflight", app="demo-web")
    assert _retries(op.hook.conn) == {"mode": "standard", "total_max_attempts": 8}
    assert isinstance(op.hook, AutoScalingHook)


def test_the_refresh_triggers_hook_gets_the_policy(aws_sandbox, attempts):
    attempts(5)
    trigger = InstanceRefreshCompleteTrigger(auto_scaling_group="g", refresh_id="r", region_name="us-east-1")
    assert dict(trigger.hook().config.retries) == {"mode": "standard", "total_max_attempts": 5}


def test_retention_declares_no_retries_of_its_own(attempts):
    from tests.release.conftest import load_dag

    attempts(9)
    for name in ("ami_retention", "ami_retention_manual"):
        task = load_dag(name).get_task("retention")
        assert task.partial_kwargs["botocore_config"] == {"retries": {"mode": "standard", "total_max_attempts": 9}}


def test_with_retry_policy_merges_into_an_explicit_config(aws_sandbox, attempts):
    attempts(3)
    hook = with_retry_policy(AutoScalingHook(config=Config(connect_timeout=4)))
    assert hook.config.connect_timeout == 4 and dict(hook.config.retries)["total_max_attempts"] == 3


def test_terraform_gets_the_policy_in_its_provider_block_and_environment(attempts):
    attempts(12, "adaptive")
    hook = TerraformHook()
    with workdir("terraform") as wd:
        module = hook.prepare(HOOKS / "tf" / "roundtrip", wd, None)  # no custom endpoint: still written
        override = (module / OVERRIDE_FILE).read_text()
        env = hook.environment(wd, {"AWS_REGION": "us-east-1"})
        lines: list[str] = []
        assert hook.init(module, None, env, lines.append).returncode == 0, lines
        assert hook.validate(module, env, lines.append).returncode == 0, lines  # the provider knows both
    assert "max_retries = 12" in override and 'retry_mode = "adaptive"' in override, override
    assert "endpoints" not in override
    assert env["AWS_MAX_ATTEMPTS"] == "12" and env["AWS_RETRY_MODE"] == "adaptive"


def test_packer_gets_api_retries_and_its_waiters_settings(tmp_path, attempts, monkeypatch):
    attempts(6)
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__AWS_POLL_DELAY_SECONDS", "20")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__AWS_WAIT_MINUTES", "90")
    out = tmp_path / "seen.txt"
    result = PackerHook().build(HOOKS / "retry.pkr.hcl", {"out": str(out)}, secrets={})
    assert result.returncode == 0, result.errors
    # API retries after the first try (SDK for Go v1); waiters poll every 20 s for 90 minutes
    assert out.read_text().strip() == "max_retries=5 polls=270 delay=20"


@pytest.mark.parametrize("platform", ["linux", "windows"])
def test_the_packer_templates_pass_the_retries_to_the_amazon_builder(platform):
    template = (REPO / "include" / "packer" / f"{platform}.pkr.hcl").read_text()
    assert "max_retries             = var.aws_max_retries" in template
    assert 'variable "aws_max_retries"' in (REPO / "include" / "packer" / "variables.pkr.hcl").read_text()


# --- the mapping -----------------------------------------------------------------------------


def _client(sb, service: str, region: str = "us-east-1") -> Any:
    from amirelease.retry import note_region

    return note_region(
        boto3.client(
            service,
            region_name=region,
            endpoint_url=sb.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )
    )


def _error(call) -> ClientError:
    with pytest.raises(ClientError) as err:
        call()
    return err.value


def test_throttling_and_server_errors_are_told_in_words(sandbox):
    sandbox.faults.throttle("DescribeVpcs")
    sandbox.faults.throttle("DescribeAutoScalingGroups")
    sandbox.faults.fail("DescribeImages", code="InternalError", status=500)
    sandbox.faults.fail("DescribeSubnets", code="InvalidParameterValue", status=400)
    ec2 = _client(sandbox, "ec2", "eu-west-1")
    vpcs = _error(ec2.describe_vpcs)
    asg = _error(_client(sandbox, "autoscaling").describe_auto_scaling_groups)
    images = _error(ec2.describe_images)
    bad = _error(ec2.describe_subnets)
    assert [pushback_kind(e) for e in (vpcs, asg, images, bad)] == ["throttling", "throttling", "erring", None]

    words = str(pushback_error(vpcs, step="preflight", changed=NOTHING_CHANGED, attempts=10))
    assert words.startswith(
        "AWS is throttling this account: DescribeVpcs in eu-west-1 was refused (RequestLimitExceeded) in step "
        "'preflight', after 10 attempts with backoff. Nothing was changed in AWS by this step."
    ), words
    assert "wait a few minutes" in words and "higher API rate limit" in words and "another heavy caller" in words
    assert "Traceback" not in words and "botocore" not in words
    assert "AWS is erring: DescribeImages in eu-west-1 failed on AWS's side (InternalError)" in str(
        pushback_error(images, step="verify", changed="")
    )
    assert pushback_error(bad, step="preflight", changed="") is None
    assert pushback_kind(ValueError("x")) is None


class _Peek(ReleaseOperatorMixin, AwsBaseOperator[AutoScalingHook]):
    """An operator of ours that only reads the VPCs (a stand-in for any step)."""

    aws_hook_class = AutoScalingHook
    pushback_changed: ClassVar[str] = NOTHING_CHANGED

    def execute(self, context: Any) -> int:
        return len(self.clients.ec2().describe_vpcs()["Vpcs"])


def test_an_operator_fails_in_words_when_aws_outlasts_every_retry(sandbox, attempts):
    attempts(3)
    sandbox.faults.throttle("DescribeVpcs", times=3)  # exactly the policy's attempts
    with pytest.raises(AwsPushbackError) as err:
        _Peek(task_id="peek").execute({})
    e = err.value
    assert (e.operation, e.region, e.kind, e.step) == ("DescribeVpcs", "us-east-1", "throttling", "peek")
    assert e.__cause__ is None and e.__suppress_context__  # no botocore traceback as the story
    assert sandbox.request_counts().get("ec2:DescribeVpcs") == 3, sandbox.request_counts()
    # one throttle fewer than the attempts: the client rides it out
    sandbox.faults.throttle("DescribeVpcs", times=2)
    assert _Peek(task_id="peek").execute({}) >= 1


def test_an_error_that_is_not_aws_pushing_back_is_left_alone(sandbox):
    sandbox.faults.fail("DescribeVpcs", code="UnauthorizedOperation", status=403)
    with pytest.raises(ClientError):
        _Peek(task_id="peek").execute({})
    with pytest.raises(PreflightError):
        _Refuses(task_id="refuses").execute({})


class _Refuses(ReleaseOperatorMixin, AwsBaseOperator[AutoScalingHook]):
    aws_hook_class = AutoScalingHook

    def execute(self, context: Any) -> None:
        raise PreflightError("no", fix="yes")


# --- steps that are safe to repeat -----------------------------------------------------------


def test_steps_safe_to_repeat_retry_with_backoff_only_when_aws_pushes_back(monkeypatch):
    from airflow.sdk.definitions.retry_policy import RetryAction

    from tests.release.conftest import load_dag

    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__AWS_STEP_RETRIES", "4")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__AWS_STEP_RETRY_DELAY_SECONDS", "20")
    throttled = AwsPushbackError("AWS is throttling", operation="DescribeVpcs", kind="throttling")
    for dag_id in ("ami_release", "ami_rollback"):
        dag = load_dag(dag_id)
        safe = ["preflight", "smoke_test", "verify", "record", "wait_for_refresh"]
        safe += [t for t in dag.task_ids if t.startswith("check_infrastructure.")]
        for task_id in safe:
            task = dag.get_task(task_id)
            kw = task.partial_kwargs if hasattr(task, "partial_kwargs") else vars(task)
            assert kw["retries"] == 4 and kw["retry_delay"].total_seconds() == 20, task_id
            assert kw["retry_exponential_backoff"] == 2.0, task_id
            rules = kw["retry_policy"]
            assert rules.evaluate(throttled, 1, 5).action == RetryAction.RETRY, task_id
            for other in (ConfigError("bad input"), PreflightError("missing"), ValueError("bug")):
                assert rules.evaluate(other, 1, 5).action == RetryAction.FAIL, (task_id, other)
        for task_id in [t for t in dag.task_ids if t.startswith(("bake.", "apply_infrastructure."))]:
            assert dag.get_task(task_id).retry_policy is None, task_id  # their own retry: adopt what was made


def test_a_release_aws_stopped_before_the_lock_is_a_failed_attempt_not_a_refusal():
    from amirelease.operators.record import refused

    before = {"preflight", "route_toolchain", "check_infrastructure.packer-chef-linux"}
    throttled = "AwsPushbackError: AWS is throttling this account: DescribeLaunchTemplates in us-east-1 …"
    assert not refused("check_infrastructure.packer-chef-linux", throttled, before)  # recorded
    assert refused("check_infrastructure.packer-chef-linux", "InfrastructureError: plan refused", before)


# Packer and Terraform (the AWS SDK for Go v2) word a call they gave up on like this
GO_THROTTLED = (
    "reading EC2 Security Groups: operation error EC2: DescribeSecurityGroups, exceeded maximum number of "
    "attempts, 10, https response error StatusCode: 503, RequestID: 742b, api error RequestLimitExceeded: "
    "Rate exceeded (main.tf:14)"
)


def test_a_tools_own_retries_running_out_is_told_in_words():
    from amirelease.retry import tool_pushback_error

    words = tool_pushback_error(GO_THROTTLED, tool="Packer", step="bake", region="eu-west-1", changed="X.")
    assert words is not None and words.kind == "throttling" and words.code == "RequestLimitExceeded"
    assert str(words).startswith(
        "AWS is throttling this account: DescribeSecurityGroups (called by Packer) in eu-west-1 was refused "
        "(RequestLimitExceeded) in step 'bake', after 10 attempts with backoff. X."
    )
    erring = GO_THROTTLED.replace("RequestLimitExceeded: Rate exceeded", "Unavailable2: try later")
    assert tool_pushback_error(erring, tool="Terraform", step="s", region="r", changed="").kind == "erring"  # 503
    other = GO_THROTTLED.replace("StatusCode: 503", "StatusCode: 400").replace("RequestLimitExceeded", "InvalidGroup")
    assert tool_pushback_error(other, tool="Terraform", step="s", region="r", changed="") is None
    assert tool_pushback_error("Error: Unsupported argument (main.tf:3)", tool="Terraform", step="s", region="r",
                               changed="") is None  # fmt: skip
