"""Auto Scaling ``DescribeAccountLimits``, which moto 5.2.5 does not answer.

As the Auto Scaling API reference describes it: the region's quotas
(``MaxNumberOfAutoScalingGroups``, ``MaxNumberOfLaunchConfigurations``; AWS's defaults 500 and
200) and how many groups and launch configurations the account has there now
(``NumberOfAutoScalingGroups``, ``NumberOfLaunchConfigurations``, every group counted, also one
being deleted). The quotas are reported, not enforced: the sandbox lets a test make more.

The retention run reads ``NumberOfAutoScalingGroups`` to tell whether its listing of the groups
came back whole (issue 18: a page without its NextToken lists fewer groups than AWS counts).
"""

from __future__ import annotations

from typing import Any

from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult

MAX_GROUPS = 500
MAX_LAUNCH_CONFIGURATIONS = 200


def _describe_account_limits(self: Any) -> ActionResult:
    backend = self.autoscaling_backend
    return ActionResult(
        {
            "MaxNumberOfAutoScalingGroups": MAX_GROUPS,
            "MaxNumberOfLaunchConfigurations": MAX_LAUNCH_CONFIGURATIONS,
            "NumberOfAutoScalingGroups": len(backend.autoscaling_groups),
            "NumberOfLaunchConfigurations": len(backend.launch_configurations),
        }
    )


def install() -> None:
    AutoScalingResponse.describe_account_limits = _describe_account_limits  # type: ignore[attr-defined]
