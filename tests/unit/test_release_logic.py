"""Pure release logic: catalog validation, run-list stacking, tags, Packer output, checks."""

from __future__ import annotations

import pytest
import yaml

from amirelease import catalog
from amirelease.errors import ConfigError
from amirelease.hooks.packer import PackerHook, PackerResult, hcl_map, hcl_string, parse_artifact_id
from amirelease.operators.record import outcome_of
from amirelease.operators.rollout import refresh_preferences
from amirelease.operators.smoke import check_invocation
from amirelease.operators.verify import evaluate_group
from amirelease.release import build_ami_tags, release_id, tag_value
from tests.conftest import REPO

DEMO = yaml.safe_load((REPO / "include/apps/demo-web.yaml").read_text())


def test_shipped_catalog_validates_including_windows():
    apps = catalog.load_catalog()
    assert set(apps) == {"demo-web", "demo-win"}
    assert apps["demo-win"].run_list[0] == "recipe[windows-base]"
    assert apps["demo-web"].run_list == ["recipe[linux-base]", "recipe[demo-web::default@2.3.1]"]


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("platform", "bsd", "platform"),
        ("toolchain", "Has Spaces", "toolchain"),
        ("cookbooks", [], "cookbooks"),
        ("targets", [], "targets"),
        ("base_image", {"owners": ["not-an-owner"], "name": "x"}, "base_image.owners[0]"),
        ("refresh", {"min_healthy_percentage": 150}, "refresh.min_healthy_percentage"),
        ("smoke_test", {"commands": [{"name": "x"}]}, "smoke_test.commands[0]"),
        ("network", {"vpc": "v"}, "network"),
        ("infrastructure", {"variables": {}}, "infrastructure"),
        ("infrastructure", {"module": "../outside"}, "infrastructure.module"),
        ("infrastructure", {"module": "m", "allow_destroy": ["Not A Type"]}, "infrastructure.allow_destroy[0]"),
        ("surprise", 1, "Additional properties"),
    ],
)
def test_schema_errors_name_the_file_and_field(field, value, needle):
    data = {**DEMO, field: value}
    with pytest.raises(ConfigError) as err:
        catalog.parse_app(data, "include/apps/demo-web.yaml")
    assert "include/apps/demo-web.yaml" in str(err.value) and needle in str(err.value)


def test_rules_beyond_the_schema():
    with pytest.raises(ConfigError, match="does not match the file name"):
        catalog.parse_app(DEMO, "include/apps/other.yaml")
    with pytest.raises(ConfigError, match="platform base cookbook"):
        catalog.parse_app({**DEMO, "cookbooks": ["demo-web", "windows-base"]}, "x/demo-web.yaml")
    with pytest.raises(ConfigError, match="strictly increasing"):
        catalog.parse_app({**DEMO, "refresh": {"checkpoint_percentages": [50, 20]}}, "x/demo-web.yaml")
    with pytest.raises(ConfigError, match="listed twice"):
        catalog.parse_app({**DEMO, "targets": DEMO["targets"] * 2}, "x/demo-web.yaml")
    with pytest.raises(ConfigError, match="not found in"):
        catalog.parse_app({**DEMO, "cookbooks": ["no-such-cookbook"]}, "x/demo-web.yaml", REPO / "include")
    with pytest.raises(ConfigError, match="is not a Terraform module folder"):
        catalog.parse_app({**DEMO, "infrastructure": {"module": "terraform/nope"}}, "x/demo-web.yaml", REPO / "include")
    with pytest.raises(ConfigError, match="which the pipeline sets on every apply"):
        catalog.parse_app(
            {**DEMO, "infrastructure": {**DEMO["infrastructure"], "variables": {"ami_id": "ami-1"}}}, "x/demo-web.yaml"
        )
    with pytest.raises(ConfigError, match="also plain variables"):
        infra = {**DEMO["infrastructure"], "variables": {"api_token": "x"}}
        catalog.parse_app({**DEMO, "infrastructure": infra}, "x/demo-web.yaml")


@pytest.mark.parametrize(
    "infra,needle",
    [
        ({"variables": {"instance_typo": "t3.small"}}, "no variable for instance_typo (from infrastructure.variables)"),
        ({"secrets": [{"path": "demo-web/runtime", "keys": ["api_tokn"]}]}, "api_tokn (from infrastructure.secrets)"),
        ({"outputs": {"launch_template_id": "lt_id"}}, "has no output lt_id"),
    ],
)
def test_the_module_must_declare_what_the_pipeline_hands_it(tmp_path, infra, needle):
    """Terraform ignores a TF_VAR_ with no variable silently: a misspelt secret key would vanish."""
    with pytest.raises(ConfigError, match="terraform/demo-web") as err:
        catalog.parse_app(
            {**DEMO, "infrastructure": {**DEMO["infrastructure"], **infra}}, "x/demo-web.yaml", REPO / "include"
        )
    assert needle in str(err.value)
    module = tmp_path / "terraform" / "json"
    module.mkdir(parents=True)
    (module / "main.tf.json").write_text('{"variable": {"ami_id": {}}, "output": {"x": {"value": 1}}}')
    assert catalog.module_interface(module) == ({"ami_id"}, {"x"})


@pytest.mark.parametrize("good", ["1.0.0", "0.0.1", "10.20.30", "2.0.0-rc.1", "1.2.3-alpha"])
def test_versions_accepted(good):
    assert catalog.validate_version(good) == good


@pytest.mark.parametrize(
    "bad", ["1.0", "v1.0.0", "01.0.0", "1.0.0-", "1.0.0 ", "", None, 1, 1.1, "1.0.0\n", "1\u0663.0.0", "1.0.0\r"]
)
def test_versions_refused(bad):
    with pytest.raises(ConfigError, match="semantic version") as err:
        catalog.validate_version(bad)
    assert "e.g. 1.4.2" in str(err.value)  # the message shows a valid example


@pytest.mark.parametrize("bad", ["1.0.0\n", "1\u0663.0.0", "\u0661.0.0"])
def test_the_form_pattern_refuses_what_python_regexes_let_through(bad):
    """The trigger form and the REST API validate with jsonschema (Python re): `$` matches
    before a trailing newline and `\\d` matches any Unicode digit. The pattern avoids both."""
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, {"type": "string", "pattern": catalog.VERSION_PATTERN})
    jsonschema.validate("1.10.0-rc.1", {"type": "string", "pattern": catalog.VERSION_PATTERN})


def test_cookbook_versions_are_pinned_or_read_from_metadata():
    assert catalog.cookbook_versions(
        ["recipe[linux-base]", "recipe[demo-web::default@2.2.0]"], REPO / "include" / "cookbooks"
    ) == {"linux-base": "1.4.0", "demo-web": "2.2.0"}


def test_release_id_is_stable_per_run_and_unique_across_runs():
    a = release_id("demo-web", "1.0.0", "manual__1")
    assert a == release_id("demo-web", "1.0.0", "manual__1") != release_id("demo-web", "1.0.0", "manual__2")
    assert a.startswith("demo-web-1.0.0-")


def test_tags_hold_the_record_and_only_allowed_characters(release_plan):
    plan = release_plan(re_release_of="old", git_ref="1.10")
    tags = build_ami_tags(plan)
    assert {
        "App",
        "Version",
        "ReleaseId",
        "SourceAmi",
        "Platform",
        "RunList",
        "PipelineRun",
        "BuiltBy",
        "ReReleaseOf",
        "BundleDigest",
    } <= set(tags)
    assert tags["PipelineRun"] == plan.pipeline_run and tags["GitRef"] == "1.10"
    assert tags["BundleDigest"] == plan.bundle.sha256[:32]
    assert tag_value("a,b;c$d" + "x" * 300) == "a_b_c_d" + "x" * 249


def test_hcl_escaping_keeps_secrets_literal():
    assert hcl_string('p${x}%{y}"q') == '"p$${x}%%{y}\\"q"'
    assert hcl_map({"k": "v"}) == '{"k" = "v"}'
    # HCL has no \\b or \\f escape (JSON escaping broke the bake): control characters as \\uNNNN
    assert hcl_string("a\bb\fc\x00\x7f\n") == '"a\\u0008b\\u000cc\\u0000\\u007f\\n"'


def test_packer_machine_readable_parsing():
    hook = PackerHook()
    res, lines = PackerResult(returncode=0), []
    for line in [
        "1795686431,,ui,say,==> amazon-ebs.x: Creating AMI%!(PACKER_COMMA) please wait",
        "1795686431,amazon-ebs.x,artifact,0,id,us-east-1:ami-0a%!(PACKER_COMMA)eu-west-1:ami-0b",
        "1795686431,,ui,error,Build errored: boom\\nsecond line",
        "not machine readable",
    ]:
        hook._handle_line(line, res, lines.append)
    assert res.artifacts == {"us-east-1": "ami-0a", "eu-west-1": "ami-0b"}
    assert "==> amazon-ebs.x: Creating AMI, please wait" in lines and "second line" in lines
    assert res.errors == ["Build errored: boom\nsecond line"]
    assert parse_artifact_id("us-east-1:ami-1") == {"us-east-1": "ami-1"}


def test_smoke_result_checks():
    cmd = catalog.SmokeCommand(name="h", run="curl", expect_exit_code=0, expect_output="^ok$")
    assert check_invocation(cmd, "Success", 0, "ok\n") is None
    assert "exit code 1" in check_invocation(cmd, "Failed", 1, "ok")
    assert "does not match" in check_invocation(cmd, "Success", 0, "nope")
    assert "no exit code" in check_invocation(cmd, "TimedOut", None, "")


def test_verification_rules():
    inst = [{"InstanceId": f"i-{n}", "LifecycleState": "InService", "HealthStatus": "Healthy"} for n in range(3)]
    ok = dict(
        group="g",
        ami="ami-new",
        instances=inst,
        images={f"i-{n}": "ami-new" for n in range(3)},
        target_health={"arn:tg/demo/1": ["healthy"] * 3},
        alarms={"a": "OK"},
        min_healthy_percent=100,
    )
    assert evaluate_group(**ok) == []
    assert (
        "not on ami-new: i-2"
        in evaluate_group(**{**ok, "images": {"i-0": "ami-new", "i-1": "ami-new", "i-2": "ami-old"}})[0]
    )
    assert "alarm a is ALARM" in evaluate_group(**{**ok, "alarms": {"a": "ALARM"}})
    assert (
        "2/3 targets healthy"
        in evaluate_group(**{**ok, "target_health": {"arn:tg/demo/1": ["healthy", "healthy", "unhealthy"]}})[0]
    )
    assert evaluate_group(**{**ok, "instances": []}) == ["g: no InService instance"]


def test_outcome_follows_pipeline_order_and_mapped_keys():
    order = ["preflight", "bake", "wait_for_refresh", "verify"]
    assert outcome_of({"preflight": "success", "wait_for_refresh_0": "success", "verify": "success"}, order) == (
        "succeeded",
        None,
    )
    assert outcome_of({"preflight": "success", "wait_for_refresh_0": "failed", "verify": "upstream_failed"}, order) == (
        "failed",
        "wait_for_refresh",
    )
    assert outcome_of({"mark_rolled_back": "failed", "preflight": "success"}, order) == (  # not in the order
        "failed",
        "mark_rolled_back",
    )


def test_refresh_preferences_map_to_aws_names():
    assert refresh_preferences(
        {"min_healthy_percentage": 90, "checkpoint_percentages": [50, 100], "auto_rollback": True}
    ) == {"MinHealthyPercentage": 90, "CheckpointPercentages": [50, 100], "AutoRollback": True, "SkipMatching": True}
