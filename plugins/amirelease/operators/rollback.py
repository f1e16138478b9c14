"""Rollback by roll-forward: pick the release to bake again, record the one it replaces as
rolled back, and hold that one's AMI for forensics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from amirelease.constants import (
    HOLD_REASON_TAG,
    HOLD_TAG,
    MIN_REASON,
    ROLLBACK_TARGET_KEY,
    TAG_RELEASE_ID,
    TAG_VERSION,
    TaskIds,
)
from amirelease.errors import PreflightError
from amirelease.hooks.autoscaling import AutoScalingHook
from amirelease.operators.base import ReleaseOperatorMixin, tag_list, tags_dict
from amirelease.operators.preflight import flag, text_param

if TYPE_CHECKING:
    from airflow.sdk import Context

    from amirelease import catalog
    from amirelease.aws import AwsClients
    from amirelease.handoffs import RollbackTarget
    from amirelease.ledger import Ledger, Record


def live_release(clients: AwsClients, targets: tuple[catalog.Target, ...], log: Any) -> dict[str, Any]:
    """What the app's groups run now: the AMI(s) in service and the release they belong to
    (``release_id``/``version`` None when no in-service AMI carries a ReleaseId)."""
    amis: dict[str, str] = {}
    found: dict[str, str] = {}
    for t in targets:
        group = clients.autoscaling(t.region).describe_group(t.auto_scaling_group)
        if group is None:
            log.info("Group %s does not exist in %s: nothing runs there", t.auto_scaling_group, t.region)
            continue
        ids = [i["InstanceId"] for i in group.get("Instances", []) if i.get("LifecycleState") == "InService"]
        if not ids:
            continue
        for image in clients.ec2_release(t.region).images_of_instances(ids):
            amis[t.region] = image["ImageId"]
            tags = tags_dict(image.get("Tags"))
            if tags.get(TAG_RELEASE_ID):
                found[tags[TAG_RELEASE_ID]] = tags.get(TAG_VERSION, "")
    rid = max(found, default=None)
    return {"amis": amis, "release_id": rid, "version": found.get(rid) if rid else None}


def went_live_words(asked: RollbackTarget, live: dict[str, Any], history: list[Record]) -> str | None:
    """None when what runs now is what the rollback was asked against; else what changed, in words (pure)."""
    if live.get("release_id") == asked.current_release_id and (
        asked.current_release_id or live.get("amis") == asked.current_amis
    ):
        return None
    from amirelease.ledger import record_of

    record = record_of(history, live.get("release_id"))
    now = (
        f"{live.get('version')} ({live['release_id']})"
        if live.get("release_id")
        else "an AMI this pipeline did not build"
    )
    when = f" at {record.get('finished_at')}" if record and record.get("finished_at") else ""
    was = (
        f"{asked.current_version} ({asked.current_release_id})"
        if asked.current_release_id
        else f"what ran then ({', '.join(asked.current_amis.values()) or 'nothing'})"
    )
    again = f"roll back {live.get('version')}" if live.get("release_id") else "roll back what runs now"
    return (
        f"{now} went live{when}, after you asked to roll back {was}; nothing was marked or held by this "
        f"rollback and nothing it built is kept. Trigger ami_rollback again to {again}"
    )


def resolve_target(
    clients: AwsClients, ledger: Ledger, app_name: str, ask: Mapping[str, Any], log: Any
) -> RollbackTarget:
    """
    A rollback's first decision, made by its ``preflight`` before the lock: what the app's groups
    run now and the release to bake again. It only proposes (reads, changes nothing);
    ``mark_rolled_back`` re-checks what runs now under the lock.

    Default target: the newest release that succeeded, is not the one running now, was never
    rolled back and is not a re-release of a rolled-back release. An explicit target (version
    or release id) that was rolled back needs ``confirm_rolled_back``. Refuses, before any
    change, when there is nothing to roll back to or the target has no release bundle.

    ``ask`` is what the trigger form gave, rendered: ``target`` (empty, a version or a release
    id), ``reason`` (at least 10 characters; kept in the ledger), ``confirm_rolled_back`` (allow
    an explicit target that was rolled back) and ``replaces`` (set by the automatic roll-forward).
    """
    from amirelease import catalog
    from amirelease.handoffs import BundleRef, RollbackTarget
    from amirelease.ledger import choice_words, fleet_targets, pick_rollback_target

    app = catalog.known_app(app_name)
    reason = text_param("reason", ask.get("reason"), example="INC-123: 5xx since 1.2.0").strip()
    wanted = text_param("target", ask.get("target"), example="1.1.0").strip() or None
    if len(reason) < MIN_REASON:
        raise PreflightError(
            f"a rollback needs a reason of at least {MIN_REASON} characters",
            fix="say what is wrong with the current release (e.g. 'INC-123: 5xx since 1.2.0'); it goes in the ledger",
        )
    history = ledger.history(app.name)
    current = live_release(clients, fleet_targets(app, history), log)
    current_rid = current.get("release_id")
    log.info(
        "%s now runs %s (release %s)",
        app.name,
        current.get("amis") or "nothing",
        current_rid or "unknown: not built by this pipeline",
    )
    failed = _replaces(app.name, history, text_param("replaces", ask.get("replaces"), example=_REPLACES_EXAMPLE), log)
    target = pick_rollback_target(
        history,
        failed["release_id"] if failed else current_rid,
        wanted,
        allow_rolled_back=flag("confirm_rolled_back", ask.get("confirm_rolled_back", False)),
    )
    choice = choice_words(history, wanted, target)
    if choice:
        log.warning("Target %s: %s", wanted, choice)
    log.info(
        "Rolling %s forward to a re-release of %s (%s, finished %s, bundle %s…)",
        app.name,
        target["version"],
        target["release_id"],
        target.get("finished_at"),
        target["bundle"]["sha256"][:16],
    )
    return RollbackTarget(
        app=app.name,
        version=str(target["version"]),
        target_release_id=str(target["release_id"]),
        bundle=BundleRef(key=target["bundle"]["key"], sha256=target["bundle"]["sha256"]),
        git_ref=target.get("git_ref") or None,
        current_release_id=current_rid,
        current_version=current.get("version"),
        current_amis=current.get("amis", {}),
        reason=reason,
        replaces_release_id=failed["release_id"] if failed else None,
        replaces_version=str(failed["version"]) if failed else None,
        replaces_amis=dict(failed.get("amis") or {}) if failed else {},
    )


_REPLACES_EXAMPLE = "demo-web-1.2.0-1b77d45f6b4e"


def _replaces(app: str, history: list[Record], wanted: str, log: Any) -> Record | None:
    """``replaces`` (set by the automatic roll-forward): the failed release this rollback replaces.
    It must be the app's newest release: if another one started since, that one decides."""
    wanted = wanted.strip()
    if not wanted:
        return None
    from amirelease.ledger import record_of

    record = record_of(history, wanted)
    if record is None:
        raise PreflightError(
            f"'replaces' names {wanted}, which is not a release of {app} in the ledger",
            fix="leave 'replaces' empty (the automatic roll-forward sets it), or give a release id of this app",
        )
    newest = max(history, key=lambda r: str(r.get("started_at") or ""))
    if newest.get("release_id") != wanted:
        raise PreflightError(
            f"{app} {newest.get('version')} ({newest.get('release_id')}) started after {wanted}, which this "
            "rollback was asked to replace; nothing was marked, held or built",
            fix="look at what runs now (Releases page) and trigger ami_rollback by hand if it is still needed",
        )
    log.info(
        "Replacing the failed release %s %s (%s): it is marked rolled back and its AMI held, whatever the "
        "fleet runs now",
        app,
        record.get("version"),
        wanted,
    )
    return record


class MarkRolledBackOperator(ReleaseOperatorMixin, AwsBaseOperator[AutoScalingHook]):
    """
    Runs right after ``release_lock``: first re-checks, under the app's lock, that what the
    groups run is still what the rollback's ``preflight`` saw when it resolved the target
    (DESIGN.md, "decide under the lock"); if a release went live in between, it refuses, before
    anything is marked or held (the bake beside it stops, and record removes what it built).
    Then: record the release being replaced as rolled back (by this rollback, when, why) in its
    ledger record, so no later rollback picks it by default; and, unless turned off, place a
    forensic hold on its AMI(s) (tags ForensicHold/ForensicHoldReason, which the retention DAG
    honours) and note the hold in the same record.

    :param resolved: the RollbackTarget; by default the one ``preflight`` resolved (its XCom
        ``rollback_target``).
    :param hold: place the forensic hold (true/false).
    """

    aws_hook_class = AutoScalingHook
    template_fields: Sequence[str] = aws_template_fields("resolved", "hold")
    ui_color = "#fde8e8"
    iam_actions = (
        "autoscaling:DescribeAutoScalingGroups",
        "ec2:CreateTags",
        "ec2:DescribeImages",
        "ec2:DescribeInstances",
        "s3:GetObject",
        "s3:ListBucket",
        "s3:PutObject",
    )

    def __init__(self, *, resolved: Any = None, hold: bool | str = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resolved = resolved
        self.hold = hold

    def execute(self, context: Context) -> dict[str, Any] | None:
        from amirelease.handoffs import RollbackTarget

        resolved = self.resolved
        if resolved is None:
            resolved = context["ti"].xcom_pull(task_ids=TaskIds.PREFLIGHT, key=ROLLBACK_TARGET_KEY)
        r = RollbackTarget.from_xcom(resolved)
        self.recheck(r)
        return self.mark(r, context)

    def mark(self, r: RollbackTarget, context: Context) -> dict[str, Any] | None:
        """Mark the release this rollback replaces (``r.replaced``: what the fleet ran when it was
        asked, or the failed release an automatic roll-forward names) rolled back by this run and
        hold its AMI(s) (after the re-check)."""
        from amirelease.ledger import Ledger, ledger_bucket, rolled_back_entry, utcnow
        from amirelease.release import release_id, tag_value

        ti = context["ti"]
        now = utcnow()
        replaced_id, replaced_version, replaced_amis = r.replaced
        hold = None
        if flag("forensic_hold", self.hold):
            hold = {
                "placed_at": now,
                "by_run": context["run_id"],
                "dag_id": ti.dag_id,
                "reason": r.reason,
                "amis": replaced_amis,
            }
            tags = {HOLD_TAG: tag_value(f"rollback {now}"), HOLD_REASON_TAG: tag_value(r.reason)}
            for region, ami in replaced_amis.items():
                self.clients.ec2(region).create_tags(Resources=[ami], Tags=tag_list(tags))
                self.log.info(
                    "Forensic hold placed on %s (%s): retention keeps it until the hold is lifted", ami, region
                )
        else:
            self.log.info("No forensic hold requested: %s stays subject to the retention policy", replaced_amis)
        if not replaced_id:
            self.log.warning("What runs now was not built by this pipeline: no ledger record to mark as rolled back")
            return hold
        entry = rolled_back_entry(
            at=now,
            by_run=context["run_id"],
            by_dag=ti.dag_id,
            by_release_id=release_id(r.app, r.version, context["run_id"]),
            reason=r.reason,
        )
        changes: dict[str, Any] = {"rolled_back": entry}
        if hold:
            changes["forensic_hold"] = hold
        if Ledger(self.clients.s3(), ledger_bucket()).update(r.app, replaced_id, **changes) is None:
            self.log.warning("No ledger record for %s; the hold is on the AMI tags only", replaced_id)
        else:
            self.log.info(
                "Ledger: %s %s is recorded as rolled back by this run (re-release of %s %s): %s",
                r.app,
                replaced_version or "",
                r.version,
                r.target_release_id,
                r.reason,
            )
        return hold

    def recheck(self, asked: RollbackTarget) -> None:
        """Under the lock: what runs now must be what preflight saw, or the rollback stops."""
        from amirelease import catalog
        from amirelease.ledger import Ledger, fleet_targets, ledger_bucket

        ledger = Ledger(self.clients.s3(), ledger_bucket())
        history = ledger.history(asked.app)
        live = live_release(self.clients, fleet_targets(catalog.known_app(asked.app), history), self.log)
        changed = went_live_words(asked, live, history)
        if changed:
            raise PreflightError(
                changed,
                fix="look at what runs now (Releases page, or python -m amirelease.cli history "
                f"{asked.app}) and trigger ami_rollback again if you still need to roll back",
            )
        self.log.info(
            "Under the lock: %s still runs %s (%s), as when the rollback was asked for; marking it",
            asked.app,
            asked.current_version or "an AMI this pipeline did not build",
            asked.current_release_id or ", ".join(asked.current_amis.values()) or "nothing",
        )
