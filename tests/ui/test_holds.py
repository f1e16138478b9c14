"""amirelease.holds.lift_hold against the sandbox (no browser), and the page's pure parts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from amirelease.holds import HoldError, lift_hold
from amirelease.retention.policy import RetentionPolicy
from amirelease.ui import present
from amirelease.ui.collect import read_history
from tests.ui.server import LEDGER_BUCKET
from tests.ui.story import APP, REGION, StoryWriter


@pytest.fixture
def writer(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> StoryWriter:
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__LEDGER_BUCKET", LEDGER_BUCKET)
    return StoryWriter(sandbox)


def held_release(w: StoryWriter) -> Any:
    """1.0.0, replaced by a rollback (re-release of 0.9.0 is not needed: only the hold matters)."""
    old = w.release("1.0.0", w.now - timedelta(days=3), minutes=20, by="alice", notes="first")
    rollback = w.release(
        "1.1.0", w.now - timedelta(hours=1), minutes=15, by="bob", notes="rollback", dag_id="ami_rollback"
    )
    w.hold(rollback, old, "INC-7 errors after 1.0.0", placed=w.now - timedelta(hours=1))
    return old


def tags(w: StoryWriter, ami: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in w.ec2.describe_images(ImageIds=[ami])["Images"][0].get("Tags", [])}


def versions(w: StoryWriter, release_id: str) -> int:
    key = f"releases/{APP}/{release_id}.json"
    return len(w.s3.list_object_versions(Bucket=LEDGER_BUCKET, Prefix=key).get("Versions", []))


def test_lift_removes_the_tags_records_who_and_why_and_is_not_repeated(writer: StoryWriter) -> None:
    w = writer
    old = held_release(w)
    assert "ForensicHold" in tags(w, old.ami)

    done = lift_hold(app=APP, release_id=old.release_id, reason="  INC-7 closed,\n forensics done ", by="carol")
    assert done.untagged == {REGION: old.ami} and not done.already_lifted
    assert "ForensicHold" not in tags(w, old.ami) and "ForensicHoldReason" not in tags(w, old.ami)
    hold = w.ledger.get(APP, old.release_id)["forensic_hold"]  # type: ignore[index]
    assert hold["released_by"] == "carol" and hold["release_reason"] == "INC-7 closed, forensics done"
    assert hold["reason"] == "INC-7 errors after 1.0.0" and hold["amis"] == {REGION: old.ami}
    assert f"Hold lifted on {APP} 1.0.0 ({old.release_id}): {old.ami} ({REGION})" in done.summary()

    written = versions(w, old.release_id)
    again = lift_hold(app=APP, release_id=old.release_id, reason="INC-7 closed again", by="dave")
    assert again.already_lifted and again.released_by == "carol"
    assert versions(w, old.release_id) == written  # nothing written twice
    assert "already lifted" in again.summary()


def test_a_lift_that_stopped_after_the_tags_is_completed(writer: StoryWriter) -> None:
    w = writer
    old = held_release(w)
    w.ec2.delete_tags(Resources=[old.ami], Tags=[{"Key": "ForensicHold"}, {"Key": "ForensicHoldReason"}])
    done = lift_hold(app=APP, release_id=old.release_id, reason="INC-7 closed, forensics done", by="carol")
    assert not done.already_lifted and done.untagged == {}
    assert w.ledger.get(APP, old.release_id)["forensic_hold"]["released_by"] == "carol"  # type: ignore[index]


def test_a_deregistered_ami_is_reported_and_the_ledger_still_updated(writer: StoryWriter) -> None:
    w = writer
    old = held_release(w)
    w.ec2.deregister_image(ImageId=old.ami)
    done = lift_hold(app=APP, release_id=old.release_id, reason="INC-7 closed, AMI already gone", by="carol")
    assert done.gone == {REGION: old.ami} and done.untagged == {}
    assert w.ledger.get(APP, old.release_id)["forensic_hold"]["released_at"]  # type: ignore[index]


def test_refusals_say_why_and_change_nothing(writer: StoryWriter) -> None:
    w = writer
    old = held_release(w)
    other = w.release("0.9.0", w.now - timedelta(days=9), minutes=20, by="alice", notes="never held")
    before = {r: versions(w, r) for r in (old.release_id, other.release_id)}
    for rid, reason, message in (
        ("demo-web-9.9.9-000000000000", "INC-7 closed, forensics done", "there is no ledger record of release"),
        (old.release_id, "   done   ", "a reason of at least 10 characters is needed"),
        (other.release_id, "INC-7 closed, forensics done", "is not under a forensic hold"),
    ):
        with pytest.raises(HoldError, match=message) as err:
            lift_hold(app=APP, release_id=rid, reason=reason, by="carol")
        assert "Fix:" in str(err.value)
    assert "ForensicHold" in tags(w, old.ami)
    assert {r: versions(w, r) for r in before} == before


def test_the_page_reads_only_release_records_from_the_ledger_prefix(writer: StoryWriter) -> None:
    w = writer
    old = held_release(w)
    w.s3.put_object(Bucket=LEDGER_BUCKET, Key=f"releases/{APP}/{old.release_id}/bundle.tar.gz", Body=b"\x1f\x8b")
    w.s3.put_object(Bucket=LEDGER_BUCKET, Key=f"releases/{APP}-other/x.json", Body=b"{}")
    w.s3.put_object(Bucket=LEDGER_BUCKET, Key=f"releases/{APP}/broken.json", Body=b"{not json")
    problems: list[str] = []
    records = read_history(w.s3, LEDGER_BUCKET, APP, problems)
    assert [r["version"] for r in records] == ["1.0.0", "1.1.0"]
    assert problems == [
        f"Ledger record s3://{LEDGER_BUCKET}/releases/{APP}/broken.json is not a JSON object; it is left out"
    ]


# -- pure parts of the page ------------------------------------------------------------------------
POLICY = RetentionPolicy()
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tags", "warning"),
    [
        ({"RetainIndefinitely": "true"}, None),
        ({"RetainIndefinitely": "True"}, "'RetainIndefinitely'='True' was ignored and does not protect this image"),
        ({"retainindefinitely": "true"}, "'retainindefinitely'='true' was ignored and does not protect this image"),
        ({"RetainIndefinitely ": "true"}, "the key must be exactly 'RetainIndefinitely'"),
        ({"RetainIndefinitely": "false"}, None),  # deliberate, as the retention report judges it
        ({"forensichold": "INC-1"}, "does not hold this image"),
        ({"Retain": "true"}, None),
    ],
)
def test_near_miss_keep_forever_tags_are_named(tags: dict[str, str], warning: str | None) -> None:
    found = present.near_miss_warnings(tags, POLICY)
    assert (found == []) if warning is None else (len(found) == 1 and warning in found[0])


def test_retention_from_tags_says_when_an_unused_ami_becomes_eligible() -> None:
    created = NOW - timedelta(days=59, hours=12)
    text, cls, eligible = present._retention_from_tags({}, created, [], False, POLICY, NOW)
    assert cls == "young" and "59 days old" in text and eligible == "eligible on 2026-11-27 if unused then"
    text, cls, _ = present._retention_from_tags({}, NOW - timedelta(days=61), [], False, POLICY, NOW)
    assert cls == "eligible" and "marked at the next retention run" in text
    mark = {"maid_status": "Resource does not meet policy: deregister@2026/12/03"}
    text, cls, _ = present._retention_from_tags(mark, NOW - timedelta(days=61), [], False, POLICY, NOW)
    assert (text, cls) == ("marked: deregister on 2026-12-03", "marked")
    text, cls, _ = present._retention_from_tags(mark, NOW - timedelta(days=61), ["i-1"], True, POLICY, NOW)
    assert cls == "kept" and "forensic hold; in use by 1 instance" in text and "removes the mark" in text


def test_durations_and_times_read_as_a_person_says_them() -> None:
    assert present.duration("2026-11-26T10:00:00Z", "2026-11-26T10:17:05Z") == "17 min 5 s"
    assert present.duration("2026-11-26T10:00:00Z", "2026-11-26T10:17:00Z") == "17 min"
    assert present.duration("2026-11-26T10:00:00Z", "2026-11-26T12:05:00Z") == "2 h 5 min"
    assert present.duration("2026-11-26T10:00:00Z", None) == ""
    assert present.when("2026-11-23T12:00:00Z", NOW) == "2026-11-23 12:00 UTC (3 days ago)"
    assert present.when("2026-11-26T11:15:00+00:00", NOW) == "2026-11-26 11:15 UTC (45 min ago)"
    assert present.run_href("", "ami_release", "manual__2026-11-26T10:00:00+00:00") == (
        "/dags/ami_release/runs/manual__2026-11-26T10%3A00%3A00%2B00%3A00"
    )
