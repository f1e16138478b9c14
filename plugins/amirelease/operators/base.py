"""Shared pieces of the release operators (Amazon-provider style)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import TagTypeDef

    from amirelease.aws import AwsClients
    from amirelease.hooks.terraform import TerraformHook

NOTHING_CHANGED = "Nothing was changed in AWS by this step."


def _in_words(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn AWS throttling or a 5xx that outlasted every client retry into AwsPushbackError
    (which call, where, what was changed, what to do) instead of a botocore traceback."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except ClientError as exc:
            from amirelease.retry import pushback_error  # here, not at DAG parse

            error = pushback_error(
                exc,
                step=getattr(self, "task_id", type(self).__name__),
                region=getattr(self, "region_name", None),
                changed=self.pushback_changed,
            )
            if error is None:
                raise
            self.log.error("%s", error)
            raise error from None

    wrapper._in_words = True  # type: ignore[attr-defined]
    return wrapper


def first_start(context: Any) -> Any:
    """A rescheduled task's first start in this try (the apply waiting for the smoke test, the lock
    waiting for another release): Airflow restarts ``start_date`` at each poke. None otherwise."""
    try:
        return context["ti"].get_first_reschedule_date(context)
    except Exception:  # noqa: BLE001 - not rescheduled, or a context without a task instance
        return None


def report_phase(context: Any, started: Any, log: Any, tools: Mapping[str, float] | None = None) -> None:
    """Push this step's phase (phases.py) from ``started`` until now; a failure only warns."""
    from datetime import UTC, datetime

    from amirelease.phases import PHASE_KEY, phase

    try:
        context["ti"].xcom_push(key=PHASE_KEY, value=phase(started or datetime.now(UTC), datetime.now(UTC), tools))
    except Exception as exc:  # noqa: BLE001 - a missing time never changes the step's outcome
        log.warning("This step's time was not reported for the ledger record: %s", exc)


def _timed(method: Callable[..., Any]) -> Callable[..., Any]:
    """Report the step's time for its ledger record (phases.py): an XCom ``phase`` when
    ``execute`` ends, successful or not; nothing at a deferral (the step has not ended). A
    rescheduled step's phase starts at its first poke; its tools' seconds are the last poke's
    (Airflow clears a task's XComs at each poke)."""

    @functools.wraps(method)
    def wrapper(self: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        from datetime import UTC, datetime

        from airflow.sdk.exceptions import TaskDeferred

        self._phase_started = first_start(context) or datetime.now(UTC)
        ended = True
        try:
            return method(self, context, *args, **kwargs)
        except TaskDeferred:
            ended = False
            raise
        finally:
            if ended:
                report_phase(context, self._phase_started, self.log, self.tool_seconds())

    return wrapper


class ReleaseOperatorMixin:
    """What every operator of this package has besides AwsBaseOperator.

    ``clients``: the package's one way to get AWS clients (aws.py), with the operator's
    connection settings, in any region (an app's groups may live in several).
    ``iam_actions``: the IAM actions the operator may call, printed as a policy by
    ``python -m amirelease.cli iam-policy`` and checked against what the end-to-end tests
    really called (tests/test_zz_iam_policy.py). ``iam_role``: which worker role needs them.
    """

    aws_conn_id: str | None
    verify: Any
    log: Any
    botocore_config: dict[str, Any] | None
    region_name: str | None

    iam_role: ClassVar[str] = "deploy"
    iam_actions: ClassVar[tuple[str, ...]] = ()
    # What the person on call should know about AWS's state when AWS refused this step.
    pushback_changed: ClassVar[str] = (
        "This step may have changed AWS before the refusal; a retry of it or the next release adopts what it made."
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("execute", "execute_complete"):
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "_in_words", False):
                setattr(cls, name, _in_words(_timed(method) if name == "execute" else method))

    def tool_seconds(self) -> dict[str, float]:
        """The seconds this step's tools took (Packer, each Terraform command), for its phase."""
        return {}

    def phase_so_far(self) -> dict[str, Any]:
        """This step's phase from its start until now (phases.py)."""
        from datetime import UTC, datetime

        from amirelease.phases import phase

        started = getattr(self, "_phase_started", None) or datetime.now(UTC)
        return phase(started, datetime.now(UTC), self.tool_seconds())

    @property
    def clients(self) -> AwsClients:
        from amirelease.aws import AwsClients

        return AwsClients(
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
        )

    @property
    def _hook_parameters(self) -> dict[str, Any]:
        """AwsBaseOperator's hook parameters, its botocore config with the deployment's retry
        policy merged in (the hook itself is the provider's, final)."""
        from amirelease.aws import retry_config

        params: dict[str, Any] = {**super()._hook_parameters}  # type: ignore[misc]
        params["config"] = retry_config(self.aws_conn_id, self.botocore_config)
        return params


class TerraformTaskMixin:
    """For operators that run Terraform (hooks/terraform.py): the Vault connection its secrets
    come from, the hook kept so that ``on_kill`` interrupts Terraform (it then releases its state
    lock), and Terraform's lines in the task log. List before AwsBaseOperator."""

    log: Any

    def __init__(self, *, vault_conn_id: str = "vault_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vault_conn_id = vault_conn_id
        self._terraform: TerraformHook | None = None

    def on_kill(self) -> None:
        if self._terraform is not None:
            self._terraform.interrupt()

    def tool_seconds(self) -> dict[str, float]:
        """Each Terraform command's seconds in this step (summed over its regions)."""
        return {f"terraform {cmd}": s for cmd, s in (self._terraform.seconds if self._terraform else {}).items()}

    def _say(self, line: str) -> None:
        self.log.info("terraform | %s", line)


class Ec2ClientHookMixin:
    """For operators whose ``aws_hook_class`` is EC2Hook: build it as a client (the
    provider's EC2Hook defaults to a boto3 resource). List before AwsBaseOperator."""

    @property
    def _hook_parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {**super()._hook_parameters, "api_type": "client_type"}  # type: ignore[misc]
        return params


def tags_dict(tags: Iterable[TagTypeDef] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


def tag_list(tags: Mapping[str, str]) -> list[TagTypeDef]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def group_launch_template(group: Mapping[str, Any]) -> dict[str, Any] | None:
    """The launch template spec a group uses (plain or in a mixed-instances policy)."""
    if group.get("LaunchTemplate"):
        spec: dict[str, Any] = group["LaunchTemplate"]
        return spec
    mip = group.get("MixedInstancesPolicy") or {}
    found: dict[str, Any] | None = (mip.get("LaunchTemplate") or {}).get("LaunchTemplateSpecification")
    return found
