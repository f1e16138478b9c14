"""Pure release logic: catalog validation, run-list stacking, tags, Packer output, checks."""

from __future__ import annotations

import pytest
import yaml

from amirelease import catalog
from amirelease.errors import ConfigError, PreflightError
from amirelease.hooks.packer import PackerHook, PackerResult, hcl_map, hcl_string, parse_artifact_id
from amirelease.ledger import pick_rollback_target
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
        catalog.parse_app({**DEMO, "cookbooks": ["no-such-cookbook"]}, "x/demo-web.yaml", REPO / "include/cookbooks")


@pytest.mark.parametrize("good", ["1.0.0", "0.0.1", "10.20.30", "2.0.0-rc.1", "1.2.3-alpha"])
def test_versions_accepted(good):
    assert catalog.validate_version(good) == good


@pytest.mark.parametrize("bad", ["1.0", "v1.0.0", "01.0.0", "1.0.0-", "1.0.0 ", "", None, 1])
def test_versions_refused(bad):
    with pytest.raises(ConfigError, match="semantic version"):
        catalog.validate_version(bad)


def test_recorded_run_list_is_checked_and_versions_are_read():
    app = catalog.get_app("demo-web")
    assert (
        catalog.validate_run_list(app, ["recipe[linux-base]", "recipe[demo-web::default@2.2.0]"])[1]
        == "recipe[demo-web::default@2.2.0]"
    )
    with pytest.raises(ConfigError, match="must start with linux-base"):
        catalog.validate_run_list(app, ["recipe[demo-web]"])
    assert catalog.cookbook_versions(["recipe[linux-base]", "recipe[demo-web::default@2.2.0]"]) == {
        "linux-base": "1.4.0",
        "demo-web": "2.2.0",
    }


def test_release_id_is_stable_per_run_and_unique_across_runs():
    a = release_id("demo-web", "1.0.0", "manual__1")
    assert a == release_id("demo-web", "1.0.0", "manual__1") != release_id("demo-web", "1.0.0", "manual__2")
    assert a.startswith("demo-web-1.0.0-")


def test_tags_hold_the_record_and_only_allowed_characters():
    tags = build_ami_tags(
        app="demo-web",
        version="1.0.0",
        rid="r",
        source_ami="ami-1",
        platform="linux",
        run_list=["recipe[linux-base]", "recipe[x]"],
        pipeline_run="manual__2026-01-01T00:00:00+00:00",
        template_digest="abc",
        re_release_of="old",
    )
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
    } <= set(tags)
    assert tags["PipelineRun"] == "manual__2026-01-01T00:00:00+00:00"
    assert tag_value("a,b;c$d" + "x" * 300) == "a_b_c_d" + "x" * 249


def test_hcl_escaping_keeps_secrets_literal():
    assert hcl_string('p${x}%{y}"q') == '"p$${x}%%{y}\\"q"'
    assert hcl_map({"k": "v"}) == '{"k" = "v"}'


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
    assert outcome_of({"resolve_target": "failed", "preflight": "upstream_failed"}, order) == (
        "failed",
        "resolve_target",
    )


def test_refresh_preferences_map_to_aws_names():
    assert refresh_preferences(
        {"min_healthy_percentage": 90, "checkpoint_percentages": [50, 100], "auto_rollback": True}
    ) == {"MinHealthyPercentage": 90, "CheckpointPercentages": [50, 100], "AutoRollback": True, "SkipMatching": True}


def test_rollback_target_selection():
    def rec(rid, version, outcome="succeeded", t="2026-01-0"):
        return {
            "release_id": rid,
            "version": version,
            "outcome": outcome,
            "finished_at": t + rid[-1],
            "app": "a",
            "run_list": ["recipe[linux-base]"],
            "platform": "linux",
        }

    h = [rec("r1", "1.0.0"), rec("r2", "1.1.0", "failed"), rec("r3", "1.2.0"), rec("r4", "1.3.0")]
    assert pick_rollback_target(h, "r4")["release_id"] == "r3"
    assert pick_rollback_target(h, "r4", "1.0.0")["release_id"] == "r1"
    with pytest.raises(PreflightError, match="no successful release '1.1.0'"):
        pick_rollback_target(h, "r4", "1.1.0")
    with pytest.raises(PreflightError, match="no earlier successful release"):
        pick_rollback_target([rec("r1", "1.0.0")], "r1")
    with pytest.raises(PreflightError, match="lacks inputs"):
        pick_rollback_target([{**rec("r1", "1.0.0"), "run_list": None}, rec("r2", "2.0.0")], "r2")
    with pytest.raises(PreflightError, match="is the one running now"):
        pick_rollback_target(h, "r4", "r4")
