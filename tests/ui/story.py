"""A release history of demo-web in the sandbox, made with the product's own code.

Ledger records come from ``build_record`` (the record task's function), AMI tags from
``build_ami_tags``, launch-template versions and instance refreshes are real sandbox calls,
holds are placed by ``MarkRolledBackOperator`` (the rollback's task), marks by a real
``AmiRetentionOperator`` run. Only the times are set to tell a story (a
100-day history cannot be run in a test), and two things other branches write are written
here per their contract: the ``rolled_back`` field (main) and the retention report (retention).

    1.0.0  100 days ago  release, succeeded
    1.1.0   80 days ago  release, succeeded; rolled back 79 days ago (INC-1001), still held
    1.0.0   79 days ago  re-release of 1.0.0 (the rollback of 1.1.0)
    1.2.0   20 days ago  release, succeeded
    1.3.0    2 days ago  release, failed at smoke_test
    1.3.1    1 day ago   release, succeeded; rolled back today (INC-4711), held
    1.2.0   today        re-release of 1.2.0 (the rollback of 1.3.1): live on demo-web-asg
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import yaml

from amirelease import catalog
from amirelease.constants import TAG_STATUS
from amirelease.handoffs import (
    BakeResult,
    BundleRef,
    RefreshHandle,
    RegionNetwork,
    ReleasePlan,
    SmokeResult,
    VerifySummary,
)
from amirelease.ledger import Ledger
from amirelease.operators.record import build_record
from amirelease.phases import phase, phases_of
from amirelease.release import ami_name, build_ami_tags, release_id
from tests.conftest import REPO
from tests.ui.server import LEDGER_BUCKET

APP = "demo-web"
REGION = "us-east-1"
GROUP = "demo-web-asg"


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Release:
    version: str
    run_id: str
    dag_id: str
    release_id: str
    ami: str
    record: dict[str, Any]


@dataclass
class Story:
    now: datetime
    writer: StoryWriter
    releases: dict[str, Release] = field(default_factory=dict)  # label -> release
    seeded: dict[str, str] = field(default_factory=dict)  # seeded aged image name -> AMI id
    marks: dict[str, str] = field(default_factory=dict)  # AMI -> maid_status after the retention run

    def __getitem__(self, label: str) -> Release:
        return self.releases[label]


class StoryWriter:
    def __init__(self, sb: Any) -> None:
        self.sb = sb
        self.ec2 = sb.client("ec2")
        self.asg = sb.client("autoscaling")
        self.s3 = sb.client("s3")
        self.ledger = Ledger(self.s3, LEDGER_BUCKET)
        self.app = catalog.get_app(APP)
        self.entry = yaml.safe_load((REPO / "include" / "apps" / f"{APP}.yaml").read_text())
        if "launch_template" not in sb.account:  # the fleet (the apps' Terraform is not what this tests)
            sb.account.update(sb.create_fleet(APP))
        self.lt_id = sb.account["launch_template"]["id"]
        self.vendor = sb.account["vendor_images"]["amazon-linux"]
        self.now = datetime.now(UTC).replace(microsecond=0)

    def release(
        self,
        version: str,
        started: datetime,
        *,
        minutes: float,
        by: str,
        notes: str,
        dag_id: str = "ami_release",
        failed_task: str | None = None,
        failure: str | None = None,
        re_release_of: str | None = None,
        write_record: bool = True,
        source: dict[str, Any] | None = None,
    ) -> Release:
        run_id = f"manual__{started.isoformat()}"
        rid = release_id(APP, version, run_id)
        plan = ReleasePlan(
            app=APP,
            version=version,
            release_id=rid,
            ami_name=ami_name(APP, version, rid),
            cookbook_versions=catalog.cookbook_versions(self.app.run_list, REPO / "include" / "cookbooks"),
            packer_template_digest="3f9c2a1b7d4e5f60",
            source_ami=self.vendor,
            source_ami_name="al2023-ami-2026.11-x86_64",
            networks=(
                RegionNetwork(
                    region=REGION,
                    vpc_id=self.sb.account["vpc_id"],
                    vpc_cidr="10.20.0.0/16",
                    subnet_ids=tuple(self.sb.account["subnet_ids"]),
                ),
            ),
            account_id=self.sb.account_id,
            pipeline_run=run_id,
            bundle=BundleRef(key=f"releases/{APP}/{rid}/bundle.tar.gz", sha256="5" * 64),
            catalog_entry=self.entry,
            notes=notes,
            triggered_by=by,
            re_release_of=re_release_of,
            source=source,
        )
        tags = build_ami_tags(plan)
        tags[TAG_STATUS] = "failed" if failed_task else "released"
        ami = self.sb.create_image(ami_name(APP, version, rid), creation_date=started + timedelta(minutes=6), tags=tags)
        rollout: list[RefreshHandle] = []
        if failed_task is None:
            version_number = self.ec2.create_launch_template_version(
                LaunchTemplateId=self.lt_id,
                SourceVersion="$Default",
                VersionDescription=rid,
                LaunchTemplateData={"ImageId": ami},
            )["LaunchTemplateVersion"]["VersionNumber"]
            rollout = [
                RefreshHandle(
                    region=REGION,
                    auto_scaling_group=GROUP,
                    refresh_id=f"0b1c2d3e-{version_number:04d}-4f00-9a00-{rid[-12:]}",
                    launch_template_id=self.lt_id,
                    launch_template_version=int(version_number),
                    ami_id=ami,
                    timeout_minutes=60,
                )
            ]
        record = build_record(
            dag_id=dag_id,
            run_id=run_id,
            plan=plan,
            bake=BakeResult(release_id=rid, ami_id=ami, amis={REGION: ami}, source_ami=self.vendor, reused=False),
            check=None,
            infrastructure=None,
            smoke=SmokeResult(
                ami_id=ami,
                instance_id="i-0smoke",
                passed=failed_task != "smoke_test",
                commands=(),
                launched_from="launch template demo-web",
            ),
            rollout=rollout,
            verify=VerifySummary(groups=(), problems=(), warnings=(), verified=True) if failed_task is None else None,
            outcome="failed" if failed_task else "succeeded",
            failed_task=failed_task,
            reason=failure,
            started_at=iso(started),
            phases=self._phases(started, minutes, rollout, ran_refresh=failed_task is None),
        )
        record["finished_at"] = iso(started + timedelta(minutes=minutes))
        if write_record:  # a release still rolling out has no record yet: the record task runs last
            self.ledger.put(record)
        return Release(version, run_id, dag_id, rid, ami, record)

    @staticmethod
    def _phases(
        started: datetime, minutes: float, rollout: list[RefreshHandle], *, ran_refresh: bool
    ) -> list[dict[str, Any]]:
        """What the steps report (phases.py): a 5-minute bake, a 2-minute smoke test, and the refresh
        (AWS's times) from minute 9 to a minute before the end."""
        at = lambda m: started + timedelta(minutes=m)
        reported = {
            "bake": phase(at(1), at(6), {"packer": 280.0}),
            "smoke_test": phase(at(6), at(8)),
        }
        refreshes = [
            {**r.to_xcom(), "started_at": iso(at(9)), "ended_at": iso(at(minutes - 1))} for r in rollout if ran_refresh
        ]
        return phases_of(["bake", "smoke_test", "wait_for_refresh"], reported, refreshes)

    def hold(self, rollback: Release, held: Release, reason: str, placed: datetime) -> None:
        """The rollback's mark_rolled_back task (the real operator) on the release it replaced."""
        from amirelease.handoffs import RollbackTarget
        from amirelease.operators.rollback import MarkRolledBackOperator

        target = RollbackTarget(
            app=APP,
            version=held.version,
            target_release_id="-",
            bundle=BundleRef(key="-", sha256="-"),
            git_ref=None,
            current_release_id=held.release_id,
            current_version=held.version,
            current_amis={REGION: held.ami},
            reason=reason,
        )
        MarkRolledBackOperator(  # its marking step (the story is written after the fact: no re-check of the fleet)
            task_id="mark_rolled_back",
            region_name=REGION,
            resolved=target.to_xcom(),
            hold=True,
        ).mark(target, {"run_id": rollback.run_id, "ti": SimpleNamespace(dag_id=rollback.dag_id)})  # type: ignore[arg-type]
        hold = self.ledger.get(APP, held.release_id)["forensic_hold"]  # type: ignore[index]
        self.ledger.update(APP, held.release_id, forensic_hold={**hold, "placed_at": iso(placed)})

    def rolled_back(self, rollback: Release, replaced: Release, reason: str, at: datetime) -> None:
        """The record field main writes when a rollback replaces a release (contract: rolled_back)."""
        self.ledger.update(
            APP,
            replaced.release_id,
            rolled_back={
                "at": iso(at),
                "by_run": rollback.run_id,
                "by_dag": rollback.dag_id,
                "by_release_id": rollback.release_id,
                "reason": reason,
            },
        )

    def refresh_to(self, release: Release, *, checkpoints: list[int] | None = None, wait: bool = True) -> str:
        """A real instance refresh of the group to the release's launch-template version."""
        lt = release.record["launch_template_versions"][0]
        prefs: dict[str, Any] = {"MinHealthyPercentage": 66, "InstanceWarmup": 0, "SkipMatching": True}
        if checkpoints:
            prefs.update(CheckpointPercentages=checkpoints, CheckpointDelay=30)
        refresh_id = self.asg.start_instance_refresh(
            AutoScalingGroupName=GROUP,
            Strategy="Rolling",
            DesiredConfiguration={
                "LaunchTemplate": {
                    "LaunchTemplateId": lt["launch_template_id"],
                    "Version": str(lt["launch_template_version"]),
                }
            },
            Preferences=prefs,
        )["InstanceRefreshId"]
        if wait:
            self.wait_refresh(refresh_id, lambda r: r["Status"] == "Successful")
            self.ec2.modify_launch_template(
                LaunchTemplateId=lt["launch_template_id"], DefaultVersion=str(lt["launch_template_version"])
            )
        return str(refresh_id)

    def wait_refresh(self, refresh_id: str, done: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.asg.describe_instance_refreshes(AutoScalingGroupName=GROUP, InstanceRefreshIds=[refresh_id])[
                "InstanceRefreshes"
            ][0]
            if done(r):
                return dict(r)
            if r["Status"] in ("Failed", "Cancelled"):
                raise AssertionError(f"refresh {refresh_id} ended {r['Status']}: {r.get('StatusReason')}")
            time.sleep(0.2)
        raise AssertionError(f"refresh {refresh_id} not done in {timeout}s")


GIT_SOURCE = {
    "repository": "https://git.example.com/web/demo-web.git",
    "path": "deploy/ami",
    "ref": "v1.3.1",
    "ref_kind": "tag",
    "commit": "3f9c2ab41d0e7c5a9b8e6f1d2c3b4a5968778695",
}


def write(sb: Any) -> Story:
    w = StoryWriter(sb)
    now = w.now
    story = Story(now=now, writer=w)
    d = lambda days, hours=0: now - timedelta(days=days, hours=hours)

    r = story.releases
    r["1.0.0"] = w.release("1.0.0", d(100), minutes=21, by="alice", notes="first release of demo-web")
    r["1.1.0"] = w.release("1.1.0", d(80), minutes=19, by="bob", notes="nginx 1.26, new health endpoint")
    r["rb1"] = w.release(
        "1.0.0",
        d(79),
        minutes=23,
        by="carol",
        notes="rollback: INC-1001 memory leak in 1.1.0",
        dag_id="ami_rollback",
        re_release_of=r["1.0.0"].release_id,
    )
    w.hold(r["rb1"], r["1.1.0"], "INC-1001 memory leak in 1.1.0", placed=d(79))
    w.rolled_back(r["rb1"], r["1.1.0"], "INC-1001 memory leak in 1.1.0", at=d(79))

    r["1.2.0"] = w.release("1.2.0", d(20), minutes=18, by="bob", notes="TLS 1.3 only")
    r["1.3.0"] = w.release(
        "1.3.0",
        d(2),
        minutes=9,
        by="dave",
        notes="upgrade OpenSSL",
        failed_task="smoke_test",
        failure="smoke test of the new AMI failed: health endpoint answers: output '503' does not match /ok/",
    )
    r["1.3.1"] = w.release(
        "1.3.1",
        d(1),
        minutes=20,
        by="dave",
        notes="upgrade OpenSSL, fixed config",
        source=GIT_SOURCE,
    )
    r["rb2"] = w.release(
        "1.2.0",
        d(0, hours=1),
        minutes=17,
        by="erin",
        notes="rollback: INC-4711 5xx after 1.3.1",
        dag_id="ami_rollback",
        re_release_of=r["1.2.0"].release_id,
    )
    w.hold(r["rb2"], r["1.3.1"], "INC-4711 5xx after 1.3.1", placed=d(0, hours=1))
    w.rolled_back(r["rb2"], r["1.3.1"], "INC-4711 5xx after 1.3.1", at=d(0, hours=1))
    w.refresh_to(r["rb2"])

    # The retention DAG's task, for real: marks what is old and unused.
    from amirelease.operators.retention import AmiRetentionOperator

    AmiRetentionOperator(task_id="retention", region_name=REGION).execute(
        {"data_interval_end": now, "logical_date": now}  # type: ignore[arg-type]
    )
    for image in w.ec2.describe_images(Owners=["self"])["Images"]:
        tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
        if "maid_status" in tags:
            story.marks[image["ImageId"]] = tags["maid_status"]
    story.seeded = {i["name"]: i["image_id"] for i in sb.account["aged_images"]}
    write_report(w, story)
    return story


def write_report(w: StoryWriter, story: Story) -> None:
    """The latest retention report of us-east-1, in the contract's shape (the retention branch
    writes it for real). Rows for a few AMIs only: the page falls back to tags for the rest."""
    now = story.now
    due = next(iter(story.marks.values())).rsplit("@", 1)[1].replace("/", "-")
    seeded = story.seeded
    rows = [
        {
            "image_id": story["1.0.0"].ami,
            "name": "demo-web-1.0.0",
            "created": iso(now - timedelta(days=100)),
            "age_days": 100.0,
            "tags": {"App": APP, "Version": "1.0.0", "ReleaseId": story["1.0.0"].release_id},
            "action": "mark",
            "reason": "unused for 100 days",
            "protections": [],
            "mark_due": due,
            "deregister_on": due,
            "eligible_on": None,
            "hold_reason": None,
            "warnings": [],
        },
        {
            "image_id": seeded["demo-web-0.9.1"],
            "name": "demo-web-0.9.1",
            "created": iso(now - timedelta(days=90)),
            "age_days": 90.0,
            "tags": {"App": APP, "Version": "0.9.1"},
            "action": "mark",
            "reason": "unused for 90 days",
            "protections": [],
            "mark_due": due,
            "deregister_on": due,
            "eligible_on": None,
            "hold_reason": None,
            "warnings": ["tag retainindefinitely=true was ignored: the key is RetainIndefinitely (case-sensitive)"],
        },
        {
            "image_id": seeded["demo-web-0.9.6"],
            "name": "demo-web-0.9.6",
            "created": iso(now - timedelta(days=59)),
            "age_days": 59.0,
            "tags": {"App": APP, "Version": "0.9.6"},
            "action": "keep",
            "reason": "too young (59.0 days)",
            "protections": ["too young (59.0 days)"],
            "mark_due": None,
            "deregister_on": None,
            "eligible_on": iso(now + timedelta(days=1)),
            "hold_reason": None,
            "warnings": [],
        },
        {
            "image_id": story["1.3.1"].ami,
            "name": "demo-web-1.3.1",
            "created": iso(now - timedelta(days=1)),
            "age_days": 1.0,
            "tags": {"App": APP, "Version": "1.3.1", "ReleaseId": story["1.3.1"].release_id},
            "action": "keep",
            "reason": "protected",
            "protections": ["held: ForensicHold", "too young (1.0 days)"],
            "mark_due": None,
            "deregister_on": None,
            "eligible_on": iso(now + timedelta(days=59)),
            "hold_reason": "INC-4711 5xx after 1.3.1",
            "warnings": [],
        },
    ]
    report = {
        "region": REGION,
        "run_id": f"scheduled__{now.isoformat()}",
        "now": iso(now),
        "wall_clock": iso(now),
        "dry_run": False,
        "stopped": None,
        "counts": {"mark": 2, "keep": 2},
        "deferred": [],
        "rows": rows,
    }
    w.s3.put_object(
        Bucket=LEDGER_BUCKET, Key=f"retention/reports/{REGION}/latest.json", Body=json.dumps(report).encode()
    )
