"""amirelease/protection.py: which AMIs AWS's deregistration protection guards (pure), and the
sync against the sandbox: protected, refused by the API, lifted when out of the window."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from amirelease.protection import sync, wanted

LEDGER_BUCKET = "ami-release-ledger-123456789012"


def _rec(n, outcome="succeeded", **kw):
    return {
        "app": "prot",
        "release_id": f"prot-1.{n}.0-r{n}",
        "version": f"1.{n}.0",
        "outcome": outcome,
        "started_at": f"2026-01-{n + 1:02d}T00:00:00Z",
        "amis": {"us-east-1": f"ami-{n:017x}"},
        **kw,
    }


def test_window_is_the_live_release_and_the_previous_good_ones_plus_holds():
    history = [
        _rec(1, forensic_hold={"amis": {"us-east-1": "ami-held"}}),  # held (rolled back later)
        _rec(2),
        _rec(3, outcome="failed"),
        _rec(4),
        _rec(5, rolled_back={"at": "x"}),
        _rec(6),
        _rec(7),
    ]
    w = wanted(history, keep=2)
    assert set(w.protect) == {"prot-1.7.0-r7", "prot-1.6.0-r6", "prot-1.4.0-r4", "prot-1.1.0-r1"}
    assert w.why["prot-1.7.0-r7"] == "the live release" and w.why["prot-1.1.0-r1"] == "under a forensic hold"
    assert w.protect["prot-1.1.0-r1"] == {"us-east-1": "ami-held"}
    assert w.lift == {}
    # protection we set on 2 is lifted once it is out of the window; a lifted one is not lifted again
    history[1]["deregistration_protection"] = {"amis": {"us-east-1": "ami-2"}}
    history[3]["deregistration_protection"] = {"amis": {"us-east-1": "ami-4"}, "lifted_at": "t"}
    assert wanted(history, keep=2).lift == {"prot-1.2.0-r2": {"us-east-1": "ami-2"}}
    # a lifted hold no longer protects
    history[0]["forensic_hold"]["released_at"] = "t"
    assert "prot-1.1.0-r1" not in wanted(history, keep=2).protect
    assert set(wanted(history, keep=0).protect) == {"prot-1.7.0-r7"}


@pytest.fixture
def world(sandbox, monkeypatch):
    from amirelease.aws import AwsClients
    from amirelease.ledger import Ledger

    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__LEDGER_BUCKET", LEDGER_BUCKET)
    clients = AwsClients()
    ledger = Ledger(clients.s3(), LEDGER_BUCKET)
    return sandbox, clients, ledger


def _release(sb, ledger, n, **kw):
    image = sb.create_image(f"prot-1.{n}.0", age_days=10, tags={"App": "prot", "ReleaseId": f"prot-1.{n}.0-r{n}"})
    record = _rec(n, **kw)
    record["amis"] = {sb.region: image}
    ledger.put(record)
    return image


def _protection(sb, image):
    ec2 = sb.client("ec2", internal=True)
    return ec2.describe_images(ImageIds=[image])["Images"][0]["DeregistrationProtection"]


def test_sync_protects_the_window_refuses_deregistration_and_lifts_what_falls_out(world):
    sb, clients, ledger = world
    images = [_release(sb, ledger, n) for n in (1, 2, 3)]
    done = sync(ledger, clients.ec2, "prot", keep=2)
    assert len(done.protected) == 3 and not done.errors
    assert all(_protection(sb, i) == "enabled-with-cooldown" for i in images)
    ec2 = sb.client("ec2", internal=True)
    with pytest.raises(ClientError) as err:  # a person at the console: AWS refuses
        ec2.deregister_image(ImageId=images[2])
    assert err.value.response["Error"]["Code"] == "OperationNotPermitted"
    # a fourth release pushes the first out of the window: its protection is lifted (cooldown)
    images.append(_release(sb, ledger, 4))
    done = sync(ledger, clients.ec2, "prot", keep=2)
    assert done.lifted == [f"{images[0]} ({sb.region})"] and len(done.protected) == 1
    assert _protection(sb, images[0]).startswith("disabled-until ")
    assert ledger.get("prot", "prot-1.1.0-r1")["deregistration_protection"]["lifted_at"]
    # steady: nothing to do
    done = sync(ledger, clients.ec2, "prot", keep=2)
    assert (done.protected, done.lifted) == ([], [])


def test_a_protection_somebody_else_set_is_never_lifted(world):
    sb, clients, ledger = world
    theirs = _release(sb, ledger, 1)
    sb.client("ec2", internal=True).enable_image_deregistration_protection(ImageId=theirs)
    for n in (2, 3, 4):
        _release(sb, ledger, n)
    sync(ledger, clients.ec2, "prot", keep=2)
    assert _protection(sb, theirs) == "enabled-without-cooldown"


def test_lifting_a_hold_lifts_its_protection(world):
    from amirelease.holds import lift_hold

    sb, clients, ledger = world
    held = _release(sb, ledger, 1, rolled_back={"at": "t"}, forensic_hold={"placed_at": "t", "reason": "INC-1"})
    for n in (2, 3, 4):
        _release(sb, ledger, n)
    sync(ledger, clients.ec2, "prot", keep=2)
    assert _protection(sb, held) == "enabled-with-cooldown"
    lift_hold(app="prot", release_id="prot-1.1.0-r1", reason="INC-1 closed, forensics done", by="erin")
    assert _protection(sb, held).startswith("disabled-until ")


def test_the_releases_page_says_what_aws_enforces(sandbox):
    from datetime import UTC, datetime, timedelta

    from amirelease.ui.collect import read_app_images
    from amirelease.ui.present import aws_state

    now = datetime.now(UTC)
    assert aws_state({"DeregistrationProtection": "disabled"}, now) == ""
    image = sandbox.create_image("page", age_days=90, tags={"App": "page-app"})
    ec2 = sandbox.client("ec2", internal=True)
    ec2.enable_image_deregistration_protection(ImageId=image, WithCooldown=True)
    ec2.enable_image_deprecation(ImageId=image, DeprecateAt=now + timedelta(days=3))
    [seen] = read_app_images(sandbox.client("ec2"), "page-app", sandbox.region)
    text = aws_state(seen, now)
    assert text.startswith("protected from deregistration (24 h cooldown once lifted)")
    assert f"deprecated on {(now + timedelta(days=3)):%Y-%m-%d}" in text
    ec2.disable_image_deregistration_protection(ImageId=image)
    [seen] = read_app_images(sandbox.client("ec2"), "page-app", sandbox.region)
    assert "protected from deregistration until " in aws_state(seen, now)
    # disabled (the scream test, retention/scream.py): still listed, and said so with the way back
    ec2.create_tags(Resources=[image], Tags=[{"Key": "AmiRetentionDisabled", "Value": "2026-12-05T07:00:00Z"}])
    ec2.disable_image(ImageId=image)
    [seen] = read_app_images(sandbox.client("ec2"), "page-app", sandbox.region)
    text = aws_state(seen, now)
    assert "disabled by retention since 2026-12-05T07:00:00Z" in text, text
    assert f"make restore-ami AMI={image} REASON=… enables it" in text, text


def test_the_releases_page_shows_what_is_in_the_recycle_bin_until_when(sandbox):
    from datetime import UTC, datetime, timedelta

    from amirelease.ui.collect import read_binned_images
    from amirelease.ui.present import aws_state

    image = sandbox.create_image("binned-page", age_days=90, tags={"App": "page-app", "AmiRetention": "recycle-bin"})
    live = sandbox.create_image("live-page", age_days=1, tags={"App": "page-app"})
    ec2 = sandbox.client("ec2", internal=True)
    ec2.deregister_image(ImageId=image)  # the seeded rules keep it 14 days
    history = [
        {"app": "page-app", "version": "1.0.0", "release_id": "page-app-1.0.0-x", "amis": {sandbox.region: image}},
        {"app": "page-app", "version": "1.1.0", "release_id": "page-app-1.1.0-y", "amis": {sandbox.region: live}},
    ]
    [seen] = read_binned_images(sandbox.client("ec2"), history, sandbox.region, {live})
    assert seen["ImageId"] == image and seen["Tags"]["Version"] == "1.0.0"
    until = datetime.now(UTC) + timedelta(days=14)
    assert f"in the Recycle Bin until {until:%Y-%m-%d}" in aws_state(seen, datetime.now(UTC))
