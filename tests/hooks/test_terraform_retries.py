"""Terraform's AWS provider really uses the deployment's retry policy (issue 28): the generated
provider override's max_retries, against the sandbox's throttling. Measured here: the provider
counts max_retries as attempts in all (the first try included), as aws_max_attempts does."""

from __future__ import annotations

from pathlib import Path

import pytest

from amirelease.errors import AwsPushbackError
from amirelease.hooks.terraform import TerraformHook
from amirelease.hooks.tool import workdir
from amirelease.operators.infrastructure import fail_on_errors

MODULE = Path(__file__).parent / "tf" / "security_groups"
APP_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


@pytest.mark.parametrize(("attempts", "throttles", "succeeds"), [(3, 3, False), (3, 2, True)])
def test_terraforms_provider_makes_the_policys_attempts(
    sandbox, monkeypatch, release_plan, attempts, throttles, succeeds
):
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__AWS_MAX_ATTEMPTS", str(attempts))
    sandbox.faults.throttle("ec2:DescribeSecurityGroups", times=throttles)
    hook, lines = TerraformHook(), []
    with workdir("terraform") as wd:
        module = hook.prepare(MODULE, wd, sandbox.endpoint_url)
        env = hook.environment(wd, APP_AWS)
        assert hook.init(module, None, env, lines.append).returncode == 0, lines[-5:]
        var_file = wd / "v.json"
        var_file.write_text("{}")
        plan = hook.plan(module, var_file, env, lines.append, out=wd / "p.tfplan", lock=False)
    assert (plan.returncode == 0) is succeeds, lines[-5:]
    assert sandbox.request_counts()["ec2:DescribeSecurityGroups"] == attempts
    if not succeeds:  # Terraform's own retries ran out: the task says so in words, as for our own calls
        with pytest.raises(AwsPushbackError) as words:
            fail_on_errors(plan, "plan", release_plan(), "us-east-1")
        assert str(words.value).startswith(
            "AWS is throttling this account: DescribeSecurityGroups (called by Terraform) in us-east-1 was refused "
            f"(RequestLimitExceeded) in step 'terraform plan', after {attempts} attempts with backoff."
        ), words.value
        assert "Nothing was changed by this Terraform command." in str(words.value)
