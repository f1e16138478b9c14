"""Notifications in words (pure): subjects and bodies a person can act on, the catalog's notify:
block (schema-checked), the outcome record hands over, and a notifier that fails is a warning."""

from __future__ import annotations

import logging

import pytest
import yaml

from amirelease import catalog, notify
from amirelease.errors import ReleaseError
from tests.conftest import REPO

DEMO = yaml.safe_load((REPO / "include/apps/demo-web.yaml").read_text())


def test_demo_web_names_its_topic_and_who_acts():
    s = notify.settings_of(DEMO, owner="web-team")
    assert s.ask == "web-team on-call (#web-oncall)"
    assert [(c.kind, c.settings["topic_arn"], c.events) for c in s.channels] == [
        ("sns", "arn:aws:sns:us-east-1:123456789012:demo-web-releases", notify.Events.ALL)
    ]
    # without ask: the owner; per channel events narrow the app's
    doc = {
        "notify": {"events": ["release_failed"], "channels": [{"sns": {"topic_arn": "x"}, "events": ["drift_found"]}]}
    }
    s = notify.settings_of(doc, owner="web-team")
    assert s.ask == "web-team" and s.channels[0].events == ("drift_found",)
    assert notify.settings_of({}, "o").channels == ()


@pytest.mark.parametrize(
    "block,problem",
    [
        ({"channels": [{"sns": {"topic_arn": "demo-web-releases"}}]}, "notify.channels[0].sns.topic_arn"),
        ({"channels": [{"slack": {"webhook": "x"}}]}, "notify.channels[0]"),
        (
            {"events": ["released"], "channels": [{"sns": {"topic_arn": "arn:aws:sns:us-east-1:123456789012:t"}}]},
            "notify.events[0]: 'released' is not one of",
        ),
        ({"channels": []}, "notify.channels"),
    ],
)
def test_a_bad_notify_block_is_refused_in_words(block, problem):
    with pytest.raises(ReleaseError) as err:
        catalog.parse_app({**DEMO, "notify": block}, "demo-web.yaml", REPO / "include")
    assert problem in str(err.value), str(err.value)


def _outcome(**kw):
    base = {
        "app": "demo-web",
        "version": "2.0.0",
        "release_id": "demo-web-2.0.0-abc",
        "kind": "release",
        "outcome": "succeeded",
        "failed_task": None,
        "reason": None,
        "refused": False,
        "amis": {"us-east-1": "ami-0123"},
    }
    return {**base, **kw}


def test_what_record_recorded_becomes_a_message_a_person_can_act_on():
    ok = notify.outcome_notice(_outcome(), "ami_release", "manual__2026-12-05T10:00:00+00:00")
    assert ok.subject() == "Release demo-web 2.0.0: SUCCEEDED"
    body = ok.body()
    for words in (
        "App: demo-web",
        "Version: 2.0.0",
        "Outcome: succeeded: every instance runs the new AMI and is healthy",
        "AMI (us-east-1): ami-0123",
        "/dags/ami_release/runs/manual__2026-12-05T10%3A00%3A00%2B00%3A00",
    ):
        assert words in body, (words, body)
    assert "Why:" not in body

    bad = notify.outcome_notice(
        _outcome(outcome="failed", failed_task="verify", reason="VerificationError: 2 of 3 instances unhealthy"),
        "ami_rollback",
        "r",
    )
    assert bad.subject() == "Release demo-web 2.0.0: FAILED"
    assert "Outcome: failed at 'verify'" in bad.body() and "Why: VerificationError: 2 of 3" in bad.body()
    assert "trigger ami_rollback" in bad.body()

    refused = notify.outcome_notice(
        _outcome(
            outcome="failed", failed_task="check_infrastructure", reason="InfrastructureError: destroy", refused=True
        ),
        "ami_release",
        "r",
    )
    assert "refused before anything reached the fleet" in refused.body()
    rollback = notify.outcome_notice(_outcome(kind="rollback"), "ami_rollback", "r")
    assert rollback.subject() == "Rollback demo-web 2.0.0: SUCCEEDED"


def test_subjects_fit_sns_and_stages_are_named_when_given():
    long = notify.Notice(event=notify.Events.RELEASE_FAILED, app="a" * 150, version="1.0.0")
    assert len(long.subject()) == notify.SUBJECT_MAX
    staged = notify.Notice(
        event=notify.Events.WAITING_FOR_APPROVAL, app="demo-web", version="1.0.0", stage="production"
    )
    assert staged.subject() == "Release demo-web 1.0.0 [production]: waits for approval"
    assert "Stage: production" in staged.body()
    odd = notify.Notice(event=notify.Events.RELEASE_FAILED, app="demo-web", version="1.0.0-é\n")
    assert all(32 <= ord(c) < 127 for c in odd.subject())


def test_a_failing_notifier_is_a_warning_never_an_error(monkeypatch, caplog):
    class Broken:
        def notify(self, context):
            raise RuntimeError("topic not found")

    monkeypatch.setitem(notify.NOTIFIERS, "sns", lambda settings, notice, conn: Broken())
    settings = notify.settings_of(DEMO, "web-team")
    notice = notify.Notice(event=notify.Events.RELEASE_SUCCEEDED, app="demo-web", version="1.0.0")
    with caplog.at_level(logging.WARNING, logger="amirelease.notify"):
        done = notify.send(notice, settings)
    assert done == [
        "not sent to sns arn:aws:sns:us-east-1:123456789012:demo-web-releases: RuntimeError: topic not found"
    ]
    assert any(r.levelno == logging.WARNING and "not sent" in r.getMessage() for r in caplog.records)
    # an event the channel does not want: nothing sent
    only = notify.settings_of({"notify": {"channels": [{"sns": {"topic_arn": "x"}, "events": ["drift_found"]}]}})
    assert notify.send(notice, only) == []
