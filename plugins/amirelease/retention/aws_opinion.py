"""A second opinion from AWS before a deregistration: ``DescribeImageReferences``.

AWS's own list of what references an image: instances (here: only live ones, states pending,
running, shutting-down, stopping, stopped), launch templates (the newest ``version_depth``
versions of each, policy ``protections.aws_references.version_depth``, default 10), SSM
parameters and Image Builder recipes. It does **not** cover Auto Scaling groups or launch
configurations, nor instances of other accounts: those only our own reference model covers.

Asked only for the images a run is about to deregister, in batches of 10 (the API's limit)
side by side on a small pool. A reference keeps the image (the report names it), and every
such image is a *disagreement*: our model found it unused. Where the API does not answer
(an endpoint without it, e.g. stock moto), the run says so and relies on its own model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from amirelease.constants import LIVE_INSTANCE_STATES
from amirelease.errors import aws_error_code
from amirelease.retention.decide import Action, Plan

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

BATCH = 10  # DescribeImageReferences: at most 10 image ids per call
PAGE = 1000
LIVE = list(LIVE_INSTANCE_STATES)  # the instance states that keep an image in use: constants.py
# answers that mean "this endpoint does not serve the call", not "it failed"
UNSUPPORTED = frozenset({"InvalidAction", "UnsupportedOperation", "NotImplemented", "UnknownOperationException"})


@dataclass(frozen=True)
class Opinion:
    available: bool
    references: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # image id -> ARNs
    note: str | None = None
    checked: int = 0

    def as_report(self, kept: int) -> dict[str, Any]:
        return {
            "available": self.available,
            "checked": self.checked,
            "referenced": len(self.references),
            "disagreements": kept,
            "note": self.note,
        }


def _batch(ec2: EC2Client, ids: list[str], depth: int) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    kwargs: dict[str, Any] = {
        "ImageIds": ids,
        "IncludeAllResourceTypes": True,
        "ResourceTypes": [
            {
                "ResourceType": "ec2:Instance",
                "ResourceTypeOptions": [{"OptionName": "state-name", "OptionValues": LIVE}],
            },
            {
                "ResourceType": "ec2:LaunchTemplate",
                "ResourceTypeOptions": [{"OptionName": "version-depth", "OptionValues": [str(depth)]}],
            },
        ],
        "MaxResults": PAGE,
    }
    seen: set[str] = set()
    while True:
        page = ec2.describe_image_references(**kwargs)
        for ref in page.get("ImageReferences", []):
            found.setdefault(ref["ImageId"], []).append(ref.get("Arn") or ref.get("ResourceType", "?"))
        token = page.get("NextToken")
        if not token or token in seen:
            return found
        seen.add(token)
        kwargs["NextToken"] = token


def ask(ec2: EC2Client, image_ids: Sequence[str], *, depth: int, workers: int = 4) -> Opinion:
    ids = list(dict.fromkeys(image_ids))
    if not ids:
        return Opinion(available=True)
    batches = [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]
    try:
        with ThreadPoolExecutor(
            max_workers=max(1, min(workers, len(batches))), thread_name_prefix="retention-refs"
        ) as pool:
            results = list(pool.map(lambda b: _batch(ec2, b, depth), batches))
    except ClientError as exc:
        code = aws_error_code(exc)
        if code in UNSUPPORTED:
            return Opinion(available=False, note=f"DescribeImageReferences is not served here ({code})")
        raise
    except BotoCoreError as exc:  # e.g. an endpoint that answers an unknown action with garbage
        if type(exc).__name__ == "ResponseParserError":
            return Opinion(available=False, note=f"DescribeImageReferences is not served here ({type(exc).__name__})")
        raise
    merged: dict[str, tuple[str, ...]] = {}
    for result in results:
        for image_id, arns in result.items():
            merged[image_id] = tuple(sorted({*merged.get(image_id, ()), *arns}))
    return Opinion(available=True, references=merged, checked=len(ids))


def promote_deferred(plan: Plan, n: int) -> Plan:
    """(pure) The next ``n`` deferred images (oldest due first, as the drain orders them) take the
    deregistration slots that images AWS keeps left free, so a kept image at the head of the queue
    never stalls the drain."""
    if n <= 0:
        return plan
    waiting = sorted(
        (d for d in plan.decisions if d.action is Action.DEFERRED),
        key=lambda d: (d.due or plan.now, d.created or plan.now, d.image_id),
    )
    chosen = {d.image_id for d in waiting[:n]}
    if not chosen:
        return plan
    decisions = tuple(
        replace(
            d,
            action=Action.DEREGISTER,
            reasons=(
                f"deregistered: marked, due {d.due:%Y-%m-%d}, still unused and unprotected "
                "(took the slot of an image AWS found referenced)",
            ),
        )
        if d.image_id in chosen and d.due is not None
        else d
        for d in plan.decisions
    )
    return replace(plan, decisions=decisions)


def second_opinion(
    ec2: EC2Client, plan: Plan, *, depth: int, workers: int = 4, max_rounds: int = 20
) -> tuple[Plan, Opinion, int]:
    """Ask AWS about the images to deregister; each image it keeps frees a slot for the next
    deferred one, which is asked about in turn (at most ``max_rounds`` rounds). Returns the plan,
    the merged opinion and how many images AWS kept (the disagreements)."""
    asked: set[str] = set()
    references: dict[str, tuple[str, ...]] = {}
    kept_total = 0
    opinion = Opinion(available=True)
    for _ in range(max_rounds):
        ids = [d.image_id for d in plan.of(Action.DEREGISTER) if d.image_id not in asked]
        if not ids:
            break
        opinion = ask(ec2, ids, depth=depth, workers=workers)
        asked.update(ids)
        if not opinion.available:
            return plan, opinion, kept_total
        references.update(opinion.references)
        plan, kept = keep_referenced(plan, opinion)
        kept_total += kept
        if not kept:
            break
        plan = promote_deferred(plan, kept)
    return plan, Opinion(available=True, references=references, checked=len(asked), note=opinion.note), kept_total


def keep_referenced(plan: Plan, opinion: Opinion) -> tuple[Plan, int]:
    """(the plan with every image AWS finds referenced kept, how many): pure."""
    kept = 0
    decisions = []
    for d in plan.decisions:
        arns = opinion.references.get(d.image_id)
        if d.action is Action.DEREGISTER and arns:
            shown = ", ".join(arns[:3]) + (f" (+{len(arns) - 3} more)" if len(arns) > 3 else "")
            d = replace(
                d,
                action=Action.KEEP,
                snapshot_ids=(),
                protections=(*d.protections, f"referenced according to AWS: {shown}"),
                reasons=(f"kept: AWS DescribeImageReferences names {shown} (our own check found no use)",),
            )
            kept += 1
        decisions.append(d)
    return replace(plan, decisions=tuple(decisions)), kept
