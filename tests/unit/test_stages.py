"""Stages (issue 20 items 1-2), pure: the catalog's stages, a stage's plan, the promotion's
decision, the gate's words and answers, the next stage's run."""

from __future__ import annotations

import copy

import pytest
import yaml

from amirelease import catalog
from amirelease.errors import ConfigError
from amirelease.handoffs import BundleRef, ReleasePlan
from amirelease.operators.infrastructure import state_key, variables_for
from amirelease.operators.promote import (
    gate_answer,
    gate_text,
    next_stage_conf,
    next_stage_decision,
    plan_text,
    promotion_refusal,
)
from amirelease.operators.roll_forward import decision
from tests.conftest import REPO

DEMO = yaml.safe_load((REPO / "include/apps/demo-web.yaml").read_text())
PROD = {"region": "us-east-1", "auto_scaling_group": "demo-web-asg", "launch_template": "demo-web"}
STAGING = {"region": "us-east-1", "auto_scaling_group": "demo-web-staging-asg", "launch_template": "demo-web-staging"}


def staged(**changes):
    doc = copy.deepcopy(DEMO)
    doc.pop("targets")
    doc["stages"] = [
        {"name": "staging", "targets": [STAGING], "variables": {"name_suffix": "-staging", "desired_capacity": 1}},
        {"name": "production", "targets": [PROD], "state": "", "approval": {"timeout_minutes": 30}},
    ]
    doc.update(changes)
    return doc


def test_an_app_without_stages_has_one_implicit_stage_and_keeps_its_state_key():
    app = catalog.parse_app(DEMO, "demo-web.yaml", REPO / "include")
    assert not app.staged and [s.name for s in app.path] == [""]
    assert app.stage("").targets == app.targets and app.next_stage("") is None
    assert state_key("demo-web", "us-east-1", app.stage("").state_folder) == (
        "terraform/demo-web/us-east-1/terraform.tfstate"
    )


def test_stages_in_order_with_their_own_targets_state_and_variables():
    app = catalog.parse_app(staged(), "demo-web.yaml", REPO / "include")
    assert [s.name for s in app.path] == ["staging", "production"]
    assert app.stage("").name == "staging" and app.next_stage("staging").name == "production"
    assert app.next_stage("production") is None and app.previous_stage("production").name == "staging"
    assert app.targets == (catalog.Target(**STAGING), catalog.Target(**PROD))  # every stage's groups
    assert app.home_region == "us-east-1"
    assert state_key("demo-web", "us-east-1", app.stage("staging").state_folder) == (
        "terraform/demo-web/staging/us-east-1/terraform.tfstate"
    )
    # production keeps the state demo-web had before it had stages ("state: ''")
    assert app.stage("production").state_folder == "" and app.stage("production").approval_minutes == 30
    prod = app.stage("production")
    assert (prod.approvers, prod.soak_minutes, prod.automatic) == ((), 0, False)  # a person (any release manager)
    gated = copy.deepcopy(staged())
    gated["stages"][1]["approval"] = {"approvers": ["ann", "bob"], "soak_minutes": 30}
    prod = catalog.parse_app(gated, "demo-web.yaml", REPO / "include").stage("production")
    assert (prod.approvers, prod.soak_minutes, prod.automatic) == (("ann", "bob"), 30, False)
    with pytest.raises(ConfigError, match="has no stage 'qa'"):
        app.stage("qa")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"targets": [PROD]}, "either targets: (one stage) or stages:"),
        ({"stages": [{"name": "a", "targets": [PROD]}, {"name": "a", "targets": [STAGING]}]}, "a listed twice"),
        ({"stages": [{"name": "a", "targets": [PROD]}, {"name": "b", "targets": [PROD]}]}, "listed twice"),
        ({"stages": [{"name": "a", "targets": [PROD], "variables": {"ami_id": "x"}}]}, "sets ami_id"),
        ({"stages": [{"name": "a", "targets": [PROD], "variables": {"api_token": "x"}}]}, "sets api_token"),
        (
            {
                "stages": [
                    {"name": "a", "targets": [PROD], "state": ""},
                    {"name": "b", "targets": [STAGING], "state": ""},
                ]
            },
            "share the Terraform state folder",
        ),
        ({"stages": [{"name": "Prod", "targets": [PROD]}]}, "stages"),
        (
            {"stages": [{"name": "a", "targets": [PROD], "approval": {"timeout_minutes": 5}}]},
            "the first stage has no gate",
        ),
        (
            {
                "stages": [
                    {"name": "a", "targets": [STAGING]},
                    {"name": "b", "targets": [PROD], "approval": {"automatic": True}},
                ]
            },
            "automatic needs soak_minutes",
        ),
        (
            {
                "stages": [
                    {"name": "a", "targets": [STAGING]},
                    {
                        "name": "b",
                        "targets": [PROD],
                        "approval": {"automatic": True, "soak_minutes": 5, "approvers": ["ann"]},
                    },
                ]
            },
            "names approvers and is automatic",
        ),
        (
            {
                "stages": [
                    {"name": "a", "targets": [STAGING]},
                    {"name": "b", "targets": [PROD], "approval": {"approvers": ["42"]}},
                ]
            },
            "approvers",
        ),
        (
            {
                "verify": {},
                "stages": [
                    {"name": "a", "targets": [STAGING]},
                    {"name": "b", "targets": [PROD], "approval": {"soak_minutes": 5}},
                ],
            },
            "watches a's alarms, and a has none",
        ),
    ],
)
def test_bad_stages_are_refused_with_words(change, words):
    with pytest.raises(ConfigError) as err:
        catalog.parse_app(staged(**change), "demo-web.yaml")
    assert words in str(err.value)


def test_a_stage_variable_the_module_does_not_declare_is_refused():
    doc = staged()
    doc["stages"][0]["variables"] = {"no_such_variable": 1}
    with pytest.raises(ConfigError, match=r"no_such_variable \(from stages\[staging\].variables\)"):
        catalog.parse_app(doc, "demo-web.yaml", REPO / "include")


def _plan(stage: str = "", doc=None) -> ReleasePlan:
    return ReleasePlan(
        app="demo-web",
        version="1.4.0",
        release_id="demo-web-1.4.0-abc",
        ami_name="n",
        cookbook_versions={},
        packer_template_digest="d",
        source_ami="ami-base",
        source_ami_name="base",
        networks=(),
        account_id="123456789012",
        pipeline_run="r",
        bundle=BundleRef(key="k", sha256="0" * 64),
        catalog_entry=doc or staged(),
        stage=stage,
    )


def test_a_stage_plan_targets_its_own_groups_and_variables_but_bakes_for_every_stage():
    first, prod = _plan(""), _plan("production")
    assert first.targets == (catalog.Target(**STAGING),) and prod.targets == (catalog.Target(**PROD),)
    assert first.image_regions == prod.image_regions == ("us-east-1",)
    from amirelease.handoffs import RegionNetwork
    from amirelease.hooks.vault import Secrets

    net = (RegionNetwork(region="us-east-1", vpc_id="vpc-1", vpc_cidr="10.0.0.0/16", subnet_ids=("s-1",)),)
    stag = ReleasePlan.from_xcom({**first.to_xcom(), "networks": [n.to_xcom() for n in net]})
    values = variables_for(stag, "us-east-1", "ami-new", Secrets(values={}, versions={}))
    assert values["name_suffix"] == "-staging" and values["desired_capacity"] == 1 and values["ami_id"] == "ami-new"
    prod_values = variables_for(
        ReleasePlan.from_xcom({**prod.to_xcom(), "networks": [n.to_xcom() for n in net]}),
        "us-east-1",
        "ami-new",
        Secrets(values={}, versions={}),
    )
    assert "name_suffix" not in prod_values and prod_values["desired_capacity"] == 3


def _rec(rid: str, **stages) -> dict:
    return {
        "release_id": rid,
        "version": rid.split("-")[2],
        "amis": {"us-east-1": "ami-" + rid[-3:]},
        "stages": {k: {"outcome": v[0], "finished_at": v[1], "run_id": f"run-{rid}-{k}"} for k, v in stages.items()},
    }


def test_a_release_is_promoted_only_when_verified_before_and_still_the_newest_there():
    a = _rec("demo-web-1.0.0-aaa", staging=("succeeded", "2026-12-01T10:00:00Z"))
    b = _rec("demo-web-1.1.0-bbb", staging=("succeeded", "2026-12-02T10:00:00Z"))
    failed = _rec("demo-web-1.2.0-ccc", staging=("failed", "2026-12-03T10:00:00Z"))
    history = [a, b, failed]
    assert promotion_refusal(history, b, "production", "staging") is None
    assert "newer release, 1.1.0 (demo-web-1.1.0-bbb), was verified in staging" in promotion_refusal(
        history, a, "production", "staging"
    )
    assert "was not verified in staging (failed)" in promotion_refusal(history, failed, "production", "staging")
    assert "no record" in promotion_refusal(history, None, "production", "staging")
    done = _rec("demo-web-1.1.0-bbb", staging=("succeeded", "2026-12-02T10:00:00Z"), production=("succeeded", "x"))
    assert "already promoted to production" in promotion_refusal([a, done], done, "production", "staging")
    rolled = {**b, "rolled_back": {"reason": "INC-9"}}
    assert "was rolled back (INC-9)" in promotion_refusal([a, rolled], rolled, "production", "staging")
    rejected = {**b, "stages": {**b["stages"], "production": {"outcome": "rejected"}}}
    assert promotion_refusal([a, rejected], rejected, "production", "staging") is None  # may be asked again


def test_the_gate_says_what_was_verified_where_and_shows_the_next_stage_plan():
    rec = _rec("demo-web-1.1.0-bbb", staging=("succeeded", "2026-12-02T10:00:00Z"))
    rec["stages"]["staging"]["verification"] = {
        "groups": [
            {
                "region": "us-east-1",
                "auto_scaling_group": "demo-web-staging-asg",
                "ami_id": "ami-bbb",
                "in_service": 1,
                "on_new_ami": 1,
                "target_groups_healthy": True,
                "alarms": {"demo-web-staging-5xx": "OK"},
            }
        ],
        "warnings": [],
    }
    subject, body = gate_text(rec, "staging", "production", "demo-web")
    assert subject == "Promote demo-web 1.1.0 to production?"
    assert "demo-web-staging-asg (us-east-1): 1/1 in service on ami-bbb, targets healthy" in body
    assert "demo-web-staging-5xx OK" in body and "us-east-1: ami-bbb" in body
    check = {
        "terraform_version": "1.9.8",
        "regions": [
            {
                "region": "us-east-1",
                "state_key": "terraform/demo-web/us-east-1/terraform.tfstate",
                "plan": {
                    "add": 0,
                    "change": 1,
                    "destroy": 0,
                    "changes": [{"address": "aws_launch_template.web", "resource_type": "x", "action": "update"}],
                },
            }
        ],
    }
    text = plan_text(check, "production")
    assert "0 to add, 1 to change, 0 to destroy" in text and "update aws_launch_template.web" in text


@pytest.mark.parametrize(
    ("raw", "answer"),
    [
        ({"chosen_options": ["Approve"], "responded_by_user": {"id": "1", "name": "rm"}}, ("approved", "rm", "")),
        (
            {"chosen_options": ["Reject"], "responded_by_user": {"id": "1", "name": "rm"}, "params_input": {}},
            ("rejected", "rm", ""),
        ),
        ({"chosen_options": ["Reject"], "responded_by_user": None}, ("timed out", None, "no answer")),
        ({"chosen_options": ["Approve"], "emergency": True}, ("approved", "emergency (no gate)", "")),
        (
            {"chosen_options": ["Reject"], "soak_failed": True, "params_input": {"reason": "alarm x went into ALARM"}},
            ("soak failed", "soak (automatic check)", "alarm x went into ALARM"),
        ),
        (
            {"chosen_options": ["Approve"], "automatic": True, "params_input": {"reason": "quiet"}},
            ("approved", "soak (automatic check)", "quiet"),
        ),
        (None, ("unanswered", None, "")),
    ],
)
def test_what_the_gate_answered(raw, answer):
    got = gate_answer(raw)
    assert got[:2] == answer[:2] and answer[2] in got[2]


def test_the_next_stage_of_a_verified_stage_and_none_after_the_last():
    assert next_stage_conf(_plan(""), False) == {
        "app": "demo-web",
        "release_id": "demo-web-1.4.0-abc",
        "stage": "production",
        "emergency": False,
    }
    assert next_stage_conf(_plan("production"), True) is None
    assert next_stage_conf(_plan("", DEMO), False) is None  # no stages
    # an automatic rollback goes up to the stage that failed and no further
    assert next_stage_conf(_plan(""), True, until="staging") is None
    assert next_stage_conf(_plan(""), True, until="production")["until_stage"] == "production"


def test_whether_next_stage_has_anything_to_do_record_skips_it_when_not():
    """next_stage_decision: what record asks before it skips next_stage, and what next_stage asks itself."""
    ok = {"outcome": "succeeded"}
    assert next_stage_decision(_plan(""), ok, {}) == (None, next_stage_conf(_plan(""), False))
    assert next_stage_decision(_plan(""), ok, {"emergency": True})[1]["emergency"] is True
    assert next_stage_decision(None, ok, {}) == ("preflight produced no plan", None)
    assert next_stage_decision(_plan("", DEMO), ok, {}) == ("demo-web has no stages", None)
    why, conf = next_stage_decision(_plan(""), {"outcome": "failed"}, {})
    assert conf is None and why == "demo-web 1.4.0 did not succeed in staging (failed)"
    assert "no outcome recorded" in str(next_stage_decision(_plan(""), None, {})[0])
    assert next_stage_decision(_plan("production"), ok, {})[0] == "production is demo-web's last stage"
    why, _ = next_stage_decision(_plan(""), ok, {"until_stage": "staging"})
    assert why == "staging is the stage this run was asked to go up to (staging)"


def test_an_automatic_rollback_of_a_failed_stage_goes_up_to_that_stage_without_waiting():
    from amirelease.operators.roll_forward import rollback_conf

    failed = {"app": "demo-web", "release_id": "r", "version": "1.2.0", "failed_task": "wait_for_refresh"}
    conf = rollback_conf({**failed, "stage": "production"}, "ami_promote", "run")
    assert conf["until_stage"] == "production" and conf["emergency"] is True and conf["replaces"] == "r"
    assert "until_stage" not in rollback_conf({**failed, "stage": ""}, "ami_release", "run")  # no stages


def test_a_rejected_promotion_or_a_stage_of_a_rollback_never_starts_a_rollback():
    out = {"app": "demo-web", "release_id": "r", "kind": "promotion", "failed_task": None}
    assert "at its gate (rejected)" in decision({**out, "outcome": "rejected"}, {"rollback": {"automatic": True}})
    failed = {**out, "outcome": "failed", "failed_task": "verify", "re_release_of": "old"}
    assert "never starts another" in decision(failed, {"rollback": {"automatic": True}})
    assert decision({**failed, "re_release_of": None}, {"rollback": {"automatic": True}}) is None
