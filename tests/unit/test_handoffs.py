"""Typed hand-offs between tasks: exact round trips through XCom's JSON, strict on the way in."""

from __future__ import annotations

import json

import pytest

from amirelease.handoffs import (
    BakeResult,
    HandoffError,
    InfrastructureResult,
    PlanSummary,
    RefreshHandle,
    RegionInfrastructure,
    ReleasePlan,
    ResourceChange,
    from_xcom_list,
)


def test_plan_survives_xcom_json_exactly(release_plan):
    plan = release_plan(git_ref="1.10", notes="0", re_release_of=None)
    wire = json.loads(json.dumps(plan.to_xcom()))  # what XCom stores and gives back
    back = ReleasePlan.from_xcom(wire)
    assert back == plan
    assert back.git_ref == "1.10" and isinstance(back.git_ref, str)  # strings stay strings
    assert back.app_spec.targets[0].auto_scaling_group == "demo-web-asg"
    assert back.network("us-east-1").subnet_ids == ("subnet-a", "subnet-b")
    with pytest.raises(HandoffError, match="the plan has no network for region eu-west-1"):
        back.network("eu-west-1")


def test_a_renamed_or_missing_key_is_a_clear_error(release_plan):
    wire = release_plan().to_xcom()
    wire["app_name"] = wire.pop("app")
    with pytest.raises(HandoffError, match=r"ReleasePlan .* missing \['app'\] / unknown \['app_name'\]") as err:
        ReleasePlan.from_xcom(wire)
    assert "clear" in str(err.value)
    with pytest.raises(HandoffError, match="expected a mapping"):
        BakeResult.from_xcom("ami-123")


def test_nested_records_round_trip():
    summary = PlanSummary(
        add=0,
        change=2,
        destroy=0,
        changes=(ResourceChange("aws_launch_template.web", "aws_launch_template", "update"),),
    )
    infra = InfrastructureResult(
        regions=(
            RegionInfrastructure(
                region="us-east-1",
                state_key="k",
                plan=summary,
                launch_template_id="lt-1",
                launch_template_version=3,
                auto_scaling_groups=("demo-web-asg",),
            ),
        )
    )
    assert InfrastructureResult.from_xcom(json.loads(json.dumps(infra.to_xcom()))) == infra
    assert infra.region("us-east-1").launch_template_version == 3
    with pytest.raises(HandoffError, match="no Terraform apply for region eu-west-1") as err:
        infra.region("eu-west-1")
    assert "clear apply_infrastructure" in str(err.value)
    handles = [RefreshHandle("us-east-1", "g", "r-1", "lt-1", 3, "ami-1", 60).to_xcom()]
    assert from_xcom_list(RefreshHandle, handles)[0].launch_template_version == 3
    assert from_xcom_list(RefreshHandle, None) == []


def _all_handoffs():
    from amirelease import handoffs

    return [c for c in vars(handoffs).values() if isinstance(c, type) and issubclass(c, handoffs.Handoff)]


def test_every_handoff_is_decoded_by_its_field_types_with_no_override():
    """One generic decoder (issue 22 item 4): no record carries its own from_xcom, every field's
    type resolves, and a nested record, a tuple of records and an optional record come back typed."""
    from amirelease.handoffs import BundleRef, Handoff, RollbackTarget, SmokeCommandResult, SmokeResult, _hints

    kinds = _all_handoffs()
    assert len(kinds) >= 15
    for kind in kinds:
        assert "from_xcom" not in vars(kind) or kind is Handoff, f"{kind.__name__} overrides from_xcom"
        assert _hints(kind) or kind is Handoff, kind
    smoke = SmokeResult("ami-1", "i-1", True, (SmokeCommandResult("up", 0, None, "ok"),), "plain run_instances")
    back = SmokeResult.from_xcom(json.loads(json.dumps(smoke.to_xcom())))
    assert back == smoke and isinstance(back.commands, tuple) and isinstance(back.commands[0], SmokeCommandResult)
    target = RollbackTarget("a", "1.0.0", "a-1", BundleRef("k", "s"), None, None, None)
    assert RollbackTarget.from_xcom(json.loads(json.dumps(target.to_xcom()))).bundle == BundleRef("k", "s")


def test_a_handoff_a_trigger_ended_its_task_with_is_read_from_its_json_string():
    """Airflow 3.3 stores the XComs of TaskSuccessEvent(xcoms=...) JSON-encoded once more than a
    task's own: the refresh wait's summary reaches verify as a string of JSON."""
    handle = RefreshHandle(
        region="us-east-1",
        auto_scaling_group="demo-web-asg",
        refresh_id="r-1",
        launch_template_id="lt-1",
        launch_template_version=3,
        ami_id="ami-1",
        timeout_minutes=60,
    ).ended({"Status": "Successful", "PercentageComplete": 100})
    assert RefreshHandle.from_xcom(json.dumps(handle.to_xcom())) == handle
    assert from_xcom_list(RefreshHandle, [json.dumps(handle.to_xcom())]) == [handle]
    with pytest.raises(HandoffError, match="expected a mapping"):
        RefreshHandle.from_xcom('{"not json')
    with pytest.raises(HandoffError, match=r"RefreshHandle .* missing"):
        RefreshHandle.from_xcom('{"region": "us-east-1"}')
