"""start() is quick; stop() leaves no thread and no open port (checked in a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, socket, threading, time
t0 = time.monotonic()
from sandbox.aws import AwsSandbox
t1 = time.monotonic()
sb = AwsSandbox(refresh_batch_seconds=0.2).start()
t2 = time.monotonic()
import boto3
ec2 = boto3.client("ec2", endpoint_url=sb.endpoint_url, region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
n = len(ec2.describe_vpcs()["Vpcs"])   # leaves a keep-alive connection open
port = int(sb.endpoint_url.rsplit(":", 1)[1])
threads_during = sorted(t.name for t in threading.enumerate())
t3 = time.monotonic()
sb.stop()
stop_s = time.monotonic() - t3
time.sleep(0.1)
s = socket.socket()
refused = s.connect_ex(("127.0.0.1", port)) != 0
s.close()
left = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
print(json.dumps({"import": t1 - t0, "start": t2 - t1, "stop": stop_s, "vpcs": n,
                  "threads_during": threads_during, "left": left, "refused": refused}))
"""


def test_start_fast_and_stop_clean():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["start"] < 10, result
    assert "aws-sandbox-ticker" in result["threads_during"] and "aws-sandbox-server" in result["threads_during"]
    assert result["left"] == [], result
    assert result["refused"], result
    assert result["vpcs"] >= 2
