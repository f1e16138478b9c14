"""operators/roll_forward.py, pure: when a failed release starts ami_rollback on its own, and with what."""

from __future__ import annotations

import pytest

from amirelease.operators.roll_forward import decision, rollback_conf, rollback_run_id

OPTED_IN = {"rollback": {"automatic": True}}


def _outcome(**kw):
    out = {
        "app": "demo-web",
        "version": "1.4.0",
        "release_id": "demo-web-1.4.0-abc123",
        "kind": "release",
        "outcome": "failed",
        "failed_task": "verify",
        "reason": "VerificationError: 2 of 3 instances unhealthy\nmore",
    }
    return {**out, **kw}


@pytest.mark.parametrize(
    ("outcome", "document", "words"),
    [
        (_outcome(outcome="succeeded", failed_task=None), OPTED_IN, "the release succeeded"),
        (_outcome(kind="rollback"), OPTED_IN, "never starts another"),
        (_outcome(failed_task="smoke_test"), OPTED_IN, "before it reached the fleet"),
        (_outcome(failed_task="apply_infrastructure"), OPTED_IN, "before it reached the fleet"),
        (_outcome(), {}, "does not opt in"),
        (_outcome(), {"rollback": {"automatic": False}}, "does not opt in"),
        (None, OPTED_IN, "no outcome"),
    ],
)
def test_no_rollback_unless_a_release_failed_on_the_fleet_of_an_app_that_opts_in(outcome, document, words):
    assert words in (decision(outcome, document) or "")


@pytest.mark.parametrize("failed_task", ["verify", "wait_for_refresh", "wait_for_refresh[0]"])
def test_a_failed_refresh_or_verification_of_an_opted_in_app_rolls_forward(failed_task):
    assert decision(_outcome(failed_task=failed_task), OPTED_IN) is None


def test_the_rollback_replaces_the_failed_release_with_an_empty_target_and_says_why():
    conf = rollback_conf(_outcome(), "ami_release", "demo-web_1.4.0__2026-12-05T08:00:00Z")
    assert conf["app"] == "demo-web" and conf["target"] is None and conf["replaces"] == "demo-web-1.4.0-abc123"
    assert conf["forensic_hold"] is True and conf["confirm_rolled_back"] is False
    assert conf["reason"] == (
        "automatic: demo-web 1.4.0 (demo-web-1.4.0-abc123) failed at 'verify' in ami_release run "
        "demo-web_1.4.0__2026-12-05T08:00:00Z: VerificationError: 2 of 3 instances unhealthy"
    )
    assert rollback_run_id(_outcome()) == "rollback_demo-web__auto_demo-web-1.4.0-abc123"
