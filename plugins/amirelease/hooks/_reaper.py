"""Runs a deployment tool (packer, terraform) so that it cannot outlive the task that started it.

Executed by path with the task's Python (stdlib only, no package imports):

    python _reaper.py <grace-seconds> -- <tool> <args...>

The hook starts this script as the leader of a new process group; the tool and everything it
spawns (Packer's plugins, Terraform's providers) join that group. The script relays the tool's
output to the task and asks the kernel to signal it when the task process dies
(PR_SET_PDEATHSIG), whatever killed the task (the supervisor's SIGKILL, kill -9, OOM):
then it interrupts the tool (SIGINT: Terraform releases its state lock, Packer starts its
cleanup), waits up to <grace-seconds> and kills the whole group. Output is drained while it
waits, so the tool never dies of a broken pipe half-way through its cleanup.
"""

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def main() -> int:
    grace = float(sys.argv[1])
    argv = sys.argv[3:] if sys.argv[2] == "--" else sys.argv[2:]
    parent = os.getppid()
    dying = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: dying.set())  # the task died
    signal.signal(signal.SIGTERM, lambda *_: dying.set())
    signal.signal(signal.SIGINT, lambda *_: None)  # an interrupt is for the tool (same group), not for us
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGUSR1)
    except OSError:
        pass  # not Linux: the hook's interrupt and the supervisor's group kill still apply
    if os.getppid() != parent:  # the task died before prctl took effect
        return 137
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = sys.stdout.buffer

    def relay() -> None:
        assert child.stdout is not None
        reader_gone = False
        for line in iter(child.stdout.readline, b""):
            if reader_gone:
                continue
            try:
                out.write(line)
                out.flush()
            except OSError:
                reader_gone = True  # keep draining so the tool is never killed by SIGPIPE

    relay_thread = threading.Thread(target=relay, daemon=True)
    relay_thread.start()
    while child.poll() is None:
        if dying.wait(0.2):
            os.killpg(0, signal.SIGINT)
            deadline = time.monotonic() + grace
            while child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            os.killpg(0, signal.SIGKILL)  # the tool, its plugins and this script
    relay_thread.join(timeout=5)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


if __name__ == "__main__":
    sys.exit(main())
