"""Preflight: every check that can fail, before anything is created in AWS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from botocore.exceptions import BotoCoreError, ClientError

from amirelease.constants import GIT_REF_RE, MAX_NOTES, MIN_REASON, ROLLBACK_TARGET_KEY
from amirelease.errors import AwsPushbackError, ConfigError, PreflightError, ReleaseError, aws_error_code
from amirelease.hooks.autoscaling import AutoScalingHook
from amirelease.operators.base import ReleaseOperatorMixin, group_launch_template
from amirelease.operators.lock import FINISHED

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import ImageTypeDef

    from amirelease import bundle, catalog
    from amirelease.handoffs import BundleRef, RegionNetwork, RollbackTarget
    from amirelease.ledger import Ledger


def resolve_base_image(
    ec2: EC2Client, owners: Sequence[str], name_pattern: str, architecture: str, own_account: str
) -> ImageTypeDef:
    """Newest available vendor image matching the catalog; never one of our own AMIs."""
    from amirelease.release import newest_image

    if own_account in owners:
        raise ConfigError(
            f"base_image.owners includes this account ({own_account})",
            fix="AMIs are built from a vendor base image, never from another of ours: use the vendor's owner id",
        )
    images = ec2.describe_images(
        Owners=list(owners),
        Filters=[
            {"Name": "name", "Values": [name_pattern]},
            {"Name": "state", "Values": ["available"]},
            {"Name": "architecture", "Values": [architecture]},
        ],
    )["Images"]
    images = [i for i in images if i.get("OwnerId") != own_account]
    best = newest_image(images)
    if best is None:
        raise PreflightError(
            f"no available base image named '{name_pattern}' ({architecture}) owned by {', '.join(owners)}",
            fix="correct base_image in the app's catalog file, or check the region offers that image",
        )
    if best.get("RootDeviceType") != "ebs":
        raise PreflightError(
            f"base image {best['ImageId']} is not EBS-backed", fix="amazon-ebs builds need an EBS-backed source image"
        )
    return best


def text_param(name: str, value: object, *, example: str) -> str:
    """A trigger parameter as the string the person typed (never a number or a list)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(
            f"parameter '{name}' must be text, got {type(value).__name__} {value!r}",
            fix=f"type it as text, e.g. {example}",
        )
    return value


def flag(name: str, value: object) -> bool:
    """A boolean trigger parameter, rendered as text by the templates: exactly true or false."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0", "", "none"):
        return False
    raise ConfigError(f"parameter '{name}' must be true or false, got {value!r}", fix="tick or untick the box")


def check_git_ref(value: str) -> str | None:
    if not value:
        return None
    if not GIT_REF_RE.fullmatch(value):
        raise ConfigError(
            f"git ref {value!r} is not a commit, tag or branch name",
            fix="use letters, digits and . _ / - only (at most 128), e.g. v1.4.2 or 3f9c2ab",
        )
    return value


def resolve_network(ec2: EC2Client, net: catalog.Network, region: str) -> RegionNetwork:
    """The VPC and subnets named in the catalog (Name tags), in one region."""
    from amirelease.handoffs import RegionNetwork

    vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [net.vpc]}])["Vpcs"]
    if len(vpcs) != 1:
        raise PreflightError(
            f"{'no' if not vpcs else len(vpcs)} VPC(s) named '{net.vpc}' in {region}",
            fix="tag exactly one VPC with Name=" + net.vpc + " or correct network.vpc in the app's catalog file",
        )
    vpc = vpcs[0]
    subnets = ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}, {"Name": "tag:Name", "Values": list(net.subnets)}]
    )["Subnets"]
    by_name: dict[str, str] = {}
    for s in subnets:
        name = next((t["Value"] for t in s.get("Tags", []) if t["Key"] == "Name"), "")
        by_name.setdefault(name, s["SubnetId"])
    missing = [n for n in net.subnets if n not in by_name]
    if missing:
        raise PreflightError(
            f"subnet(s) {', '.join(missing)} not found in VPC {net.vpc} ({vpc['VpcId']}) in {region}",
            fix="create them or correct network.subnets in the app's catalog file",
        )
    return RegionNetwork(
        region=region,
        vpc_id=vpc["VpcId"],
        vpc_cidr=vpc["CidrBlock"],
        subnet_ids=tuple(by_name[n] for n in net.subnets),
    )


@dataclass(frozen=True)
class Sources:
    """What a release is built from: the app as its bundle defines it, the folder it was read
    from, the packed bundle, the git source (None for a central-catalog app) and, for a
    re-release, the bundle of the release it repeats."""

    app: catalog.App
    root: Path
    packed: bundle.Bundle
    source: dict[str, Any] | None
    source_bundle: BundleRef | None


class ReleasePreflightOperator(ReleaseOperatorMixin, AwsBaseOperator[AutoScalingHook]):
    """
    Validate a release (or a rollback's re-release) and return its plan.

    A rollback's preflight first resolves what it re-releases and what it replaces
    (``rollback.resolve_target``) and pushes that as the XCom ``rollback_target``, which
    ``mark_rolled_back`` re-checks under the lock: one task start, not two, before the lock.

    Checks the parameters, the app's catalog entry, the ledger bucket, the network, the
    target groups, the newest vendor base image and every Vault secret the bake and the
    Terraform module need. Nothing in AWS or Vault is changed here. The plan (plain data, no
    secret) is what every later task acts on. Its bundle digest is computed from this
    worker's checkout (a release) or is the digest of the release a rollback repeats.

    :param app: the application (a catalog name).
    :param version: the version to release (ASCII semantic version); ignored for a re-release.
    :param git_ref: optional commit, tag or branch the release was cut from.
    :param notes: optional release notes (kept in the ledger).
    :param triggered_by: who triggered the run (kept in the ledger).
    :param rollback: for a rollback, what its trigger form asked (rendered): ``target``,
        ``reason``, ``confirm_rolled_back``, ``replaces`` (``rollback.resolve_target``).
    :param rebuild: bake a version that was already released again, on purpose (true/false).
    :param rebuild_reason: why the rebuild (at least 10 characters; kept in the ledger).
    :param vault_conn_id: the Vault connection (AppRole) the secrets are read with.
    """

    aws_hook_class = AutoScalingHook
    template_fields: Sequence[str] = aws_template_fields(
        "app", "version", "git_ref", "notes", "triggered_by", "rollback", "rebuild", "rebuild_reason"
    )
    ui_color = "#e8f4fa"
    pushback_changed = "Nothing was changed in AWS: preflight only reads."
    iam_actions = (
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:DescribeInstanceRefreshes",
        "ec2:DescribeImages",
        "ec2:DescribeInstances",  # a rollback: the images the groups' instances run (what it replaces)
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
        "s3:GetObject",
        "s3:ListBucket",
        "s3:PutObject",  # the release bundle; and, when AWS outlasted every retry, the failed attempt's ledger record
        "sts:AssumeRole",  # checks that the workers may assume the app's role (catalog aws.role_arn)
    )

    def __init__(
        self,
        *,
        app: str,
        version: str = "",
        git_ref: str | None = None,
        notes: str | None = None,
        triggered_by: str | None = None,
        rollback: dict[str, Any] | None = None,
        rebuild: bool | str = False,
        rebuild_reason: str | None = None,
        vault_conn_id: str = "vault_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.version = version
        self.git_ref = git_ref
        self.notes = notes
        self.triggered_by = triggered_by
        self.rollback = rollback
        self._resolved: RollbackTarget | None = None  # a rollback's target, once resolved
        self.rebuild = rebuild
        self.rebuild_reason = rebuild_reason
        self.vault_conn_id = vault_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from amirelease.retry import pushback_error

        try:
            return self._preflight(context)
        except ClientError as exc:
            error = pushback_error(exc, step=self.task_id, region=self.region_name, changed=self.pushback_changed)
            if error is None:
                raise
            self._record_pushback(error, context)
            raise error from None

    def _record_pushback(self, error: AwsPushbackError, context: Context) -> None:
        """AWS outlasted every retry of this release before anything was built: on the last try,
        put the attempt in the ledger (outcome failed, the reason in words) so that the Releases
        page shows it. Only for a known app and a valid version (nothing is written for bad input)."""
        from amirelease import catalog
        from amirelease.ledger import Ledger, failed_before_building, ledger_bucket
        from amirelease.release import release_id

        ti = context["ti"]
        if ti.try_number <= (self.retries or 0):
            self.log.warning(
                "AWS pushed back (try %d of %d): this step is retried", ti.try_number, (self.retries or 0) + 1
            )
            return
        target = self._resolved
        if self.rollback is not None and target is None:
            return  # a rollback that AWS stopped before its target was known: no version to record
        try:
            app = catalog.known_app(text_param("app", self.app, example="demo-web")).name
            version = target.version if target else catalog.validate_version(str(self.version or ""))
        except ConfigError:
            return
        run_id = context["run_id"]
        start = getattr(context.get("dag_run"), "start_date", None)
        record = failed_before_building(
            app=app,
            version=version,
            release_id=release_id(app, version, run_id),
            dag_id=ti.dag_id,
            run_id=run_id,
            reason=f"{type(error).__name__}: {error}",
            started_at=start.strftime("%Y-%m-%dT%H:%M:%SZ") if start is not None else None,
            triggered_by=str(self.triggered_by or "") or None,
            notes=str(self.notes or "") or None,
            re_release_of=target.target_release_id if target else None,
        )
        try:
            key = Ledger(self.clients.s3(), ledger_bucket()).put(record)
        except (ClientError, BotoCoreError, ReleaseError) as exc:
            self.log.error("The failed attempt could not be written to the ledger either: %s", exc)
            return
        self.log.info("The failed attempt is in the ledger: s3://%s/%s (nothing was built)", ledger_bucket(), key)

    def _preflight(self, context: Context) -> dict[str, Any]:
        from amirelease import bundle, catalog, contained
        from amirelease.aws import assume_app_role
        from amirelease.handoffs import BundleRef, ReleasePlan
        from amirelease.ledger import Ledger, ledger_bucket
        from amirelease.release import ami_name, files_digest, release_id

        app_name = text_param("app", self.app, example="demo-web")
        notes = text_param("notes", self.notes, example="INC-123: fixes the login page")
        if len(notes) > MAX_NOTES:
            raise ConfigError(f"notes are {len(notes)} characters long", fix=f"keep them under {MAX_NOTES}")
        target = None
        if self.rollback is None:
            version = catalog.validate_version(text_param("version", self.version, example=catalog.VERSION_EXAMPLE))
            git_ref = check_git_ref(text_param("git_ref", self.git_ref, example="v1.4.2"))
        ledger = Ledger(self.clients.s3(), ledger_bucket())
        ledger.check()
        if self.rollback is not None:  # after the ledger check: the target is read from the ledger
            target = self._resolve_rollback(app_name, ledger, context)
            version, git_ref = target.version, target.git_ref
        run_id = context["run_id"]
        rebuild_of, rebuild_reason = (
            (None, None) if target else self._one_release_per_version(ledger, app_name, version, context)
        )

        with TemporaryDirectory(prefix="release-preflight-") as tmp:
            src = (
                self._plan_release(app_name, version, git_ref, Path(tmp))
                if target is None
                else self._plan_re_release(target, app_name, version, Path(tmp))
            )
            app, root, packed, source, source_bundle = src.app, src.root, src.packed, src.source, src.source_bundle
            contained.check_module(
                root / app.infrastructure.module, app.name, contained.Allowances.from_entry({"allow": app.allow})
            )
            entry = catalog.read_entry(
                root / "apps" / f"{app.name}.yaml" if root != catalog.include_dir() else Path(app.source_file)
            )
            cookbook_versions = catalog.cookbook_versions(app.run_list, root / "cookbooks")
            packer_digest = files_digest(catalog.packer_file_paths(app.platform, root))

        own_account = self.hook.account_id
        networks, base = self._check_aws(app, own_account)

        if app.aws_role:
            assume_app_role(self.hook, app.home_region, app.aws_role, app.name, "preflight")
            self.log.info(
                "AWS: %s's Packer and Terraform run as its own role %s (assumed per release, session tag App=%s)",
                app.name,
                app.aws_role,
                app.name,
            )
        else:
            self.log.info(
                "AWS: %s's Packer and Terraform run with the workers' own role (no aws.role_arn in its central entry)",
                app.name,
            )
        self._check_secrets(app)

        rid = release_id(app.name, version, run_id)
        plan = ReleasePlan(
            app=app.name,
            version=version,
            release_id=rid,
            ami_name=ami_name(app.name, version, rid),
            cookbook_versions=cookbook_versions,
            packer_template_digest=packer_digest,
            source_ami=base["ImageId"],
            source_ami_name=base.get("Name", ""),
            networks=tuple(networks),
            account_id=own_account,
            pipeline_run=run_id,
            bundle=BundleRef(key=bundle.bundle_key(app.name, rid), sha256=packed.sha256),
            catalog_entry=entry,
            git_ref=git_ref,
            notes=notes or None,
            triggered_by=text_param("triggered_by", self.triggered_by, example="alice") or None,
            re_release_of=target.target_release_id if target else None,
            source_bundle=source_bundle,
            source=source,
            rebuild_of=rebuild_of,
            rebuild_reason=rebuild_reason,
        )
        # stored now, so that the Terraform check and the bake can start side by side, both from these bytes
        bundle.BundleStore(self.clients.s3(), ledger_bucket()).put(plan.bundle.key, packed)
        self.log.info(
            "Release plan: %s %s, release id %s, run list %s, bundle %s… (%d files), base image %s, regions %s",
            plan.app,
            plan.version,
            plan.release_id,
            " ".join(plan.run_list),
            packed.sha256[:16],
            len(packed.files),
            plan.source_ami,
            ", ".join(plan.image_regions),
        )
        return plan.to_xcom()

    def _resolve_rollback(self, app_name: str, ledger: Ledger, context: Context) -> RollbackTarget:
        """A rollback: the release it re-releases and the one it replaces, proposed before the
        lock and kept (XCom ``rollback_target``) for ``mark_rolled_back`` to re-check under it."""
        from amirelease.operators.rollback import resolve_target

        self._resolved = resolve_target(self.clients, ledger, app_name, self.rollback or {}, self.log)
        context["ti"].xcom_push(key=ROLLBACK_TARGET_KEY, value=self._resolved.to_xcom())
        return self._resolved

    def _plan_release(self, app_name: str, version: str, git_ref: str | None, tmp: Path) -> Sources:
        """A new release: the app's sources from its repository at the ref (or the central
        catalog), packed into the bundle every later task reads."""
        from amirelease import bundle, catalog

        central = catalog.known_app(app_name)
        if central.source is not None:
            app, root, packed, source = self._from_git(central, git_ref, tmp)
            sources_ = Sources(app, root, packed, source, None)
        else:
            app = catalog.get_app(app_name)
            root = catalog.include_dir()
            sources_ = Sources(app, root, bundle.pack_app(app, root, Path(app.source_file)), None, None)
            if git_ref:
                self.log.info(
                    "%s is defined in the central catalog (include/), not in a git repository: git_ref %r "
                    "is recorded as a label only; nothing is fetched",
                    app.name,
                    git_ref,
                )
        self.log.info(
            "Preflight for %s %s (%s, toolchain %s): no AWS resource is created here",
            app.name,
            version,
            app.platform,
            app.toolchain,
        )
        return sources_

    def _plan_re_release(self, target: RollbackTarget, app_name: str, version: str, tmp: Path) -> Sources:
        """A re-release: exactly the recorded release's bundle (entry, cookbooks, Packer files,
        module), checked to repack to the same digest; no git ref is resolved again."""
        from amirelease import bundle
        from amirelease.ledger import ledger_bucket

        if target.app != app_name:
            raise PreflightError(f"rollback target is an app '{target.app}', not '{app_name}'", fix="retrigger")
        bundle.unpack(
            bundle.BundleStore(self.clients.s3(), ledger_bucket()).get(target.bundle.key, target.bundle.sha256), tmp
        )
        app = bundle.load_app(tmp, app_name)
        source = bundle.read_source(tmp)
        packed = bundle.pack_app(app, tmp)
        if packed.sha256 != target.bundle.sha256:
            raise PreflightError(
                f"repacking the bundle of {target.target_release_id} gave another digest",
                fix="report this: bundles are deterministic; the stored bundle may be damaged",
            )
        self.log.info(
            "Re-release of %s %s (%s) from its bundle %s…: its catalog entry, cookbooks, "
            "Packer files and Terraform module%s, on today's vendor base image; no git ref is resolved again",
            app.name,
            version,
            target.target_release_id,
            target.bundle.sha256[:16],
            f" (commit {source['commit'][:12]} of {source['repository']})" if source else "",
        )
        return Sources(app, tmp, packed, source, target.bundle)

    def _check_aws(self, app: catalog.App, own_account: str) -> tuple[list[RegionNetwork], ImageTypeDef]:
        """Read-only: each region's network, each target group, and today's vendor base image."""
        networks = [resolve_network(self.clients.ec2(region), app.network, region) for region in app.regions]
        for t in app.targets:
            self._check_target(app, t)
        base = resolve_base_image(
            self.clients.ec2(app.home_region), app.base_image_owners, app.base_image_name, app.architecture, own_account
        )
        self.log.info(
            "Base image: %s %s (owner %s, created %s)",
            base["ImageId"],
            base.get("Name"),
            base.get("OwnerId"),
            base.get("CreationDate"),
        )
        return networks, base

    def _check_secrets(self, app: catalog.App) -> None:
        """Every bake and Terraform secret key the app names is in Vault (the values are read,
        counted and dropped: they reach the tools at deploy time, never the plan)."""
        from amirelease.hooks.vault import PipelineSecrets

        vault = PipelineSecrets(self.vault_conn_id)
        for label, refs in (("bake", app.secrets), ("Terraform", app.infrastructure.secrets)):
            found = vault.read(app.name, refs)
            self.log.info(
                "Vault: %d %s secret key(s) present for %s: %s",
                len(found.values),
                label,
                app.name,
                ", ".join(sorted(found.values)) or "-",
            )
            found.clear()

    def _one_release_per_version(
        self, ledger: Ledger, app_name: str, version: str, context: Context
    ) -> tuple[str | None, str | None]:
        """A version is released once: refuse a second release of a version that has a succeeded
        release in the ledger, or that another run is releasing right now (it holds the app's
        lock), unless ``rebuild`` asks for it on purpose. Returns (rebuild_of, rebuild_reason).

        A version whose releases all failed may be released again. Two runs of one version that
        both pass here before either holds the lock are told apart under the lock
        (ReleaseLockSensor re-checks the ledger once it holds it)."""
        from amirelease import catalog
        from amirelease.ledger import ReleaseLock, already_released, released_words, ways_on

        app = catalog.known_app(app_name).name
        rebuild = flag("rebuild", self.rebuild)
        reason = text_param("rebuild_reason", self.rebuild_reason, example="CVE-2026-1234: today's base image").strip()
        existing = already_released(ledger.history(app), version)
        if rebuild:
            if existing is None:
                raise ConfigError(
                    f"'rebuild' is ticked, but {app} {version} has no succeeded release to rebuild",
                    fix="untick 'rebuild' to release it as a new version (a version whose releases all failed may "
                    "simply be released again)",
                )
            if len(reason) < MIN_REASON:
                raise ConfigError(
                    f"a rebuild of {app} {version} needs a reason of at least {MIN_REASON} characters",
                    fix="say why the same version is baked again (e.g. 'CVE-2026-1234: today's base image'); it goes "
                    "in the ledger",
                )
            self.log.info(
                "Rebuild on purpose: %s; it is baked again from today's source and base image and recorded as a "
                "rebuild of %s. Reason: %s",
                released_words(app, existing),
                existing["release_id"],
                reason,
            )
        else:
            if reason:
                self.log.info("A rebuild reason was given but 'rebuild' is not ticked: this is a plain release")
            if existing is not None:
                raise PreflightError(
                    released_words(app, existing) + "; nothing was built for this run", fix=ways_on(version)
                )
        holder = ReleaseLock(ledger.s3, ledger.bucket, app).holder()
        if holder and holder.get("version") == version and holder.get("run_id") != context["run_id"]:
            try:
                state = context["ti"].get_dagrun_state(dag_id=holder["dag_id"], run_id=holder["run_id"])
            except Exception as exc:  # noqa: BLE001 - an unknown run is as good as finished (as the lock sees it)
                self.log.info("Lock holder run %s not found (%s)", holder.get("run_id"), type(exc).__name__)
                state = None
            if state is not None and str(state) not in FINISHED:
                raise PreflightError(
                    f"{app} {version} is being released right now by run {holder['dag_id']}/{holder['run_id']} "
                    f"(it holds the app's release lock since {holder.get('acquired_at')}); nothing was built for "
                    "this run",
                    fix="follow that run: when it succeeds the version is released; if it fails, trigger again",
                )
        return (str(existing["release_id"]), reason) if rebuild and existing is not None else (None, None)

    def _from_git(
        self, central: catalog.Entry, git_ref: str | None, tmp: Path
    ) -> tuple[catalog.App, Path, bundle.Bundle, dict[str, Any]]:
        """Resolve the ref to one commit, then build the bundle from exactly that commit."""
        from amirelease import sources

        source = sources.resolve(central, git_ref)
        self.log.info(
            "Source: %s %s '%s' is commit %s (folder %s)",
            source["repository"],
            source["ref_kind"],
            source["ref"],
            source["commit"],
            source["path"],
        )
        app, root, packed = sources.build(central, source, tmp)
        return app, root, packed, source

    def _check_target(self, app: catalog.App, t: catalog.Target) -> None:
        asg = self.clients.autoscaling(t.region)
        try:
            group = asg.describe_group(t.auto_scaling_group)
        except ClientError as exc:
            raise PreflightError(
                f"cannot describe Auto Scaling group '{t.auto_scaling_group}' in {t.region}: {aws_error_code(exc)}",
                fix="check the AWS connection's permissions (autoscaling:Describe*) and region",
            ) from None
        if group is None:
            self.log.info(
                "Target %s/%s does not exist yet: the app's Terraform module creates it in this release",
                t.region,
                t.auto_scaling_group,
            )
            return
        spec = group_launch_template(group)
        if not spec or t.launch_template not in (spec.get("LaunchTemplateName"), spec.get("LaunchTemplateId")):
            used = (spec or {}).get("LaunchTemplateName") or group.get("LaunchConfigurationName") or "nothing"
            raise PreflightError(
                f"group '{t.auto_scaling_group}' in {t.region} uses launch template '{used}', "
                f"not '{t.launch_template}'",
                resource=app.source_file,
                fix="point targets[].launch_template at the template the group uses (launch configurations are "
                "not supported: migrate the group to a launch template)",
            )
        active = asg.active_refresh(t.auto_scaling_group)
        if active:
            self.log.warning(
                "Group %s already has instance refresh %s in state %s; the roll-out will attach to it only if it is "
                "this run's, otherwise fail",
                t.auto_scaling_group,
                active["InstanceRefreshId"],
                active["Status"],
            )
        self.log.info(
            "Target ok: %s/%s (%d instances, template %s)",
            t.region,
            t.auto_scaling_group,
            len(group.get("Instances", [])),
            t.launch_template,
        )
