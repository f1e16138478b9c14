"""A version is released once (issue 26, item 1), through Airflow against the sandbox: a second
release of a released version is refused before anything is built, in words naming the release
and the two ways on; a rebuild on purpose is accepted and recorded as a rebuild; a second rebuild
while the first one runs is refused; and the lock re-checks what preflight decided."""

from __future__ import annotations

import pytest

from amirelease.errors import PreflightError
from amirelease.handoffs import ReleasePlan
from amirelease.ledger import Ledger, utcnow
from amirelease.operators.lock import ReleaseLockSensor
from tests.release.conftest import (
    ReleaseHoldingTheLock,
    clients,
    failure,
    ledger_records,
    load_dag,
    mutations,
    run_images,
    task_states,
)
from tests.release.invariant import ledger_tells_the_truth
from tests.release.test_rollback_e2e import _tags

# the tests that release on a shared demo-web fleet run in two groups ("fleet", "fleet-b": each on one
# worker, with its own fleet built once; tests/conftest.py fleet_env)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fleet-b")]

BUCKET = "ami-release-ledger-123456789012"
REASON = "CVE-2026-1234: bake 1.0.0 on today's base image"


def _newest_succeeded(sb, version: str) -> dict:
    done = [r for r in ledger_records(sb) if r["version"] == version and r["outcome"] == "succeeded"]
    return max(done, key=lambda r: r["finished_at"])


def test_a_released_version_is_refused_and_a_rebuild_is_recorded_as_one(fleet_env, tmp_path, release_plan, capsys):
    sb = fleet_env
    since = utcnow()
    _, _, s3 = clients(sb)
    existing = _newest_succeeded(sb, "1.0.0")  # the fleet's first release
    before = len(ledger_records(sb))
    release = load_dag("ami_release")

    # 1. the same version again: refused in preflight, in words, nothing built or changed
    again = release.test(run_conf={"app": "demo-web", "version": "1.0.0", "notes": "again"})
    states = task_states(again)
    assert again.state == "failed" and states["preflight"] == "failed", states
    words = failure(again, "preflight")
    assert f"demo-web 1.0.0 was already released: {existing['kind']} {existing['release_id']}" in words, words
    assert existing["finished_at"] in words and next(iter(existing["amis"].values())) in words, words
    assert "ami_rollback with target 1.0.0" in words and "'rebuild' ticked" in words, words
    # a rebuild without a reason is refused too
    short = release.test(run_conf={"app": "demo-web", "version": "1.0.0", "rebuild": True, "rebuild_reason": "cve"})
    assert short.state == "failed" and "needs a reason of at least 10" in failure(short, "preflight")
    assert mutations(sb) == {} and len(ledger_records(sb)) == before

    # 2. a rebuild on purpose (run A, in its own process) is accepted; the same rebuild pressed
    #    again while A runs (B) is refused in preflight, naming A
    conf = {"app": "demo-web", "version": "1.0.0", "rebuild": True, "rebuild_reason": REASON}
    with ReleaseHoldingTheLock(s3, tmp_path, conf, what="rebuild A") as a:
        b = release.test(run_conf=conf)
        a.wait()
    assert a.result and a.result[1] == "success", a.output[-3000:]
    a_run = a.result[0]
    states = task_states(b)
    assert b.state == "failed" and states["preflight"] == "failed", states
    assert f"is being released right now by run ami_release/{a_run}" in failure(b, "preflight")
    assert run_images(sb, b.run_id) == []

    records = {r["pipeline_run"]: r for r in ledger_records(sb)}
    assert b.run_id not in records and len(records) == before + 1
    rebuilt = records[a_run]
    assert rebuilt["kind"] == "rebuild" and rebuilt["rebuild_of"] == existing["release_id"], rebuilt
    assert rebuilt["rebuild_reason"] == REASON and rebuilt["re_release_of"] is None
    [ami] = run_images(sb, a_run)
    assert _tags(ami)["RebuildOf"] == existing["release_id"] and "ReReleaseOf" not in _tags(ami)

    assert ledger_tells_the_truth(sb, since) == []  # one rebuild live, nothing marked

    # 3. the history says so
    from amirelease import cli

    capsys.readouterr()
    assert cli.main(["history", "demo-web"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if rebuilt["release_id"] in x)
    assert f"rebuild of {existing['release_id']}" in line and "CVE-2026-1234" in line, line

    # 4. under the lock: a plain release of 1.0.0 that passed preflight before the rebuild was
    #    recorded is refused once it holds the lock, naming the rebuild
    late = release_plan(version="1.0.0", release_id="demo-web-1.0.0-late")
    sensor = ReleaseLockSensor(task_id="release_lock", app="demo-web")
    with pytest.raises(PreflightError) as refused:
        sensor.recheck(Ledger(s3, BUCKET), late)
    assert f"rebuild {rebuilt['release_id']}" in str(refused.value), refused.value
    assert "while this run waited for the release lock" in str(refused.value)
    # a second rebuild that passed preflight before A was recorded (it meant to rebuild 1.0.0's
    # first release) is refused the same way; a rebuild of what is newest goes on, as does a new version
    with pytest.raises(PreflightError, match=f"while this rebuild of {existing['release_id']} waited"):
        sensor.recheck(
            Ledger(s3, BUCKET), ReleasePlan.from_xcom({**late.to_xcom(), "rebuild_of": existing["release_id"]})
        )
    sensor.recheck(Ledger(s3, BUCKET), ReleasePlan.from_xcom({**late.to_xcom(), "rebuild_of": rebuilt["release_id"]}))
    sensor.recheck(Ledger(s3, BUCKET), release_plan(version="9.9.9", release_id="demo-web-9.9.9-x"))
