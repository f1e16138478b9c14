"""Notifications (issue 20, item 5) through Airflow against the sandbox: demo-web's catalog names
an SNS topic; an SQS queue subscribed to it receives what a person would. A succeeded release
says started + SUCCEEDED, a refused one FAILED with the reason in words; each names the app,
version, outcome, who is asked to act and the run's link, and carries no secret. (A missing
topic does not fail a release: tests/drift/test_drift_e2e.py releases with the topic removed.)"""

from __future__ import annotations

import pytest

from tests.notify.sns import Inbox
from tests.release.conftest import load_dag, outcome, task_states

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fleet-b")]


def _no_secret(messages: list[dict], vault_sandbox) -> None:
    secrets = [v for values in vault_sandbox.seeded.values() for v in values.values() if len(v) >= 8]
    assert secrets, "the sandbox seeds secrets"
    for m in messages:
        for secret in secrets:
            assert secret not in m["Message"] and secret not in m["Subject"], m["Subject"]


def test_a_succeeded_and_a_failed_release_are_told_in_words(fleet_env, vault_sandbox):
    sb = fleet_env
    inbox = Inbox(sb)
    release = load_dag("ami_release")

    ok = release.test(run_conf={"app": "demo-web", "version": "8.3.0", "notes": "notifications"})
    assert ok.state == "success", outcome(ok)
    messages = inbox.drain()
    assert [m["Subject"] for m in messages] == ["Release demo-web 8.3.0: started", "Release demo-web 8.3.0: SUCCEEDED"]
    assert [m["MessageAttributes"]["event"]["Value"] for m in messages] == ["release_started", "release_succeeded"]
    started, succeeded = (m["Message"] for m in messages)
    link = f"Run: http://localhost:8080/dags/ami_release/runs/{ok.run_id.replace(':', '%3A').replace('+', '%2B')}"
    for words in ("App: demo-web", "Version: 8.3.0", "Asked to act: web-team on-call (#web-oncall)", link):
        assert words in started and words in succeeded, (words, started, succeeded)
    assert "Outcome: succeeded: every instance runs the new AMI and is healthy" in succeeded, succeeded
    assert "AMI (us-east-1): ami-" in succeeded and "Release id: demo-web-8.3.0-" in succeeded, succeeded
    assert "Why:" not in succeeded

    # a release refused in preflight (the version is released already): FAILED, the reason in words
    refused = release.test(run_conf={"app": "demo-web", "version": "8.3.0", "notes": "again"})
    assert refused.state == "failed" and task_states(refused)["preflight"] == "failed"
    failed = inbox.drain()
    assert [m["Subject"] for m in failed] == ["Release demo-web 8.3.0: FAILED"], failed
    body = failed[0]["Message"]
    for words in (
        "Outcome: failed at 'preflight': refused before anything was built or changed",
        "Why: PreflightError: demo-web 8.3.0 was already released",
        "Asked to act: web-team on-call (#web-oncall) - fix what the reason names and trigger the release again",
        "/dags/ami_release/runs/",
    ):
        assert words in body, (words, body)
    _no_secret(messages + failed, vault_sandbox)
