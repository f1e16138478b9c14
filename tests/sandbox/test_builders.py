"""The sandbox's builders (sandbox/builders): a real SSH server behind an instance launched with
a key pair through the EC2 API, as Packer's builder is reached on AWS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.aws.state import RUNTIME

REPO = Path(__file__).resolve().parents[2]
SSH = ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
SSH += ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


def _launch(ec2, sb, tmp_path, *, port: int = 22, public_ip: bool = True, image: str = "amazon-linux"):
    name = f"packer_{time.monotonic_ns()}"
    key = tmp_path / name
    key.write_text(ec2.create_key_pair(KeyName=name)["KeyMaterial"])
    key.chmod(0o600)
    group = ec2.create_security_group(GroupName=name, Description="builder", VpcId=sb.account["vpc_id"])["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": "127.0.0.0/8"}]}
        ],
    )
    nic = {"DeviceIndex": 0, "SubnetId": sb.account["subnet_ids"][0], "Groups": [group]}
    if public_ip:
        nic["AssociatePublicIpAddress"] = True
    run = ec2.run_instances(
        ImageId=sb.account["vendor_images"][image],
        MinCount=1,
        MaxCount=1,
        KeyName=name,
        InstanceType="t3.micro",
        NetworkInterfaces=[nic],
    )
    instance_id = run["Instances"][0]["InstanceId"]
    described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return instance_id, described.get("PublicIpAddress"), key


def _ssh(key: Path, address: str, command: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run([*SSH, "-i", str(key), f"ec2-user@{address}", command], capture_output=True, text=True)
        if done.returncode != 255 or time.monotonic() > deadline:  # 255: ssh itself could not connect
            return done
        time.sleep(0.2)


def _builder_processes(address: str) -> list[str]:
    out = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout
    homes = [b.home for b in RUNTIME.builders._by_instance.values()] if RUNTIME.builders else []
    return [line for line in out.splitlines() if address in line or any(str(h) in line for h in homes)]


def test_an_instance_with_packer_s_key_pair_gets_an_ssh_builder(sandbox, tmp_path):
    ec2 = sandbox.client("ec2")
    instance_id, address, key = _launch(ec2, sandbox, tmp_path)
    assert address and address.startswith("127.")  # the sandbox's "internet" is this machine's loopback

    done = _ssh(
        key,
        address,
        "id -un; sudo -n id -u; hostname; ls -A /work /root; sudo sh -c 'echo baked > /etc/x; rm /etc/motd'",
    )
    assert done.returncode == 0, done.stderr
    user, root_uid, hostname, *rest = done.stdout.split("\n")
    assert (user, root_uid) == ("ec2-user", "0") and hostname.startswith("ip-10-20-1-")
    assert "/work:" in done.stdout and "main" not in done.stdout  # the host's folders are hidden
    assert not os.path.exists("/etc/x") and os.path.exists("/etc/motd")  # the host is untouched

    # another key is refused: real public-key authentication
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    assert _ssh(other, address, "true", timeout=0).returncode == 255

    # stop -> image: the image's files are what the bake changed, deletions included
    ec2.stop_instances(InstanceIds=[instance_id])
    image_id = ec2.create_image(InstanceId=instance_id, Name="builder-test")["ImageId"]
    state = sandbox.handle_control("GET", "builders", {})[1]
    image = state["images"][image_id]
    assert image["files"]["/etc/x"]["sha256"] and "/etc/motd" in image["removed"]
    assert RUNTIME.builders.image_file(image_id, "/etc/x") == b"baked\n"
    assert "/etc/passwd" not in image["files"]  # the login user is the base image's, not the bake's

    ec2.terminate_instances(InstanceIds=[instance_id])
    assert sandbox.handle_control("GET", "builders", {})[1]["running"] == {}
    assert _builder_processes(address) == []


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"port": 80}, "no security group of the instance lets tcp/22 in"),
        ({"public_ip": False}, "no public IP"),
    ],
)
def test_no_builder_where_aws_would_not_let_packer_in(sandbox, tmp_path, kwargs, why):
    ec2 = sandbox.client("ec2")
    instance_id, address, _ = _launch(ec2, sandbox, tmp_path, **kwargs)
    state = sandbox.handle_control("GET", "builders", {})[1]
    assert why in state["skipped"][instance_id]
    assert instance_id not in state["running"]
    assert not (address or "").startswith("127.")


def test_a_windows_image_gets_a_windows_shaped_builder(sandbox, tmp_path):
    """Administrator with the key pair, a C: drive, uploads by scp, PowerShell recorded with its
    effect on the drive, and anything the builder does not know refused in words."""
    ec2 = sandbox.client("ec2")
    instance_id, address, key = _launch(ec2, sandbox, tmp_path, image="windows")
    assert address.startswith("127.")

    def as_admin(command: str) -> subprocess.CompletedProcess[str]:
        deadline = time.monotonic() + 20
        while True:
            done = subprocess.run(
                [*SSH, "-i", str(key), f"Administrator@{address}", command], capture_output=True, text=True
            )
            if done.returncode != 255 or time.monotonic() > deadline:
                return done
            time.sleep(0.2)

    made = as_admin('powershell.exe -Command "New-Item -ItemType directory -Force -Path C:/Windows/Temp/packer-x"')
    assert made.returncode == 0, made.stderr
    script = tmp_path / "s.ps1"
    script.write_text("Set-Content -NoNewline -Path C:\\Windows\\Temp\\packer-x\\a.txt -Value 'hello'\n")
    up = subprocess.run(
        ["scp", "-O", *SSH[1:], "-i", str(key), str(script), f"Administrator@{address}:c:/Windows/Temp/s.ps1"],
        capture_output=True,
        text=True,
    )
    assert up.returncode == 0, up.stderr
    ran = as_admin("powershell -executionpolicy bypass \"& { &'c:/Windows/Temp/s.ps1'; exit $LastExitCode }\"")
    assert ran.returncode == 0, ran.stderr
    refused = as_admin("net user Administrator hunter2")
    assert refused.returncode == 1 and "does not know how to run: net user" in refused.stderr

    ec2.stop_instances(InstanceIds=[instance_id])
    image_id = ec2.create_image(InstanceId=instance_id, Name="windows-builder-test")["ImageId"]
    assert RUNTIME.builders.image_file(image_id, "C:\\Windows\\Temp\\packer-x\\a.txt") == b"hello"
    steps = sandbox.handle_control("GET", "builders", {})[1]["windows_steps"][instance_id]
    assert [s["kind"] for s in steps] == ["scp", "powershell", "refused"]
    ec2.terminate_instances(InstanceIds=[instance_id])
    assert _builder_processes(address) == []


def test_a_killed_sandbox_leaves_no_builder_behind(tmp_path):
    """kill -9 of the process that runs the sandbox: its builders' SSH servers die with it."""
    script = (
        "import sys, time\n"
        "from sandbox.aws import AwsSandbox\n"
        "sb = AwsSandbox().start()\n"
        "print(sb.endpoint_url, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'plugins'}"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        endpoint = proc.stdout.readline().strip()
        import boto3

        ec2 = boto3.client(
            "ec2", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        )

        class Remote:
            account = {}

        vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["demo-vpc"]}])["Vpcs"][0]["VpcId"]
        Remote.account = {
            "vpc_id": vpc,
            "subnet_ids": [
                ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
            ],
            "vendor_images": {
                "amazon-linux": ec2.describe_images(Owners=["137112412989"])["Images"][0]["ImageId"],
            },
        }
        _, address, key = _launch(ec2, Remote, tmp_path)
        assert _ssh(key, address, "true").returncode == 0
        assert any("sshd" in line for line in _listeners(address))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while _listeners(address) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _listeners(address) == []


def _listeners(address: str) -> list[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"{address}:22 " in line]
