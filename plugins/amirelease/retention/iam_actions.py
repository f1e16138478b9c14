"""IAM actions of the retention package that operator classes name at import time (their
``iam_actions``), kept apart so that parsing a retention DAG file does not import the retention
logic (retention/aws.py and what it imports): tests/unit/test_parse_imports.py."""

from __future__ import annotations

# Calls retention/aws.py makes beyond AmiRetentionOperator.iam_actions (iam.py adds them to the
# retention roles): the exact $Latest/$Default numbers of the templates groups use; the count of
# the region's groups the listing of the groups is checked against.
IAM_ACTIONS: tuple[str, ...] = ("ec2:DescribeLaunchTemplates", "autoscaling:DescribeAccountLimits")
