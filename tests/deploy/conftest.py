"""A Docker engine for tests/deploy/test_compose.py.

One reachable through DOCKER_HOST is used as it is (never stopped). Otherwise the test starts
Debian's dockerd for itself, everything under the project's own folder .cache/docker/ (data and
exec roots, socket, pid file; never /var/run/docker.sock), with the lowered ulimits our machines
need (no CAP_SYS_RESOURCE: without them every container fails `setrlimit RLIMIT_NOFILE`), and
stops it at the end. The data root stays: the images built in it are the next run's cache.
`make setup` (docker-check) installs docker.io, docker-compose and debootstrap where missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO

ENGINE_DIR = REPO / ".cache" / "docker"
NEEDED = {
    "dockerd": "docker.io",
    "docker": "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
}


@dataclass
class Engine:
    host: str  # DOCKER_HOST for every docker / docker-compose call
    started: bool  # by us: stopped at the end
    pid: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, **extra}

    def docker(self, *argv: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["docker", *argv], env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"docker {' '.join(argv[:3])} failed ({res.returncode}):\n{res.stderr[-3000:]}")
        return res


def _reachable(host: str) -> bool:
    res = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        env={**os.environ, "DOCKER_HOST": host},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return res.returncode == 0


@pytest.fixture(scope="module")
def docker_engine() -> Iterator[Engine]:
    missing = sorted({pkg for tool, pkg in NEEDED.items() if not shutil.which(tool)})
    if os.environ.get("DOCKER_HOST") and _reachable(os.environ["DOCKER_HOST"]):
        yield Engine(os.environ["DOCKER_HOST"], started=False)
        return
    assert not missing, (
        f"the container test needs {', '.join(missing)}: run `make setup` (its docker-check installs "
        f"them as root) or `apt-get install {' '.join(missing)}`, or point DOCKER_HOST at a running engine"
    )
    ENGINE_DIR.mkdir(parents=True, exist_ok=True)
    sock = ENGINE_DIR / "docker.sock"
    host = f"unix://{sock}"
    pidfile = ENGINE_DIR / "dockerd.pid"
    if pidfile.exists() and _reachable(host):  # ours, left by an aborted run: reuse, then stop it
        pid = int(pidfile.read_text())
    else:
        argv = ["dockerd", "--data-root", str(ENGINE_DIR / "data"), "--exec-root", str(ENGINE_DIR / "exec")]
        argv += ["-H", host, "--pidfile", str(pidfile), "--storage-driver", "overlay2"]
        argv += ["--exec-opt", "native.cgroupdriver=cgroupfs"]
        argv += ["--default-ulimit", "nofile=4096:4096", "--default-ulimit", "nproc=4096:4096"]
        log = open(ENGINE_DIR / "dockerd.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        pid = proc.pid
        deadline = time.monotonic() + 60
        while not _reachable(host):
            assert proc.poll() is None, f"dockerd exited ({proc.returncode}); see {ENGINE_DIR / 'dockerd.log'}"
            assert time.monotonic() < deadline, f"dockerd not answering in 60 s; see {ENGINE_DIR / 'dockerd.log'}"
            time.sleep(0.5)
    engine = Engine(host, started=True, pid=pid)
    try:
        yield engine
    finally:
        # our engine only: the layers older builds left behind (the tagged images stay, as the cache)
        engine.docker("image", "prune", "-f", check=False, timeout=300)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            try:  # our child: reap it
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            except ChildProcessError:
                pass
            time.sleep(0.3)
        assert not Path(f"/proc/{pid}").exists(), f"dockerd {pid} still running 60 s after SIGTERM"
