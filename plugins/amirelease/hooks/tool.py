"""Running a deployment tool (Packer, Terraform) from a task, the same way for both.

* The tool runs under ``_reaper.py`` as the leader of its own process group: an interrupt
  (``interrupt()``: on_kill, a timeout, an error of ours) reaches the tool and everything it
  spawned, and the tool dies with its task whatever kills the task (see _reaper.py).
* Output is read line by line and handed to ``on_line`` as it comes (the task log).
* Working folders are named after the task process; a later task removes the folders of
  task processes that no longer exist, so a killed task leaves no var files behind for long.
* Secrets only ever travel in the tool's environment, never in argv (any local user can
  read /proc/<pid>/cmdline) and never in a file.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REAPER = Path(__file__).with_name("_reaper.py")
_WORKDIR_RE = re.compile(r"^amirelease-(?P<tool>[a-z]+)-(?P<pid>\d+)-")


# What a deployment tool inherits from the worker's environment: an allow-list, not a deny-list.
# The worker's environment holds the platform's credentials (AIRFLOW_CONN_* with the Vault
# AppRole, the metadata database URL, the Fernet key, the AWS credentials of the worker's own
# role); Terraform providers and Packer plugins an app's definition pulls in, and any shell
# they run, must see none of it. The tool gets these plus what its hook adds (the app's AWS
# credentials from tool_environment, its TF_VAR_/PKR_VAR_ secrets, the tool's own settings).
PASS_THROUGH = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "SHELL",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "AWS_CA_BUNDLE",
        "AWS_ENDPOINT_URL",  # not a credential: where the AWS API is (a private endpoint, the sandbox)
        "TF_PLUGIN_CACHE_DIR",
        "TF_LOG",
        "PACKER_PLUGIN_PATH",
        "PACKER_CACHE_DIR",
        "PACKER_CONFIG_DIR",
        "PACKER_LOG",
    }
)
PASS_THROUGH_PREFIXES = ("LC_", "AWS_ENDPOINT_URL_")


def base_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The part of the worker's environment a deployment tool may see (see PASS_THROUGH)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k in PASS_THROUGH or k.startswith(PASS_THROUGH_PREFIXES)}


@dataclass
class ToolRun:
    """How a tool's run ended: its exit code, and whether we interrupted it."""

    returncode: int
    interrupted: bool


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_workdirs(root: Path | None = None) -> list[Path]:
    """Remove working folders left by task processes that no longer exist."""
    root = root or Path(tempfile.gettempdir())
    removed = []
    for path in root.glob("amirelease-*-*-*"):
        m = _WORKDIR_RE.match(path.name)
        if m and path.is_dir() and not _pid_alive(int(m["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextmanager
def workdir(tool: str) -> Iterator[Path]:
    """A private (0700) working folder for one tool run, removed afterwards."""
    sweep_stale_workdirs()
    path = Path(tempfile.mkdtemp(prefix=f"amirelease-{tool}-{os.getpid()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class ToolProcess:
    """One run of a tool binary. ``interrupt()`` may be called from another thread (on_kill).

    :param interrupt_grace: seconds between SIGINT (the tool cleans up) and SIGKILL.
    :param death_grace: seconds the tool gets after SIGINT to clean up when the task that started
        it dies (then the reaper kills its process group).
    """

    def __init__(self, *, interrupt_grace: float = 120.0, death_grace: float = 10.0) -> None:
        self.interrupt_grace = interrupt_grace
        self.death_grace = death_grace
        self._proc: subprocess.Popen[str] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        on_line: Callable[[str], None],
        timeout: float | None = None,
    ) -> ToolRun:
        interrupted = False
        self._proc = subprocess.Popen(
            [sys.executable, str(REAPER), str(self.death_grace), "--", *argv],
            cwd=str(cwd),
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,  # the reaper leads a process group: the tool and its plugins
        )
        deadline = time.monotonic() + timeout if timeout else None
        try:
            assert self._proc.stdout is not None
            for raw in self._proc.stdout:
                on_line(raw.rstrip("\n"))
                if deadline and time.monotonic() > deadline:
                    on_line(f"{Path(argv[0]).name} exceeded {timeout:.0f}s: interrupting")
                    interrupted = True
                    self.interrupt()
                    break
            returncode = self._proc.wait()
        finally:
            # Anything but the tool finishing (a timeout, a kill, a bug of ours) still lets the
            # tool clean up: SIGINT, then SIGKILL after the grace period.
            if self._proc.poll() is None:
                interrupted = True
                self.interrupt()
            self._proc = None
        return ToolRun(returncode=returncode if not interrupted else (returncode or 130), interrupted=interrupted)

    def interrupt(self) -> None:
        """SIGINT the tool's process group; SIGKILL it if it has not exited after the grace period."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        log.warning(
            "Interrupting %s (process group %s); it gets %ss to clean up", "the tool", proc.pid, self.interrupt_grace
        )
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=self.interrupt_grace)
        except subprocess.TimeoutExpired:
            log.error("The tool did not exit %ss after SIGINT; killing its process group", self.interrupt_grace)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
