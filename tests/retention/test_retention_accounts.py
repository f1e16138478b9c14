"""Retention across several accounts (the policy's ``accounts:``): one task per account x region,
each with only its own account's clients; an account whose role cannot be assumed fails in words
and the others go on; each account's report under its own S3 key.

The accounts are moto account ids of the one sandbox server: AssumeRole into a member account's
role gives credentials moto maps to that account (sandbox/aws/sts.py refuses a role that does not
exist or does not trust the caller, as AWS does)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from amirelease.errors import ConfigError, RetentionError
from amirelease.retention.policy import DEFAULT_POLICY_PATH, load_policy
from tests.retention.conftest import LEDGER_BUCKET

REPO = Path(__file__).resolve().parents[2]
MARK = "maid_status"
REGIONS = ["us-east-1", "us-west-2"]
ACCOUNTS = {"alpha": "111111111111", "beta": "222222222222", "gamma": "333333333333"}
BROKEN = "gamma"  # its role is never created: AssumeRole is refused


def _policy_file(tmp_path: Path, accounts: list[dict], **changes) -> Path:
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    data.update(regions=REGIONS, accounts=accounts, recycle_bin=False, **changes)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------ the policy


def test_no_accounts_is_one_task_per_region_as_before():
    p = load_policy()
    assert p.accounts == ()
    assert p.targets() == [{"region_name": r} for r in p.regions]


def test_accounts_times_regions(tmp_path):
    path = _policy_file(
        tmp_path,
        [
            {"name": "a", "role_arn": "arn:aws:iam::111111111111:role/ami-retention"},
            {"name": "b", "aws_conn_id": "aws_b", "regions": ["eu-west-1"]},
        ],
    )
    p = load_policy(path)
    assert p.accounts[0].role_account_id == "111111111111" and p.accounts[1].role_account_id is None
    a = {"name": "a", "role_arn": "arn:aws:iam::111111111111:role/ami-retention"}
    assert p.targets() == [
        {"region_name": "us-east-1", "account": a},
        {"region_name": "us-west-2", "account": a},
        {"region_name": "eu-west-1", "account": {"name": "b", "aws_conn_id": "aws_b"}},
    ]


@pytest.mark.parametrize(
    ("accounts", "words"),
    [
        ([{"name": "a"}], "accounts/0"),  # no way in
        ([{"name": "a", "aws_conn_id": "x", "role_arn": "arn:aws:iam::111111111111:role/r"}], "accounts/0"),
        ([{"name": "a", "role_arn": "arn:aws:iam::1111:role/r"}], "accounts/0/role_arn"),
        ([{"name": "a b", "aws_conn_id": "x"}], "accounts/0/name"),
        ([{"name": "a", "aws_conn_id": "x"}, {"name": "a", "aws_conn_id": "y"}], "names account 'a' twice"),
    ],
)
def test_bad_accounts_are_refused_in_words(tmp_path, accounts, words):
    path = _policy_file(tmp_path, accounts)
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert words in str(err.value) and str(path) in str(err.value)


# ------------------------------------------------------------------ the sandbox organization


def _due_mark(days_ago: int = 1) -> str:
    return f"Resource does not meet policy: deregister@{datetime.now(UTC) - timedelta(days=days_ago):%Y/%m/%d}"


def _seed_account(sb, account_id: str, region: str) -> dict[str, str]:
    """old (to be marked), due (marked, due: to go), used (a group's template: kept), young (kept)."""
    ids = {
        "old": sb.create_image("old", age_days=90, region=region, account_id=account_id),
        "due": sb.create_image("due", age_days=90, region=region, account_id=account_id, tags={MARK: _due_mark()}),
        "used": sb.create_image("used", age_days=90, region=region, account_id=account_id),
        "young": sb.create_image("young", age_days=10, region=region, account_id=account_id),
    }
    ec2 = sb.client("ec2", region=region, internal=True, account_id=account_id)
    asg = sb.client("autoscaling", region=region, internal=True, account_id=account_id)
    lt = ec2.create_launch_template(
        LaunchTemplateName="web", LaunchTemplateData={"ImageId": ids["used"], "InstanceType": "t3.micro"}
    )["LaunchTemplate"]
    asg.create_auto_scaling_group(
        AutoScalingGroupName="web",
        MinSize=0,
        MaxSize=1,
        DesiredCapacity=0,
        LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"]},
        AvailabilityZones=[f"{region}a"],
    )
    return ids


def _images(sb, account_id: str | None, region: str) -> dict[str, dict[str, str]]:
    ec2 = sb.client("ec2", region=region, internal=True, account_id=account_id)
    return {
        i["ImageId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])}
        for i in ec2.describe_images(Owners=["self"])["Images"]
    }


@pytest.fixture
def org(sandbox, tmp_path, monkeypatch):
    """alpha and beta with their retention role, gamma without; all seeded in both regions."""
    roles = {}
    for name, account_id in ACCOUNTS.items():
        roles[name] = (
            f"arn:aws:iam::{account_id}:role/ami-retention"
            if name == BROKEN
            else sandbox.add_member_account(account_id)
        )
    seeded = {(name, r): _seed_account(sandbox, ACCOUNTS[name], r) for name in ACCOUNTS for r in REGIONS}
    path = _policy_file(tmp_path, [{"name": n, "role_arn": roles[n]} for n in ACCOUNTS])
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__RETENTION_POLICY", str(path))
    return {"roles": roles, "seeded": seeded, "policy": path}


def _fresh_dag(name="ami_retention"):
    import runpy

    return runpy.run_path(str(REPO / "dags" / f"{name}.py"))["dag"]


@pytest.mark.e2e
def test_three_accounts_two_regions_one_role_missing(org, sandbox, airflow_db):
    from airflow.sdk import DagRunState

    from amirelease.retention.report import latest_report

    workers_before = {r: _images(sandbox, None, r) for r in REGIONS}
    broken_before = {r: _images(sandbox, ACCOUNTS[BROKEN], r) for r in REGIONS}
    keys_before, calls_before = sandbox.access_keys(), sandbox.callers()

    dr = _fresh_dag().test()

    # the run fails (its summary names gamma), but only gamma's tasks failed
    assert dr.state == DagRunState.FAILED
    states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}
    targets = load_policy(org["policy"]).targets()
    for index, target in enumerate(targets):
        expected = "failed" if target["account"]["name"] == BROKEN else "success"
        assert states[("retention", index)] == expected, (target, states)
    assert states[("retention_summary", -1)] == "failed"
    assert states[("policy_regions", -1)] == "success"

    s3 = sandbox.client("s3", internal=True)
    for name in ("alpha", "beta"):
        for region in REGIONS:
            ids = org["seeded"][(name, region)]
            now = _images(sandbox, ACCOUNTS[name], region)
            assert ids["due"] not in now  # deregistered as the policy says
            assert now[ids["old"]][MARK].startswith("Resource does not meet policy: deregister@")  # marked
            assert MARK not in now[ids["used"]] and MARK not in now[ids["young"]]  # kept
            report = latest_report(s3, LEDGER_BUCKET, region, account=name)
            assert report is not None and report["account"] == name and report["account_id"] == ACCOUNTS[name]
            assert {row["image_id"] for row in report["rows"]} == set(ids.values())  # its own images only
            assert report["counts"]["mark"] == 1 and report["counts"]["deregister"] == 1
    for region in REGIONS:
        # nothing changed in the account that failed, nor in the workers' own account
        assert _images(sandbox, ACCOUNTS[BROKEN], region) == broken_before[region]
        assert _images(sandbox, None, region) == workers_before[region]
        assert latest_report(s3, LEDGER_BUCKET, region, account=BROKEN) is None
        assert latest_report(s3, LEDGER_BUCKET, region) is None  # not the single-account key

    # the Releases page lists each account x region: its last report, or none (the failed one)
    from amirelease.retention.policy import load_policy as _load
    from amirelease.ui.collect import read_account_reports
    from amirelease.ui.present import account_report_rows

    class _Snap:  # what account_report_rows reads of the page's snapshot
        account_reports = read_account_reports(s3, LEDGER_BUCKET, _load(org["policy"]))
        read_at = datetime.now(UTC)

    rows = {(r["account"], r["region"]): r for r in account_report_rows(_Snap())}  # type: ignore[arg-type]
    assert set(rows) == {(n, r) for n in ACCOUNTS for r in REGIONS}
    for region in REGIONS:
        assert rows[(BROKEN, region)]["state"] == "missing" and rows[(BROKEN, region)]["at"] == ""
        for name in ("alpha", "beta"):
            row = rows[(name, region)]
            assert row["state"] == "ok" and row["account_id"] == ACCOUNTS[name]
            assert "deregister 1" in row["text"] and "mark 1" in row["text"]

    # one client set per task: every EC2 / Auto Scaling call the run made was signed by a member
    # role's session, none by the workers' own key; one AssumeRole per task that worked
    roles = sandbox.assumed_roles()
    after = sandbox.access_keys()
    calls = sandbox.callers()
    made = {c for c, n in calls.items() if n > calls_before.get(c, 0)}  # by this run (other tests' calls stay)
    assert ("airflow", "ec2:DescribeImages") in made
    for (sender, call), keys in after.items():
        new = keys - keys_before.get((sender, call), set())
        if (sender, call) in made and sender == "airflow" and call.split(":")[0] in ("ec2", "autoscaling"):
            assert new and all(roles.get(k) in (org["roles"]["alpha"], org["roles"]["beta"]) for k in new), call
    assumed = [a["RoleArn"] for a in sandbox.assume_requests()]
    assert assumed.count(org["roles"]["alpha"]) == len(REGIONS)
    assert assumed.count(org["roles"]["beta"]) == len(REGIONS)


@pytest.mark.e2e
def test_a_role_that_cannot_be_assumed_fails_in_words_and_reads_nothing(org, sandbox):
    from amirelease.operators.retention_accounts import AccountRetentionOperator

    role = org["roles"][BROKEN]
    op = AccountRetentionOperator(
        task_id="retention", region_name="us-east-1", account={"name": BROKEN, "role_arn": role}
    )
    sandbox.reset_request_counts()
    now = datetime.now(UTC)
    with pytest.raises(RetentionError) as err:
        op.execute({"data_interval_end": now, "logical_date": now, "run_id": "test__broken"})
    text = str(err.value)
    assert f"cannot act in account {BROKEN}: AccessDenied" in text
    assert f"sts:AssumeRole on resource: {role}" in text
    assert "nothing was read or changed" in text and "trust policy" in text
    assert set(sandbox.request_counts()) == {"sts:AssumeRole"}  # nothing else was asked


def test_summary_names_the_failed_accounts():
    from amirelease.retention.summary import summarise

    targets = [
        {"region_name": "us-east-1", "account": {"name": "alpha"}},
        {"region_name": "us-east-1", "account": {"name": "gamma"}},
        {"region_name": "us-west-2", "account": {"name": "gamma"}},
    ]
    ok = summarise(targets[:1], [{"account": "alpha", "region": "us-east-1", "counts": {"mark": 1}}])
    assert ok == {"succeeded": ["account alpha, region us-east-1"], "failed": []}
    with pytest.raises(RetentionError) as err:
        summarise(targets, [{"account": "alpha", "region": "us-east-1", "counts": {}}])
    text = str(err.value)
    assert "retention failed in 2 of 3 account/region task(s)" in text
    assert "account gamma, region us-east-1; account gamma, region us-west-2" in text
    assert "map index 1, 2" in text and "(the other 1 completed)" in text
    # the single-account shape: regions only
    with pytest.raises(RetentionError, match=r"failed in 1 of 1 .*: region eu-west-1 \[DAG run"):
        summarise([{"region_name": "eu-west-1"}], [])


@pytest.mark.e2e
def test_an_account_named_by_its_airflow_connection(org, sandbox, monkeypatch):
    """``aws_conn_id``: the connection as it is (here one whose extra assumes beta's role, the
    provider's own way); the report lands under the account's key with beta's id."""
    import json

    from amirelease.operators.retention_accounts import AccountRetentionOperator
    from amirelease.retention.report import latest_report

    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_BETA",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": sandbox.endpoint_url, "role_arn": org["roles"]["beta"]},
            }
        ),
    )
    op = AccountRetentionOperator(
        task_id="retention", region_name="us-west-2", account={"name": "beta", "aws_conn_id": "aws_beta"}
    )
    now = datetime.now(UTC)
    out = op.execute({"data_interval_end": now, "logical_date": now, "run_id": "test__conn"})
    assert out["account"] == "beta" and out["account_id"] == ACCOUNTS["beta"]
    ids = org["seeded"][("beta", "us-west-2")]
    assert ids["due"] not in _images(sandbox, ACCOUNTS["beta"], "us-west-2")
    report = latest_report(sandbox.client("s3", internal=True), LEDGER_BUCKET, "us-west-2", account="beta")
    assert report["account_id"] == ACCOUNTS["beta"] and {r["image_id"] for r in report["rows"]} == set(ids.values())
    # the deregistration record (what restore-ami reads) says which account the image was in
    from amirelease.retention.recycle_aws import read_record

    record = read_record(sandbox.client("s3", internal=True), LEDGER_BUCKET, "us-west-2", ids["due"])
    assert record["account"] == "beta" and record["account_id"] == ACCOUNTS["beta"]


def test_iam_each_accounts_role_and_the_workers_assume():
    from amirelease import iam
    from amirelease.operators.retention import AmiRetentionOperator

    roles = iam.actions_by_role()
    from amirelease.retention.aws import IAM_ACTIONS

    region_task = set(AmiRetentionOperator.iam_actions) | set(IAM_ACTIONS)
    assert set(roles["retention-account"]) == {a for a in region_task if not a.startswith("s3:")}
    assert "sts:AssumeRole" in roles["retention"] and "sts:AssumeRole" not in roles["retention-account"]
    assert "retention-account" in iam.markdown()
