"""Automatic roll-forward: a release that failed after it reached the fleet starts ``ami_rollback``.

Runs after ``record`` in ``ami_release`` only (a rollback never starts another: no loop). When
the release failed in ``wait_for_refresh`` or ``verify`` — the app's launch template already
names the new AMI and some instances may run it — and the app opts in (central catalog
``rollback: {automatic: true}``), it triggers ``ami_rollback`` for the app with an empty target
(the last good release), ``replaces`` = the failed release (so the rollback marks and holds the
failed release, not whatever the fleet runs after AWS rolled a refresh back) and a reason that
names the failed run. Everything else (the target, the mark, the hold) is decided by the
rollback itself, under the app's release lock, like a rollback a person starts:

* two failing releases in a row start two rollbacks, and the lock orders them: the second one
  finds that the first one's re-release went live meanwhile and stops, changing nothing
  (operators/rollback.py, "decided under the lock");
* the run id is derived from the failed release, so a retried task never starts a second one.

The trigger is Airflow's own ``TriggerDagRunOperator`` (made through the execution API, with the
provider's run link XCom), built inside ``execute``: importing it pulls in Airflow's ORM models
(~300 ms), which a DAG file's parse must not pay. When nothing is to be done it skips, saying why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from amirelease.constants import NOT_PROMOTED, DagIds, TaskIds

if TYPE_CHECKING:
    from airflow.sdk import Context

# a release that failed here had started to change the fleet (its launch template was applied)
REACHED_FLEET = (TaskIds.WAIT, TaskIds.VERIFY)


def decision(outcome: dict[str, Any] | None, document: dict[str, Any] | None) -> str | None:
    """(pure) Why no automatic rollback is started, or None when one is."""
    if not outcome or not outcome.get("app"):
        return "the release recorded no outcome"
    if outcome.get("outcome") == "succeeded":
        return "the release succeeded"
    if outcome.get("kind") == "rollback" or outcome.get("re_release_of"):
        return "this run is itself a rollback (or a stage of one): an automatic rollback never starts another"
    if outcome.get("outcome") in NOT_PROMOTED:
        return f"the promotion ended at its gate ({outcome['outcome']}): nothing was changed in that stage"
    failed = str(outcome.get("failed_task") or "").split("[")[0]
    if failed not in REACHED_FLEET:
        return f"the release failed at '{failed}', before it reached the fleet: there is nothing to roll back"
    if not ((document or {}).get("rollback") or {}).get("automatic"):
        return (
            f"{outcome['app']} does not opt in (central catalog: rollback: {{automatic: true}}); "
            "trigger ami_rollback by hand if the fleet needs it"
        )
    return None


def rollback_conf(outcome: dict[str, Any], dag_id: str, run_id: str) -> dict[str, Any]:
    """(pure) The ami_rollback conf for the failed release."""
    why = str(outcome.get("reason") or "see the failed task's log").splitlines()[0][:300]
    return {
        "app": outcome["app"],
        "target": None,  # the last good release, decided by the rollback under the app's lock
        "replaces": outcome["release_id"],
        "reason": (
            f"automatic: {outcome['app']} {outcome.get('version')} ({outcome['release_id']}) failed at "
            f"'{outcome.get('failed_task')}' in {dag_id} run {run_id}: {why}"
        )[:480],
        "forensic_hold": True,
        "confirm_rolled_back": False,
        # an app with stages: up to the stage that failed, without waiting at the gates on the way
        # (the app opted in to rolling back on its own; a broken stage does not wait for a person)
        **({"until_stage": outcome["stage"], "emergency": True} if outcome.get("stage") else {}),
    }


def rollback_run_id(outcome: dict[str, Any]) -> str:
    """(pure) One automatic rollback per failed release, readable: rollback_<app>__auto_<release id>."""
    return f"rollback_{outcome['app']}__auto_{outcome['release_id']}"


class AutoRollForwardOperator(BaseOperator):
    """Start ``ami_rollback`` for a release that failed on the fleet, when its app opts in."""

    ui_color = "#fde8e8"

    def execute(self, context: Context) -> None:
        from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
        from airflow.sdk.exceptions import AirflowSkipException

        ti = context["ti"]
        outcome = ti.xcom_pull(task_ids=TaskIds.RECORD, key="outcome")
        plan = ti.xcom_pull(task_ids=TaskIds.PREFLIGHT) or {}
        why_not = decision(outcome, plan.get("catalog_entry"))
        if why_not:
            raise AirflowSkipException(f"No automatic rollback: {why_not}")
        assert outcome is not None  # decision() said so
        run_id = rollback_run_id(outcome)
        self.log.warning(
            "%s %s failed at '%s' after it reached the fleet: starting ami_rollback %s (empty target: the last good "
            "release, decided under the app's lock; replaces %s, which gets a forensic hold)",
            outcome["app"],
            outcome.get("version"),
            outcome.get("failed_task"),
            run_id,
            outcome["release_id"],
        )
        self._remember(outcome, run_id)
        self._tell(context, outcome, run_id)
        TriggerDagRunOperator(  # raises Airflow's DagRunTriggerException: the task runner makes the run
            task_id=self.task_id,
            trigger_dag_id=DagIds.ROLLBACK,
            trigger_run_id=run_id,
            conf=rollback_conf(outcome, ti.dag_id, ti.run_id),
            skip_when_already_exists=True,  # a retried task never starts a second rollback
        ).execute(context)

    def _remember(self, outcome: dict[str, Any], run_id: str) -> None:
        """The failed release's ledger record names the rollback it started (the Releases page shows it)."""
        from amirelease.aws import AwsClients
        from amirelease.ledger import Ledger, ledger_bucket, utcnow

        try:
            Ledger(AwsClients().s3(), ledger_bucket()).update(
                outcome["app"],
                outcome["release_id"],
                automatic_rollback={"dag_id": DagIds.ROLLBACK, "run_id": run_id, "at": utcnow()},
            )
        except Exception as exc:  # noqa: BLE001 - the rollback matters more than this note
            self.log.warning("Could not note the automatic rollback in the ledger: %s", exc)

    def _tell(self, context: Context, outcome: dict[str, Any], run_id: str) -> None:
        from amirelease import notify

        try:
            notify._emit(
                context,
                notify.Notice(
                    event=notify.Events.ROLLBACK_STARTED,
                    app=str(outcome["app"]),
                    version=str(outcome.get("version") or ""),
                    outcome=f"{outcome.get('version')} failed at '{outcome.get('failed_task')}' after it reached "
                    "the fleet; ami_rollback re-releases the last good release",
                    reason=str(outcome.get("reason") or ""),
                    run_url=notify.run_url(DagIds.ROLLBACK, run_id),
                    action="watch the rollback; if it fails too, nothing else starts on its own: act by hand",
                    details=(f"Failed release: {outcome['release_id']}", f"Rollback run: {run_id}"),
                ),
            )
        except Exception as exc:  # noqa: BLE001 - a notification never changes the outcome
            self.log.warning("Automatic-rollback notification not sent: %s", exc)
