"""ReleasePreflightOperator alone against the sandbox, in seconds (no DAG run, no bake): what it
plans, what it stores, and that it changes nothing in EC2 or Auto Scaling. The release tests in
tests/release/ run it end to end; these are for changing preflight with a quick loop."""

from __future__ import annotations

import hashlib

import pytest

from amirelease.errors import ConfigError
from amirelease.handoffs import ReleasePlan
from amirelease.operators.preflight import ReleasePreflightOperator
from tests.release.conftest import clients, mutations

BUCKET = "ami-release-ledger-123456789012"


def _preflight(**params):
    op = ReleasePreflightOperator(task_id="preflight", region_name="us-east-1", **params)
    return op.execute({"run_id": "manual__2026-12-05T11:00:00+00:00"})


def test_it_plans_a_release_from_the_catalog_and_stores_only_its_bundle(release_env):
    sb = release_env
    plan = ReleasePlan.from_xcom(_preflight(app="demo-web", version="7.7.1", notes="quick loop"))
    assert (plan.app, plan.version, plan.platform, plan.toolchain) == (
        "demo-web",
        "7.7.1",
        "linux",
        "packer-chef-linux",
    )
    assert plan.run_list[0] == "recipe[linux-base]" and plan.run_list[1].startswith("recipe[demo-web::default")
    assert plan.regions == ("us-east-1",) and plan.home_region == "us-east-1"
    assert plan.network("us-east-1").vpc_id == sb.account["vpc_id"]
    assert plan.source_ami == sb.account["vendor_images"]["amazon-linux"]
    assert plan.release_id.startswith("demo-web-7.7.1-") and plan.ami_name.startswith("demo-web-7.7.1")
    # the bundle every later task reads is in the ledger bucket, with the digest the plan names
    _, _, s3 = clients(sb)
    body = s3.get_object(Bucket=BUCKET, Key=plan.bundle.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == plan.bundle.sha256
    # nothing else: no instance, group, template, security group, key pair or image
    assert {k for k in mutations(sb) if not k.startswith("s3:")} == set()


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"app": "demo-web", "version": "not a version"}, "version"),
        ({"app": "no-such-app", "version": "1.0.0"}, "no-such-app"),
        ({"app": "demo-web", "version": "1.0.1", "git_ref": "v1; rm -rf /"}, "git ref"),
    ],
)
def test_bad_input_is_refused_in_words_before_any_call(release_env, params, words):
    with pytest.raises(ConfigError, match=words) as err:
        _preflight(**params)
    assert "Fix:" in str(err.value) or err.value.fix
    assert mutations(release_env) == {}
