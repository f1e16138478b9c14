"""The app's infrastructure in the release: its Terraform root module, checked before the bake
and applied with the new AMI after the smoke test. Both run on the app's toolchain queue (the
workers that have Terraform, Packer and Chef)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.configuration import conf
from botocore.exceptions import ClientError

from amirelease import bundle, catalog, contained, sources
from amirelease.aws import tool_environment
from amirelease.errors import InfrastructureError
from amirelease.handoffs import (
    BakeResult,
    InfrastructureCheck,
    InfrastructureResult,
    PlanSummary,
    RegionInfrastructure,
    RegionPlan,
    ReleasePlan,
)
from amirelease.hooks.terraform import Backend, TerraformHook, TerraformRun, destroys
from amirelease.hooks.tool import workdir
from amirelease.hooks.vault import PipelineSecrets, Secrets
from amirelease.ledger import ReleaseLock, ledger_bucket
from amirelease.operators.base import ReleaseOperatorMixin

if TYPE_CHECKING:
    from airflow.sdk import Context


def state_bucket() -> str:
    return conf.get("ami_release", "terraform_state_bucket", fallback="").strip() or ledger_bucket()


def state_key(app: str, region: str) -> str:
    return f"terraform/{app}/{region}/terraform.tfstate"


def variables_for(plan: ReleasePlan, region: str, ami_id: str, secrets: Secrets) -> dict[str, Any]:
    """The non-secret Terraform variables of one region's apply (pure)."""
    infra = plan.app_spec.infrastructure
    net = plan.network(region)
    out: dict[str, Any] = {
        **infra.variables,
        "app": plan.app,
        "region": region,
        "release_id": plan.release_id,
        "ami_id": ami_id,
        "vpc_id": net.vpc_id,
        "vpc_cidr": net.vpc_cidr,
        "subnet_ids": list(net.subnet_ids),
    }
    if infra.secrets:
        out["secret_versions"] = dict(secrets.versions)
    return out


def refuse_destroys(plan: ReleasePlan, region: str, summary: PlanSummary) -> None:
    infra = plan.app_spec.infrastructure
    bad = destroys(summary, infra.allow_destroy)
    if bad:
        listed = "; ".join(f"{c.address} ({c.action})" for c in bad)
        types = ", ".join(sorted({c.resource_type for c in bad}))
        raise InfrastructureError(
            f"the Terraform plan of {plan.app} in {region} would destroy {len(bad)} resource(s): {listed}",
            resource=f"module {infra.module}",
            fix=f"nothing was changed. If destroying is intended, add {types} to infrastructure.allow_destroy in the "
            "app's catalog file; otherwise fix the module (a renamed resource needs a `moved` block)",
        )


def fail_on_errors(run: TerraformRun, what: str, plan: ReleasePlan, region: str) -> None:
    if run.returncode == 0 and not run.errors:
        return
    errors = "; ".join(str(e) for e in run.errors[:5]) or f"exit code {run.returncode}"
    raise InfrastructureError(
        f"terraform {what} failed for {plan.app} in {region}{' (interrupted)' if run.interrupted else ''}: {errors}",
        resource=f"module {plan.app_spec.infrastructure.module}",
        fix="read the 'terraform' lines above (file and line are given); fix the module or the catalog's "
        "infrastructure settings and release again",
    )


class _TerraformOperator(ReleaseOperatorMixin, AwsBaseOperator[S3Hook]):
    """Shared by the check and the apply: one Terraform working folder per region."""

    aws_hook_class = S3Hook
    ui_color = "#ece8fb"
    iam_role: ClassVar[str] = "bake"
    runs_on_toolchain: ClassVar[bool] = True  # routing.py puts it on the app's toolchain queue
    # the task's own calls (the bundle; the stale-lock check); Terraform's are declared by its
    # S3 backend (hooks/terraform.py) and by each app's module (infrastructure.iam_actions)
    iam_actions: ClassVar[tuple[str, ...]] = ("s3:GetObject",)

    def __init__(self, *, plan: Any, vault_conn_id: str = "vault_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.vault_conn_id = vault_conn_id
        self._terraform: TerraformHook | None = None

    def on_kill(self) -> None:
        if self._terraform is not None:
            self._terraform.interrupt()

    def _say(self, line: str) -> None:
        self.log.info("terraform | %s", line)

    def _endpoint(self) -> str | None:
        url: str | None = self.hook.conn_config.endpoint_url
        return url

    def _backend(self, plan: ReleasePlan, region: str) -> Backend:
        return Backend(
            bucket=state_bucket(),
            key=state_key(plan.app, region),
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
        """An initialised working copy of the module for one region: (folder, env, var file, backend)."""
        assert self._terraform is not None
        infra = plan.app_spec.infrastructure
        backend = self._backend(plan, region)
        with workdir("terraform") as wd:
            app = plan.app_spec
            contained.check_module(root / infra.module, app.name, contained.Allowances.from_entry({"allow": app.allow}))
            module = self._terraform.prepare(root / infra.module, wd, self._endpoint())
            aws_env = tool_environment(
                self.hook, region, role_arn=app.aws_role, app=app.name, release_id=plan.release_id
            )
            env = self._terraform.environment(wd, aws_env, secrets.values)
            var_file = wd / "release.tfvars.json"
            var_file.write_text(json.dumps(variables_for(plan, region, ami_id, secrets), indent=2))
            self.log.info(
                "%s in %s: module %s, state s3://%s/%s (encrypted, locked with use_lockfile)",
                plan.app,
                region,
                infra.module,
                backend.bucket,
                backend.key,
            )
            fail_on_errors(self._terraform.init(module, backend, env, self._say), "init", plan, region)
            yield module, env, var_file, backend

    def _secrets(self, plan: ReleasePlan) -> Secrets:
        return PipelineSecrets(self.vault_conn_id).read(plan.app, plan.app_spec.infrastructure.secrets)


class CheckInfrastructureOperator(_TerraformOperator):
    """
    Check the app's Terraform module before anything is built: ``init`` + ``validate`` + a
    ``plan`` against the current state (no lock taken, nothing written; the vendor base image
    stands in for the AMI not baked yet). A module that is invalid, or a plan that would
    destroy or replace a resource whose type the catalog does not allow
    (``infrastructure.allow_destroy``), fails the release here, with zero changes in AWS.
    Then the release's bundle is stored next to its ledger record.

    :param plan: the ReleasePlan from preflight.
    :param vault_conn_id: the Vault connection for the module's secrets (TF_VAR_*).
    """

    template_fields: Sequence[str] = aws_template_fields("plan")
    iam_actions = ("s3:GetObject", "s3:PutObject", "sts:AssumeRole")  # Terraform runs as the app's role

    def execute(self, context: Context) -> dict[str, Any]:
        plan = ReleasePlan.from_xcom(self.plan)
        self._terraform = TerraformHook()
        version = self._terraform.version()
        store = bundle.BundleStore(self.clients.s3(), ledger_bucket())
        with TemporaryDirectory(prefix="release-bundle-") as tmp:
            root = Path(tmp)
            if plan.source_bundle is not None:  # a re-release: exactly the bundle it repeats
                data = store.get(plan.source_bundle.key, plan.source_bundle.sha256)
                packed = bundle.Bundle(
                    data=data, sha256=plan.source_bundle.sha256, files=tuple(bundle.unpack(data, root))
                )
            elif plan.source is not None:  # a git-sourced app: the commit preflight pinned, fetched again
                entry = catalog.known_app(plan.app)
                _, _, packed = sources.build(entry, plan.source, root / "git")
                bundle.unpack(packed.data, root)
            else:
                packed = bundle.pack_app(plan.app_spec)
                bundle.unpack(packed.data, root)
            if packed.sha256 != plan.bundle.sha256:
                where = (
                    f"commit {plan.source['commit'][:12]} of {plan.source['repository']} with this worker's "
                    "central catalog and Packer files"
                    if plan.source
                    else "this worker's include/"
                )
                raise InfrastructureError(
                    f"the release inputs of {plan.app} built here ({where}: bundle {packed.sha256[:16]}…) differ from "
                    f"those preflight saw ({plan.bundle.sha256[:16]}…)",
                    fix="deploy the same version of include/ (catalog, cookbooks, Packer files, Terraform modules) to "
                    "every worker, then retrigger",
                )
            secrets = self._secrets(plan)
            regions = []
            try:
                for region in plan.regions:
                    with self._module(plan, root, region, plan.source_ami, secrets) as (module, env, var_file, backend):
                        fail_on_errors(self._terraform.validate(module, env, self._say), "validate", plan, region)
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
            finally:
                secrets.clear()
            store.put(plan.bundle.key, packed)
            self.log.info(
                "Release bundle stored: s3://%s/%s (sha256 %s, %d files)",
                ledger_bucket(),
                plan.bundle.key,
                packed.sha256,
                len(packed.files),
            )
        return InfrastructureCheck(regions=tuple(regions), terraform_version=version).to_xcom()


class ApplyInfrastructureOperator(_TerraformOperator):
    """
    Apply the app's Terraform module with the new AMI: ``plan -out`` (its summary in this log
    and in the ledger, destroys refused again), ``apply`` of exactly that saved plan, and the
    module's outputs give the launch template version and the groups that ``roll_out``
    refreshes. A retry re-plans and applies idempotently (the same inputs give "No changes");
    a state lock left by an earlier try of this run is released first.

    :param plan: the ReleasePlan from preflight.
    :param bake: the BakeResult (the AMI per region).
    :param vault_conn_id: the Vault connection for the module's secrets (TF_VAR_*).
    :param lock_timeout: seconds to wait for another Terraform run's state lock.
    """

    template_fields: Sequence[str] = aws_template_fields("plan", "bake")

    def __init__(self, *, bake: Any, lock_timeout: int = 300, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bake = bake
        self.lock_timeout = lock_timeout

    def execute(self, context: Context) -> dict[str, Any]:
        plan = ReleasePlan.from_xcom(self.plan)
        baked = BakeResult.from_xcom(self.bake)
        self._terraform = TerraformHook()
        store = bundle.BundleStore(self.clients.s3(), ledger_bucket())
        secrets = self._secrets(plan)
        regions = []
        try:
            with bundle.unpacked(store, plan.bundle.key, plan.bundle.sha256) as root:
                for region in plan.regions:
                    with self._module(plan, root, region, baked.amis[region], secrets) as (
                        module,
                        env,
                        var_file,
                        backend,
                    ):
                        self._release_own_stale_lock(plan, backend, module, env, context)
                        regions.append(self._apply(plan, region, module, env, var_file, backend))
        finally:
            secrets.clear()
        return InfrastructureResult(regions=tuple(regions)).to_xcom()

    def _apply(
        self, plan: ReleasePlan, region: str, module: Path, env: dict[str, str], var_file: Path, backend: Backend
    ) -> RegionInfrastructure:
        assert self._terraform is not None
        plan_file = module.parent / "release.tfplan"
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
        refuse_destroys(plan, region, summary)
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
        assert self._terraform is not None
        s3 = self.clients.s3()
        try:
            info = json.loads(s3.get_object(Bucket=backend.bucket, Key=backend.lock_key)["Body"].read())
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
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


def _parse_time(value: str) -> datetime | None:
    """Terraform's lock time (nanoseconds, Z) or ours, as an aware datetime."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$", value.strip())
    if not m:
        return None
    frac = (m.group(2) or "")[:7]
    zone = m.group(3) or "Z"
    return datetime.fromisoformat(m.group(1) + frac + ("+00:00" if zone == "Z" else zone))
