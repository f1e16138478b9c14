"""The ``ami_drift`` DAG's tasks: which app × region to check, a read-only Terraform plan of
each one's live release, and the report (drift records in the ledger bucket, notifications)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.configuration import conf

from amirelease.drift.store import DriftStore, drift_key
from amirelease.errors import InfrastructureError
from amirelease.operators.base import ReleaseOperatorMixin, TerraformTaskMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from amirelease import catalog
    from amirelease.drift.report import PlanReading


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def live_releases(history: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(stage, region) -> the release that runs there now: the newest succeeded release (by when it
    finished there) whose apply reached that region; stage "" for an app without stages (pure). A
    staged release counts in each stage it succeeded in (its ``stages`` entries, ami_promote's)."""
    seen: list[tuple[str, str, str, dict[str, Any]]] = []
    for record in history:
        stages = record.get("stages")
        if stages:
            for name, entry in stages.items():
                if (entry or {}).get("outcome") == "succeeded":
                    for applied in entry.get("applied") or []:
                        seen.append((str(entry.get("finished_at") or ""), name, str(applied.get("region")), record))
        elif record.get("outcome") == "succeeded":
            when = str(record.get("finished_at") or record.get("started_at") or "")
            for applied in (record.get("infrastructure") or {}).get("applied") or []:
                seen.append((when, "", str(applied.get("region")), record))
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for _, stage, region, record in sorted(seen, key=lambda s: s[0]):
        out[(stage, region)] = record
    return out


def drift_variables(
    app: catalog.App,
    network: Any,
    region: str,
    release_id: str,
    ami_id: str,
    versions: dict[str, Any],
    stage: str = "",
) -> dict[str, Any]:
    """The live release's Terraform variables, as the release applied them (pure): the catalog's
    one definition, which the release's apply uses too (catalog.module_variables)."""
    from amirelease.catalog import module_variables

    return module_variables(app, network, region, release_id, ami_id, versions, stage)


def task_id_for(toolchain: str, step: str = "plan") -> str:
    return f"{step}_" + toolchain.replace("-", "_")


class DriftTargetsOperator(ReleaseOperatorMixin, AwsBaseOperator[S3Hook]):
    """
    Which app × region to check: every app of the catalog that has an infrastructure module and
    a succeeded release in the ledger, in each region its live release applied to, for the apps
    of one toolchain (the plan task after it runs on that toolchain's workers). An app whose
    release lock is held (a release is running) is left for the next run.

    :param toolchain: the toolchain whose apps are listed.
    """

    aws_hook_class = S3Hook
    template_fields: Sequence[str] = aws_template_fields()
    iam_actions = ("s3:GetObject", "s3:ListBucket")
    pushback_changed = "Nothing was changed: this step only reads the ledger."

    def __init__(self, *, toolchain: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.toolchain = toolchain

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from amirelease import catalog
        from amirelease.ledger import Ledger, ReleaseLock, ledger_bucket

        s3 = self.clients.s3()
        bucket = ledger_bucket()
        ledger = Ledger(s3, bucket)
        targets: list[dict[str, Any]] = []
        for name, entry in sorted(catalog.load_entries().items()):
            if entry.toolchain != self.toolchain:
                continue
            infra = entry.document.get("infrastructure") or {}
            if not infra.get("module"):
                self.log.info("%s: no infrastructure module in the catalog; nothing to compare", name)
                continue
            live = live_releases(ledger.history(name))
            if not live:
                self.log.info("%s: no succeeded release in the ledger yet; nothing to compare", name)
                continue
            holder = ReleaseLock(s3, bucket, name).holder()
            if holder:
                self.log.info(
                    "%s: a release is running (%s %s holds the lock); checked again next run",
                    name,
                    holder.get("dag_id"),
                    holder.get("run_id"),
                )
                continue
            for (stage, region), record in sorted(live.items()):
                missing = [k for k in ("bundle", "release_id") if not record.get(k)]
                if missing or not (record.get("amis") or {}).get(region):
                    self.log.warning(
                        "%s in %s: the live release %s has no %s in its record; it cannot be planned",
                        name,
                        region,
                        record.get("release_id"),
                        ", ".join(missing) or "AMI for the region",
                    )
                    continue
                targets.append(
                    {
                        "app": name,
                        "region": region,
                        "stage": stage,
                        "release_id": record["release_id"],
                        "version": record.get("version"),
                        "bundle": record["bundle"],
                        "ami": record["amis"][region],
                        "finished_at": record.get("finished_at"),
                    }
                )
                self.log.info(
                    "%s in %s: live release %s (%s)", name, region, record.get("version"), record["release_id"]
                )
        return targets


class DriftPlanOperator(TerraformTaskMixin, ReleaseOperatorMixin, AwsBaseOperator[S3Hook]):
    """
    A read-only ``terraform plan -detailed-exitcode -lock=false`` of one app × region's live
    release: its bundle (digest verified), its module's variables with its AMI, its Vault
    secrets (TF_VAR_*), as the app's role; the state read from S3, never written, no lock taken,
    never applied. Returns the drift Terraform found (``resource_drift``), in words.

    :param target: one item of drift_targets' list (app, region, release_id, bundle, ami).
    """

    aws_hook_class = S3Hook
    template_fields: Sequence[str] = aws_template_fields("target")
    ui_color = "#ece8fb"
    iam_role: ClassVar[str] = "bake"  # on the toolchain's workers, like the release's Terraform tasks
    # the bundle, the lock check, the network by name, the app role; Terraform's reads are the
    # module's (infrastructure.iam_actions) and its backend's, as for any plan
    iam_actions = ("ec2:DescribeSubnets", "ec2:DescribeVpcs", "s3:GetObject", "sts:AssumeRole")
    pushback_changed = "Nothing was changed: this step only reads (a Terraform plan, never applied)."

    def __init__(self, *, target: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target

    def execute(self, context: Context) -> dict[str, Any]:
        from amirelease import bundle, contained
        from amirelease.aws import tool_environment
        from amirelease.drift.report import PlanReading
        from amirelease.hooks.terraform import Backend, TerraformHook, workspace_key
        from amirelease.hooks.tool import workdir
        from amirelease.hooks.vault import PipelineSecrets
        from amirelease.ledger import ReleaseLock, ledger_bucket
        from amirelease.operators.infrastructure import state_bucket, state_key
        from amirelease.operators.preflight import resolve_network

        t = dict(self.target)
        app_name, region, stage = str(t["app"]), str(t["region"]), str(t.get("stage") or "")
        s3 = self.clients.s3()
        holder = ReleaseLock(s3, ledger_bucket(), app_name).holder()
        if holder:
            self.log.info(
                "%s: a release started meanwhile (%s); checked again next run", app_name, holder.get("run_id")
            )
            return {**t, "skipped": f"a release is running ({holder.get('run_id')})"}
        self._terraform = TerraformHook()
        self._terraform.version()
        store = bundle.BundleStore(s3, ledger_bucket())
        with bundle.unpacked(store, t["bundle"]["key"], t["bundle"]["sha256"]) as root:
            app = bundle.load_app(root, app_name)
            infra = app.infrastructure
            contained.check_module(root / infra.module, app.name, contained.Allowances.from_entry({"allow": app.allow}))
            network = resolve_network(self.clients.ec2(region), app.network, region)
            secrets = PipelineSecrets(self.vault_conn_id).read(app.name, infra.secrets)
            try:
                endpoint: str | None = self.hook.conn_config.endpoint_url
                backend = Backend(
                    bucket=state_bucket(),
                    key=state_key(app.name, region, app.stage(stage).state_folder),
                    region=conf.get("ami_release", "terraform_state_region", fallback="").strip()
                    or self.hook.conn_region_name
                    or region,
                    endpoint_url=endpoint,
                    kms_key_id=conf.get("ami_release", "terraform_state_kms_key", fallback="").strip() or None,
                )
                key = "drift-" + workspace_key(app.name, region, t["bundle"]["sha256"], backend)
                with self._terraform.workspace(root / infra.module, key, endpoint) as ws, workdir("drift") as own:
                    aws_env = tool_environment(
                        self.hook, region, role_arn=app.aws_role, app=app.name, release_id=f"drift-{t['release_id']}"
                    )
                    env = self._terraform.environment(ws.path, aws_env, secrets.values)
                    var_file = own / "drift.tfvars.json"
                    variables = drift_variables(
                        app, network, region, t["release_id"], t["ami"], secrets.versions, stage
                    )
                    var_file.write_text(json.dumps(variables, indent=2))
                    self.log.info(
                        "%s in %s: comparing the live resources with release %s (%s), state s3://%s/%s "
                        "(read only: -lock=false, never applied)",
                        app.name,
                        region,
                        t.get("version"),
                        t["release_id"],
                        backend.bucket,
                        backend.key,
                    )
                    if not ws.initialised_for(backend):
                        self._check(self._terraform.init(ws.module, backend, env, self._say), "init", app.name, region)
                        ws.mark_initialised(backend)
                    plan_file = own / "drift.tfplan"
                    run = self._terraform.run(
                        [
                            "plan",
                            "-json",
                            "-input=false",
                            "-lock=false",
                            "-detailed-exitcode",
                            f"-var-file={var_file}",
                            f"-out={plan_file}",
                        ],
                        cwd=ws.module,
                        env=env,
                        on_line=self._say,
                        timeout=1800,
                    )
                    self._check(run, "plan", app.name, region, ok=(0, 2))
                    reading = self._show(plan_file, ws.module, env, app.name, region) if run.returncode == 2 else None
            finally:
                secrets.clear()
        reading = reading or PlanReading(drifted=())
        if reading.drifted:
            self.log.warning("%s in %s: DRIFT against release %s:", app_name, region, t["release_id"])
            for d in reading.drifted:
                self.log.warning("  %s", d.words())
        else:
            self.log.info("%s in %s: no drift: the live resources match release %s", app_name, region, t["release_id"])
        for pending in reading.pending:
            self.log.info("  planned without drift (not counted as drift): %s", pending)
        return {
            **t,
            "checked_at": now(),
            "drifted": [d.to_dict() for d in reading.drifted],
            "pending": list(reading.pending),
        }

    def _check(self, run: Any, what: str, app: str, region: str, ok: tuple[int, ...] = (0,)) -> None:
        from amirelease.operators.infrastructure import state_key

        if run.returncode in ok and not run.errors:
            return
        errors = "; ".join(str(e) for e in run.errors[:5]) or f"exit code {run.returncode}"
        raise InfrastructureError(
            f"the drift check's terraform {what} failed for {app} in {region}: {errors}",
            resource=f"terraform state {state_key(app, region)}",
            fix="read the 'terraform' lines above; nothing was changed (the plan is read-only). The next run "
            "tries again",
        )

    def _show(self, plan_file: Any, cwd: Any, env: dict[str, str], app: str, region: str) -> PlanReading:
        """``terraform show -json`` of the saved plan (a local file: no AWS call)."""
        from amirelease.drift.report import read_plan

        assert self._terraform is not None
        out = subprocess.run(
            [self._terraform.binary(), "show", "-json", str(plan_file)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if out.returncode != 0:
            raise InfrastructureError(
                f"terraform show of the drift plan failed for {app} in {region}: {out.stderr.strip()[:300]}",
                fix="read the error; nothing was changed",
            )
        return read_plan(json.loads(out.stdout))


class DriftReportOperator(ReleaseOperatorMixin, AwsBaseOperator[S3Hook]):
    """
    The drift records (``drift/<app>/<region>.json`` in the ledger bucket: first seen, last
    seen, what drifted) and the "drift found" notification when drift appears or changes. A
    plan that shows no drift clears its record. Runs whatever the plans did (a failed plan
    leaves its record as it was).

    :param results: the plan tasks' outputs (one list per toolchain).
    """

    aws_hook_class = S3Hook
    template_fields: Sequence[str] = aws_template_fields("results")
    iam_actions = ("s3:DeleteObject", "s3:GetObject", "s3:PutObject", "sns:Publish")
    pushback_changed = "Drift records may be partly updated; the next run writes them again."

    def __init__(self, *, results: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.results = results

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from amirelease.drift.report import is_news, next_record
        from amirelease.ledger import ledger_bucket

        ti = context["ti"]
        store = DriftStore(self.clients.s3(), ledger_bucket())
        at = now()
        news: dict[str, list[dict[str, Any]]] = {}
        summary = []
        for group in self.results or []:
            for result in group or []:
                if not result or result.get("skipped"):
                    continue
                app, region, stage = result["app"], result["region"], result.get("stage") or None
                from amirelease.drift.report import DriftedResource

                drifted = tuple(DriftedResource.from_dict(d) for d in result.get("drifted", []))
                previous = store.get(app, region, stage)
                record = next_record(
                    previous,
                    app=app,
                    region=region,
                    release=result,
                    drifted=drifted,
                    now=result.get("checked_at") or at,
                    run={"dag_id": ti.dag_id, "run_id": ti.run_id},
                    stage=stage,
                )
                if record is None:
                    if previous is not None:
                        store.clear(app, region, stage)
                        self.log.info(
                            "%s in %s: drift cleared (first seen %s)", app, region, previous.get("first_seen")
                        )
                    summary.append({"app": app, "region": region, "drift": False})
                    continue
                key = store.put(record)
                self.log.warning(
                    "%s in %s: drift since %s (s3://%s/%s)", app, region, record["first_seen"], ledger_bucket(), key
                )
                if is_news(previous, record):
                    news.setdefault(app, []).append(record)
                summary.append({"app": app, "region": region, "drift": True, "first_seen": record["first_seen"]})
        for app, records in news.items():
            self._tell(app, records, ti)
        return summary

    def _tell(self, app: str, records: list[dict[str, Any]], ti: Any) -> None:
        from amirelease import notify
        from amirelease.drift.report import record_words

        settings = notify.settings_for_app(app)
        if settings is None or not settings.channels:
            return
        details: list[str] = []
        for r in records:
            details.append("")
            details.append(
                f"In {r['region']} (live release {r.get('version')}, {r.get('release_id')}), "
                f"first seen {r['first_seen']}:"
            )
            details.extend(f"  - {line}" for line in record_words(r))
        notice = notify.Notice(
            event=notify.Events.DRIFT_FOUND,
            app=app,
            version=str(records[0].get("version") or ""),
            kind="drift",
            outcome="resources changed outside a release",
            run_url=notify.run_url(ti.dag_id, ti.run_id),
            ask=settings.ask,
            action="undo the change by hand, or make it part of the app's Terraform module and release; the next "
            "release re-applies the module and overwrites these changes",
            details=tuple(details),
        )
        notify.send(notice, settings, self.aws_conn_id)


__all__ = ["DriftPlanOperator", "DriftReportOperator", "DriftTargetsOperator", "drift_key", "task_id_for"]
