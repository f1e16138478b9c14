"""The check the container test's scenarios end with (tests/release/invariant.py ami_problems), pure."""

from __future__ import annotations

from typing import Any

from tests.release.invariant import ami_problems


def test_one_ami_per_release_record_is_checked_in_words() -> None:
    def image(ami: str, rid: str) -> dict[str, Any]:
        return {"ImageId": ami, "Tags": [{"Key": "ReleaseId", "Value": rid}]}

    records = [
        {"release_id": "r1", "outcome": "succeeded", "amis": {"us-east-1": "ami-1"}},
        {"release_id": "r2", "outcome": "succeeded", "amis": {"us-east-1": "ami-2"}},
        {"release_id": "r3", "outcome": "failed", "amis": {}},
    ]
    older = {"ImageId": "ami-0", "Tags": [{"Key": "App", "Value": "demo-web"}]}  # before the pipeline: no release's
    assert ami_problems([image("ami-1", "r1"), image("ami-2", "r2"), older], records) == []
    assert ami_problems([image("ami-1", "r1"), image("ami-2", "r2"), image("ami-9", "r2")], records) == [
        "release r2 has 2 AMIs: ['ami-2', 'ami-9']",
        "r2's record names ['ami-2'], AWS holds ['ami-2', 'ami-9']",
    ]
    assert ami_problems([image("ami-1", "r1"), image("ami-2", "r2"), image("ami-3", "r3")], records) == [
        "AMI ['ami-3'] of r3, which has no succeeded release record"
    ]
    assert ami_problems([image("ami-1", "r1")], records) == ["r2's AMI ['ami-2'] is gone"]
