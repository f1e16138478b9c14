"""Names shared by the DAGs, the operators, the CLI and the retention code: tag keys,
resource states and task ids. One place, so a rename is one edit the type checker follows."""

from __future__ import annotations

import re
from typing import Final

# --- AMI tags: the release record on AWS (never a secret) ------------------------------
TAG_APP: Final = "App"
TAG_VERSION: Final = "Version"
TAG_RELEASE_ID: Final = "ReleaseId"
TAG_SOURCE_AMI: Final = "SourceAmi"
TAG_PLATFORM: Final = "Platform"
TAG_RUN_LIST: Final = "RunList"
TAG_RUN_LIST_DIGEST: Final = "RunListDigest"
TAG_PIPELINE_RUN: Final = "PipelineRun"
TAG_BUILT_BY: Final = "BuiltBy"
TAG_RE_RELEASE_OF: Final = "ReReleaseOf"
TAG_REBUILD_OF: Final = "RebuildOf"  # a rebuild on purpose of a released version: the release it bakes again
TAG_GIT_REF: Final = "GitRef"
TAG_SOURCE_REPOSITORY: Final = "SourceRepository"  # git-sourced apps: the repository URL, no credentials
TAG_SOURCE_COMMIT: Final = "SourceCommit"  # ... and the full commit the bundle was built from
TAG_TEMPLATE_DIGEST: Final = "PackerTemplateDigest"
TAG_BUNDLE_DIGEST: Final = "BundleDigest"
TAG_STATUS: Final = "ReleaseStatus"  # baked -> released | failed
TAG_FAILED_TASK: Final = "FailedTask"
TAG_OUTCOME_AT: Final = "ReleaseOutcomeAt"
TAG_NAME: Final = "Name"
TAG_PURPOSE: Final = "Purpose"  # on what a task launches: PURPOSE_BUILDER | PURPOSE_SMOKE
BUILT_BY: Final = "ami-release-pipeline"

# Forensic hold (placed by a rollback on the AMI it replaces; retention never touches it).
HOLD_TAG: Final = "ForensicHold"
HOLD_REASON_TAG: Final = "ForensicHoldReason"

# What our tasks launch, found again by these tags on a retry or after a kill.
PURPOSE_BUILDER: Final = "ami-bake-builder"
PURPOSE_SMOKE: Final = "ami-smoke-test"

# --- States -------------------------------------------------------------------------------
# EC2 instances that exist (all but terminated): they keep their AMI "in use".
LIVE_INSTANCE_STATES: Final = ("pending", "running", "shutting-down", "stopping", "stopped")
# Instances of ours that still need terminating (shutting-down is already on its way).
TERMINABLE_INSTANCE_STATES: Final = ("pending", "running", "stopping", "stopped")
# Instance refreshes that still hold the group (AWS allows one at a time).
ACTIVE_REFRESH_STATES: Final = ("Pending", "InProgress", "Cancelling", "RollbackInProgress", "Baking")
# Refreshes that ended without replacing the instances as asked.
FAILED_REFRESH_STATES: Final = ("Failed", "Cancelled", "RollbackSuccessful", "RollbackFailed")


# --- The DAGs ------------------------------------------------------------------------------
# How a promotion ends when its gate was not passed (record.py); the roll-forward and the
# notifications treat these as "nothing changed in that stage"
NOT_PROMOTED: Final = ("rejected", "timed out", "soak failed", "not approved")
SOAK_BY: Final = "soak (automatic check)"  # who "answered" a gate whose soak decided


class DagIds:
    RELEASE: Final = "ami_release"
    ROLLBACK: Final = "ami_rollback"
    PROMOTE: Final = "ami_promote"  # a verified release to the app's next stage, behind a gate
    RETENTION: Final = "ami_retention"
    RETENTION_MANUAL: Final = "ami_retention_manual"
    DRIFT: Final = "ami_drift"


DEFAULT_AWS_CONN_ID: Final = "aws_default"
CHEF_ATTRIBUTES: Final = "ami_release"  # node['ami_release']: the release identity the cookbooks read

# --- What a person types into a trigger form: the form's Param and preflight check the same rule
GIT_REF_CHARS: Final = r"[A-Za-z0-9._/-]{1,128}"
# JSON-schema pattern for the form (the browser's and Airflow's validators): whole text, no
# trailing newline (``$`` would accept one in Python's re, and a ref never ends in one)
GIT_REF_PATTERN: Final = rf"^{GIT_REF_CHARS}(?![\s\S])"
GIT_REF_RE: Final = re.compile(GIT_REF_CHARS, re.ASCII)  # with fullmatch
# a rollback's target or the release it replaces: a version or a release id
RELEASE_REF_PATTERN: Final = r"^[A-Za-z0-9.-]{1,128}(?![\s\S])"
MAX_NOTES: Final = 500  # release notes, rollback and rebuild reasons: kept in the ledger and on the page
MIN_REASON: Final = 10  # a rollback's or a rebuild's reason


# --- Task ids of the release pipeline (pipeline.py wires them, record.py reads them) ------
class TaskIds:
    MARK_ROLLED_BACK: Final = "mark_rolled_back"
    PREFLIGHT: Final = "preflight"
    CHECK_INFRA: Final = "check_infrastructure"  # on the app's toolchain queue (routing.py)
    LOCK: Final = "release_lock"
    BAKE: Final = "bake"  # on the app's toolchain queue
    SMOKE: Final = "smoke_test"
    APPLY_INFRA: Final = "apply_infrastructure"  # on the app's toolchain queue
    ROLL_OUT: Final = "roll_out"
    WAIT: Final = "wait_for_refresh"
    VERIFY: Final = "verify"
    RECORD: Final = "record"
    APPROVE: Final = "approve"  # ami_promote: the gate before a stage (operators/gate.py)
    NEXT_STAGE: Final = "next_stage"  # starts ami_promote for the app's next stage (operators/promote.py)
    ROLL_FORWARD: Final = "roll_forward"  # ami_release only: the automatic rollback (roll_forward.py)


# a rollback's preflight resolves its target (operators/rollback.py resolve_target) and pushes it
# under this key beside the plan; mark_rolled_back re-checks it under the lock
ROLLBACK_TARGET_KEY: Final = "rollback_target"
