"""The README's main job: a real release through airflow standalone (scheduler, triggerer,
API server) against the sandbox, as `make demo` runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def test_demo_releases_through_a_real_scheduler_and_triggerer():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_"))}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox",
            "demo",
            "--api-port",
            "8095",
            "--version",
            "7.7.7",
            "--refresh-batch-seconds",
            "1",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert re.search(r"wait_for_refresh\[0\]\s+deferred", text), "the refresh wait did not defer to the triggerer"
    assert re.search(r"demo-web-asg: 3/3 in-service instances on the new AMI", text)
    assert "verification   passed" in text and "release SUCCEEDED" in text
    assert "ledger         succeeded: s3://" in text
    leftovers = subprocess.run(
        ["pgrep", "-f", f"{REPO}/.venv/bin/airflow|bao server"], capture_output=True, text=True
    ).stdout
    assert "airflow standalone" not in leftovers
