"""The app's infrastructure in the release: its Terraform root module, checked before the bake
and applied with the new AMI after the smoke test. Both run on the app's toolchain queue (the
workers that have Terraform, Packer and Chef)."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowRescheduleException, AirflowSkipException
from botocore.exceptions import ClientError

from amirelease.constants import TaskIds
from amirelease.errors import AwsErrorFamily, InfrastructureError, aws_error_family
from amirelease.operators.base import ReleaseOperatorMixin, TerraformTaskMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from amirelease.handoffs import BakeResult, PlanSummary, RegionInfrastructure, ReleasePlan
    from amirelease.hooks.terraform import Backend, TerraformRun
    from amirelease.hooks.vault import Secrets


def state_bucket() -> str:
    from amirelease.ledger import ledger_bucket

    return conf.get("ami_release", "terraform_state_bucket", fallback="").strip() or ledger_bucket()


def state_key(app: str, region: str, stage: str = "") -> str:
    """The Terraform state of one app (and stage) in one region; an app without stages keeps its
    key from before stages existed."""
    return f"terraform/{app}/{stage + '/' if stage else ''}{region}/terraform.tfstate"


def variables_for(plan: ReleasePlan, region: str, ami_id: str, secrets: Secrets) -> dict[str, Any]:
    """The non-secret Terraform variables of one region's apply (pure; catalog.module_variables)."""
    from amirelease import catalog

    return catalog.module_variables(
        plan.app_spec, plan.network(region), region, plan.release_id, ami_id, dict(secrets.versions), plan.stage
    )


def refuse_destroys(
    plan: ReleasePlan, region: str, summary: PlanSummary, created: frozenset[str] = frozenset(), log: Any = None
) -> None:
    """Refuse a plan that destroys or replaces what the catalog does not allow; ``created``: the
    addresses this release's check planned as new (their tainted replacement is this release's
    own half-made resource, hooks/terraform.destroys)."""
    from amirelease.hooks.terraform import destroys

    infra = plan.app_spec.infrastructure
    bad = destroys(summary, infra.allow_destroy, created)
    if log is not None:
        for c in destroys(summary, infra.allow_destroy):
            if c not in bad:
                log.warning(
                    "%s in %s: %s is replaced: this release's earlier apply created it and failed half-way "
                    "(Terraform marked it tainted); it did not exist before this release",
                    plan.app,
                    region,
                    c.address,
                )
    if bad:
        listed = "; ".join(f"{c.address} ({c.action}{', tainted' if c.reason == 'tainted' else ''})" for c in bad)
        types = ", ".join(sorted({c.resource_type for c in bad}))
        raise InfrastructureError(
            f"the Terraform plan of {plan.app} in {region} would destroy {len(bad)} resource(s): {listed}",
            resource=f"module {infra.module}",
            fix=f"nothing was changed. If destroying is intended, add {types} to infrastructure.allow_destroy in the "
            "app's catalog file; otherwise fix the module (a renamed resource needs a `moved` block)",
        )


APPLY_CHANGED = (
    "Terraform may have changed part of the module's resources before AWS refused; the state in S3 says "
    "which, and the next apply converges (a retry of this task re-plans)."
)


def fail_on_errors(run: TerraformRun, what: str, plan: ReleasePlan, region: str) -> None:
    from amirelease.retry import tool_pushback_error

    if run.returncode == 0 and not run.errors:
        return
    errors = "; ".join(str(e) for e in run.errors[:5]) or f"exit code {run.returncode}"
    pushback = tool_pushback_error(
        errors,
        tool="Terraform",
        step=f"terraform {what}",
        region=region,
        changed=APPLY_CHANGED if what == "apply" else "Nothing was changed by this Terraform command.",
    )
    if pushback is not None:
        raise pushback
    raise InfrastructureError(
        f"terraform {what} failed for {plan.app} in {region}{' (interrupted)' if run.interrupted else ''}: {errors}",
        resource=f"module {plan.app_spec.infrastructure.module}",
        fix="read the 'terraform' lines above (file and line are given); fix the module or the catalog's "
        "infrastructure settings and release again",
    )


class _TerraformOperator(TerraformTaskMixin, ReleaseOperatorMixin, AwsBaseOperator[S3Hook]):
    """Shared by the check and the apply: one Terraform working folder per region."""

    aws_hook_class = S3Hook
    ui_color = "#ece8fb"
    iam_role: ClassVar[str] = "bake"
    runs_on_toolchain: ClassVar[bool] = True  # routing.py puts it on the app's toolchain queue
    # the task's own calls (the bundle; the stale-lock check); Terraform's are declared by its
    # S3 backend (hooks/terraform.py) and by each app's module (infrastructure.iam_actions)
    iam_actions: ClassVar[tuple[str, ...]] = ("s3:GetObject",)

    def __init__(self, *, plan: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan

    def _endpoint(self) -> str | None:
        url: str | None = self.hook.conn_config.endpoint_url
        return url

    def _backend(self, plan: ReleasePlan, region: str) -> Backend:
        from amirelease.hooks.terraform import Backend

        return Backend(
            bucket=state_bucket(),
            key=state_key(plan.app, region, plan.stage_spec.state_folder),
            region=conf.get("ami_release", "terraform_state_region", fallback="").strip()
            or self.hook.conn_region_name
            or region,
            endpoint_url=self._endpoint(),
            kms_key_id=conf.get("ami_release", "terraform_state_kms_key", fallback="").strip() or None,
        )

    @contextmanager
    def _module(
        self, plan: ReleasePlan, root: Path, region: str, ami_id: str, secrets: Secrets
    ) -> Iterator[tuple[Path, dict[str, str], Path, Backend]]:
        """An initialised working copy of the module for one region: (folder, env, var file, backend).

        The folder is this worker's for the app, region and bundle digest: a second Terraform
        task of the release here (the apply after the check) finds it initialised."""
        from amirelease import contained
        from amirelease.aws import tool_environment
        from amirelease.hooks.terraform import workspace_key
        from amirelease.hooks.tool import workdir

        assert self._terraform is not None
        infra = plan.app_spec.infrastructure
        backend = self._backend(plan, region)
        app = plan.app_spec
        contained.check_module(root / infra.module, app.name, contained.Allowances.from_entry({"allow": app.allow}))
        key = workspace_key(plan.app, region, plan.bundle.sha256, backend)
        with self._terraform.workspace(root / infra.module, key, self._endpoint()) as ws, workdir("terraform") as own:
            aws_env = tool_environment(
                self.hook, region, role_arn=app.aws_role, app=app.name, release_id=plan.release_id
            )
            env = self._terraform.environment(ws.path, aws_env, secrets.values)
            var_file = own / "release.tfvars.json"  # this task's files: in its own folder (hooks/tool.py)
            var_file.write_text(json.dumps(variables_for(plan, region, ami_id, secrets), indent=2))
            self.log.info(
                "%s in %s: module %s, state s3://%s/%s (encrypted, locked with use_lockfile)",
                plan.app,
                region,
                infra.module,
                backend.bucket,
                backend.key,
            )
            if ws.initialised_for(backend):
                self._say(f"init: skipped, this worker's folder for bundle {plan.bundle.sha256[:16]}… is initialised")
            else:
                fail_on_errors(self._terraform.init(ws.module, backend, env, self._say), "init", plan, region)
                ws.mark_initialised(backend)
            yield ws.module, env, var_file, backend

    def _done_with_workspaces(self, plan: ReleasePlan) -> None:
        """The release needs no more Terraform on this worker: remove its folders here."""
        from amirelease.hooks.terraform import TerraformHook, workspace_key

        for region in plan.regions:
            TerraformHook.remove_workspace(
                workspace_key(plan.app, region, plan.bundle.sha256, self._backend(plan, region))
            )

    def _secrets(self, plan: ReleasePlan) -> Secrets:
        from amirelease.hooks.vault import PipelineSecrets

        return PipelineSecrets(self.vault_conn_id).read(plan.app, plan.app_spec.infrastructure.secrets)


class CheckInfrastructureOperator(_TerraformOperator):
    """
    Check the app's Terraform module before anything is built: ``init`` + ``validate`` + a
    ``plan`` against the current state (no lock taken, nothing written; the vendor base image
    stands in for the AMI not baked yet). A module that is invalid, or a plan that would
    destroy or replace a resource whose type the catalog does not allow
    (``infrastructure.allow_destroy``), fails the release here. It runs beside the bake (the
    bundle preflight stored is the input of both): the bake watches this task and stops when it
    fails, and nothing reaches the fleet before it passed (the apply runs after it).

    :param plan: the ReleasePlan from preflight.
    :param vault_conn_id: the Vault connection for the module's secrets (TF_VAR_*).
    """

    template_fields: Sequence[str] = aws_template_fields("plan", "bake")
    iam_actions = ("s3:GetObject", "sts:AssumeRole")  # Terraform runs as the app's role

    def __init__(self, *, bake: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bake = bake  # ami_promote: the release's AMIs exist already, so the plan shows them

    def execute(self, context: Context) -> dict[str, Any]:
        from amirelease import bundle
        from amirelease.handoffs import BakeResult, InfrastructureCheck, RegionPlan, ReleasePlan
        from amirelease.hooks.terraform import TerraformHook
        from amirelease.ledger import ledger_bucket

        plan = ReleasePlan.from_xcom(self.plan)
        amis = BakeResult.from_xcom(self.bake).amis if self.bake else {}
        self._terraform = TerraformHook()
        version = self._terraform.version()
        store = bundle.BundleStore(self.clients.s3(), ledger_bucket())
        with bundle.unpacked(store, plan.bundle.key, plan.bundle.sha256) as root:  # stored by preflight
            secrets = self._secrets(plan)
            regions = []
            try:
                for region in plan.regions:
                    ami = amis.get(region, plan.source_ami)
                    with self._module(plan, root, region, ami, secrets) as (module, env, var_file, backend):
                        self._validate(plan, region, module, env, version)
                        run = self._terraform.plan(module, var_file, env, self._say, lock=False)
                        fail_on_errors(run, "plan", plan, region)
                        summary = run.plan_summary()
                        self.log.info(
                            "%s in %s: the plan against the current state (with the base image as the AMI): %s",
                            plan.app,
                            region,
                            summary.line(),
                        )
                        refuse_destroys(plan, region, summary)
                        regions.append(RegionPlan(region=region, state_key=backend.key, plan=summary))
            except BaseException:
                self._done_with_workspaces(plan)  # refused: the release ends here
                raise
            finally:
                secrets.clear()
        return InfrastructureCheck(regions=tuple(regions), terraform_version=version).to_xcom()

    def _validate(self, plan: ReleasePlan, region: str, module: Path, env: dict[str, str], version: str) -> None:
        """``terraform validate``, once per exact module bytes and Terraform version on this worker."""
        assert self._terraform is not None
        marker = self._terraform.validated_marker(module, version)
        if marker.exists():
            self._say(f"validate: skipped, these exact module bytes were validated here ({marker.name[:16]}…)")
            return
        fail_on_errors(self._terraform.validate(module, env, self._say), "validate", plan, region)
        marker.touch()


class ApplyInfrastructureOperator(_TerraformOperator):
    """
    Apply the app's Terraform module with the new AMI: ``plan -out`` (its summary in this log
    and in the ledger, destroys refused again), ``apply`` of exactly that saved plan, and the
    module's outputs give the launch template version and the groups that ``roll_out``
    refreshes. A retry re-plans and applies idempotently (the same inputs give "No changes");
    a state lock left by an earlier try of this run is released first.

    With ``after`` (the smoke test's task id) the plan is made while that task runs, and
    applied only once it has succeeded: this task waits up to ``wait_seconds`` for it, then
    gives its worker slot back and is rescheduled every ``poke_interval`` seconds, keeping the
    saved plan in this worker's Terraform folder (planned again if the next poke lands on
    another worker). When that task did not succeed, nothing is applied and this task is
    skipped.

    :param plan: the ReleasePlan from preflight.
    :param bake: the BakeResult (the AMI per region).
    :param vault_conn_id: the Vault connection for the module's secrets (TF_VAR_*).
    :param lock_timeout: seconds to wait for another Terraform run's state lock.
    :param after: the task that must succeed before the saved plan is applied (the smoke test).
    :param wait_seconds: how long to wait for ``after`` in this process before rescheduling
        (default: [ami_release] apply_wait_seconds, 20).
    :param poke_interval: seconds between reschedules while ``after`` runs (default:
        [ami_release] apply_poke_seconds, 10).
    """

    template_fields: Sequence[str] = aws_template_fields("plan", "bake")

    def __init__(
        self,
        *,
        bake: Any,
        lock_timeout: int = 300,
        after: str | None = None,
        wait_seconds: float | None = None,
        poke_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bake = bake
        self.lock_timeout = lock_timeout
        self.after = after
        self.wait_seconds = wait_seconds
        self.poke_interval = poke_interval

    def execute(self, context: Context) -> dict[str, Any]:
        from amirelease import bundle
        from amirelease.handoffs import BakeResult, InfrastructureResult, ReleasePlan
        from amirelease.hooks.terraform import TerraformHook
        from amirelease.ledger import ledger_bucket

        plan = ReleasePlan.from_xcom(self.plan)
        baked = BakeResult.from_xcom(self.bake)
        ti = context["ti"]
        if self.wait_seconds is None:
            self.wait_seconds = conf.getfloat("ami_release", "apply_wait_seconds", fallback=20.0)
        if self.poke_interval is None:
            self.poke_interval = conf.getfloat("ami_release", "apply_poke_seconds", fallback=10.0)
        self._terraform = TerraformHook()
        if self._verdict(ti) is False:
            self._skip(plan, "before anything was planned")
        store = bundle.BundleStore(self.clients.s3(), ledger_bucket())
        secrets = self._secrets(plan)
        regions = []
        try:
            with bundle.unpacked(store, plan.bundle.key, plan.bundle.sha256) as root:
                summaries = {}
                for region in plan.regions:
                    with self._module(plan, root, region, baked.amis[region], secrets) as (mod, env, var_file, backend):
                        self._release_own_stale_lock(plan, backend, mod, env, context)
                        summaries[region] = self._plan(plan, region, mod, env, var_file, backend, ti, baked)
                verdict = self._await(ti)
                if verdict is False:
                    self._skip(plan, "the saved plan was not applied")
                if verdict is None:
                    self.log.info(
                        "%s has not finished: the saved plan waits in this worker's Terraform folder; "
                        "this task gives its worker slot back and looks again in %ss",
                        self.after,
                        self.poke_interval,
                    )
                    raise AirflowRescheduleException(datetime.now(UTC) + timedelta(seconds=self.poke_interval or 10.0))
                for region in plan.regions:
                    with self._module(plan, root, region, baked.amis[region], secrets) as (mod, env, vf, backend):
                        if not _saved_plan_is(mod.parent, _saved_plan_key(plan, region, ti, baked)):
                            # the folder lost this try's plan meanwhile (swept, or prepared again):
                            # plan again rather than apply anything else
                            summaries[region] = self._plan(plan, region, mod, env, vf, backend, ti, baked)
                        regions.append(self._apply_saved(plan, region, mod, env, vf.parent, backend, summaries[region]))
        finally:
            secrets.clear()
        self._done_with_workspaces(plan)  # applied: the release's last Terraform on this worker
        return InfrastructureResult(regions=tuple(regions)).to_xcom()

    # -- waiting for the smoke test ---------------------------------------------------------------
    def _verdict(self, ti: Any) -> bool | None:
        """True: ``after`` succeeded (or there is none); False: it ended otherwise; None: not yet."""
        if not self.after:
            return True
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id], task_ids=[self.after])
        state = states.get(ti.run_id, {}).get(self.after)
        if state == "success":
            return True
        if state in ("failed", "upstream_failed", "skipped", "removed"):
            return False
        return None

    def _await(self, ti: Any) -> bool | None:
        deadline = time.monotonic() + (self.wait_seconds or 0.0)
        verdict = self._verdict(ti)
        if verdict is None:
            self.log.info("Planned; waiting for %s before applying the saved plan", self.after)
        while verdict is None and time.monotonic() < deadline:
            time.sleep(2)
            verdict = self._verdict(ti)
        if verdict:
            self.log.info("%s passed: applying the saved plan", self.after or "nothing to wait for")
        return verdict

    def _skip(self, plan: ReleasePlan, what: str) -> None:
        self._done_with_workspaces(plan)
        raise AirflowSkipException(f"{self.after} did not succeed: {what}; nothing was applied to {plan.app}'s fleet")

    # -- plan, then apply exactly that plan -----------------------------------------------------------
    @staticmethod
    def _created_by_this_release(ti: Any, region: str) -> frozenset[str]:
        """The addresses this release's check planned to create in ``region`` (under the lock, so
        nothing else made them since): none for a promotion, which has no check."""
        from amirelease.handoffs import InfrastructureCheck

        dag = getattr(getattr(ti, "task", None), "dag", None)
        if dag is None or TaskIds.CHECK_INFRA not in dag.task_ids:
            return frozenset()
        raw = ti.xcom_pull(task_ids=TaskIds.CHECK_INFRA)
        if not raw:
            return frozenset()
        return frozenset(
            c.address
            for r in InfrastructureCheck.from_xcom(raw).regions
            if r.region == region
            for c in r.plan.changes
            if c.action == "create"
        )

    def _plan(
        self,
        plan: ReleasePlan,
        region: str,
        module: Path,
        env: dict[str, str],
        var_file: Path,
        backend: Backend,
        ti: Any,
        baked: BakeResult,
    ) -> PlanSummary:
        """``plan -out`` with the new AMI, or the plan this try saved here before a reschedule."""
        from amirelease.handoffs import PlanSummary

        assert self._terraform is not None
        plan_file = var_file.parent / "release.tfplan"
        saved_file = module.parent / "release.tfplan"  # kept in the worker's folder across a reschedule
        marker = module.parent / ".planned"
        key = _saved_plan_key(plan, region, ti, baked)
        if saved_file.is_file() and marker.is_file():
            saved = json.loads(marker.read_text())
            if saved.get("key") == key:
                summary = PlanSummary.from_xcom(saved["summary"])
                self.log.info("%s in %s: the plan saved before the reschedule: %s", plan.app, region, summary.line())
                return summary
        marker.unlink(missing_ok=True)
        run = self._terraform.plan(module, var_file, env, self._say, out=plan_file, lock_timeout=self.lock_timeout)
        if run.lock_id:
            raise InfrastructureError(
                f"the Terraform state of {plan.app} in {region} stayed locked for {self.lock_timeout}s by another run",
                resource=f"s3://{backend.bucket}/{backend.lock_key}",
                fix="wait for that Terraform run to end; if none is running, unlock it "
                f"(terraform force-unlock {run.lock_id}) and retry this task",
            )
        fail_on_errors(run, "plan", plan, region)
        summary = run.plan_summary()
        self.log.info("%s in %s: %s", plan.app, region, summary.line())
        refuse_destroys(plan, region, summary, self._created_by_this_release(ti, region), self.log)
        shutil.copyfile(plan_file, saved_file)
        marker.write_text(json.dumps({"key": key, "summary": summary.to_xcom()}))
        return summary

    def _apply_saved(
        self,
        plan: ReleasePlan,
        region: str,
        module: Path,
        env: dict[str, str],
        own: Path,
        backend: Backend,
        summary: PlanSummary,
    ) -> RegionInfrastructure:
        from amirelease.handoffs import RegionInfrastructure

        assert self._terraform is not None
        plan_file = own / "release.tfplan"
        shutil.copyfile(module.parent / "release.tfplan", plan_file)
        (module.parent / ".planned").unlink(missing_ok=True)  # a saved plan is applied once
        run = self._terraform.apply(module, plan_file, env, self._say)
        fail_on_errors(run, "apply", plan, region)
        out = self._outputs(plan, region, run.outputs)
        self.log.info(
            "%s in %s: applied; launch template %s version %s; groups %s",
            plan.app,
            region,
            out.launch_template_id,
            out.launch_template_version,
            ", ".join(out.auto_scaling_groups),
        )
        return RegionInfrastructure(
            region=region,
            state_key=backend.key,
            plan=summary,
            launch_template_id=out.launch_template_id,
            launch_template_version=out.launch_template_version,
            auto_scaling_groups=out.auto_scaling_groups,
        )

    def _outputs(self, plan: ReleasePlan, region: str, outputs: dict[str, Any]) -> RegionInfrastructure:
        from amirelease.handoffs import PlanSummary, RegionInfrastructure

        names = plan.app_spec.infrastructure.outputs
        missing = [
            names[k]
            for k in ("launch_template_id", "launch_template_version", "auto_scaling_groups")
            if outputs.get(names[k]) in (None, "", [])
        ]
        if missing:
            raise InfrastructureError(
                f"the Terraform module of {plan.app} has no (or empty) output(s) {', '.join(missing)}",
                fix="add the outputs to the module, or name the right ones in infrastructure.outputs in the catalog",
            )
        groups_out = outputs[names["auto_scaling_groups"]]
        groups = tuple(groups_out if isinstance(groups_out, list) else [groups_out])
        expected = [t.auto_scaling_group for t in plan.targets if t.region == region]
        unknown = [g for g in expected if g not in groups]
        if unknown:
            raise InfrastructureError(
                f"the catalog's target group(s) {', '.join(unknown)} in {region} are not among the module's groups "
                f"({', '.join(groups)})",
                fix="make targets[] in the catalog match the groups the module creates",
            )
        return RegionInfrastructure(
            region=region,
            state_key="",
            plan=PlanSummary(0, 0, 0),
            launch_template_id=str(outputs[names["launch_template_id"]]),
            launch_template_version=int(outputs[names["launch_template_version"]]),
            auto_scaling_groups=tuple(expected),
        )

    def _release_own_stale_lock(
        self, plan: ReleasePlan, backend: Backend, module: Path, env: dict[str, str], context: Context
    ) -> None:
        """A Terraform state lock taken after this run took the app's release lock can only be
        this run's own, left by an earlier try that was killed: release it."""
        from amirelease.ledger import ReleaseLock, ledger_bucket

        assert self._terraform is not None
        s3 = self.clients.s3()
        try:
            info = json.loads(s3.get_object(Bucket=backend.bucket, Key=backend.lock_key)["Body"].read())
        except ClientError as exc:
            if aws_error_family(exc) is AwsErrorFamily.NOT_FOUND:
                return
            raise
        ti = context["ti"]
        holder = ReleaseLock(s3, ledger_bucket(), plan.app).holder() or {}
        ours = holder.get("run_id") == ti.run_id and holder.get("dag_id") == ti.dag_id
        created = _parse_time(str(info.get("Created", "")))
        acquired = _parse_time(str(holder.get("acquired_at", "")))
        if not (ours and created and acquired and created >= acquired):
            self.log.warning(
                "The state of %s is locked by %s since %s (%s); waiting up to %ss for it",
                plan.app,
                info.get("Who"),
                info.get("Created"),
                info.get("Operation"),
                self.lock_timeout,
            )
            return
        self.log.warning(
            "Releasing the state lock %s left by an earlier try of this run (taken %s, %s)",
            info.get("ID"),
            info.get("Created"),
            info.get("Operation"),
        )
        fail_on_errors(
            self._terraform.force_unlock(module, str(info["ID"]), env, self._say),
            "force-unlock",
            plan,
            plan.home_region,
        )


def _saved_plan_key(plan: ReleasePlan, region: str, ti: Any, baked: BakeResult) -> str:
    """What a saved plan in a worker's folder was made for: this release, region, AMI and try."""
    return json.dumps([plan.release_id, region, baked.amis[region], getattr(ti, "try_number", 0)])


def _saved_plan_is(folder: Path, key: str) -> bool:
    marker = folder / ".planned"
    try:
        return (folder / "release.tfplan").is_file() and json.loads(marker.read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def _parse_time(value: str) -> datetime | None:
    """Terraform's lock time (nanoseconds, Z) or ours, as an aware datetime."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$", value.strip())
    if not m:
        return None
    frac = (m.group(2) or "")[:7]
    zone = m.group(3) or "Z"
    return datetime.fromisoformat(m.group(1) + frac + ("+00:00" if zone == "Z" else zone))
