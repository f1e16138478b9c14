"""IAM actions of the retention package that operator classes name at import time (their
``iam_actions``), kept apart so that parsing a retention DAG file does not import the retention
logic (retention/aws.py and what it imports): tests/unit/test_parse_imports.py."""

from __future__ import annotations

# Calls retention/aws.py makes beyond AmiRetentionOperator.iam_actions (iam.py adds them to the
# retention roles): the exact $Latest/$Default numbers of the templates groups use.
IAM_ACTIONS: tuple[str, ...] = ("ec2:DescribeLaunchTemplates",)
