"""The Linux builder: a real SSH server behind an instance Packer launched in the sandbox.

What Packer meets on AWS is a machine with an address, an OpenSSH server that accepts the
temporary key pair Packer created through the EC2 API, a login user with password-less
``sudo``, ``sh``, ``scp`` and ``chef-solo``. The sandbox gives it exactly that, made with the
kernel's own isolation (no container engine, no image to pull):

* a **mount and PID namespace** (``unshare``) whose root is an **overlay** of this machine's
  root (the "source AMI": read-only, never changed) under two layers of our own: ``base`` (the
  login user ``ec2-user`` with the instance's authorized key, ``sudoers``, the ``chef-solo``
  stand-in, the SSH server's settings: what the vendor image and EC2's cloud-init would have)
  and ``upper`` (everything Packer and its provisioners write: the *image*);
* the host's private folders (``/root``, ``/work``, ``/home``) hidden behind empty ``tmpfs``
  mounts; ``/tmp`` is a ``tmpfs`` as on Amazon Linux 2023; ``/run/sandbox-builder`` is a
  folder of the host where the ``chef-solo`` stand-in writes its record (not in the image);
* **Debian's OpenSSH server** (``/usr/sbin/sshd``, real key exchange, real public-key
  authentication) listening on port 22 of the loopback address the sandbox reports as the
  instance's public IP.

Killing the namespace's first process ends every process of the builder (``--kill-child``
ties it to ``unshare``, which dies with the sandbox: ``PR_SET_PDEATHSIG``), and with them its
mounts: nothing is left after a stop, a crash or a kill.

Chef Infra cannot be installed here, so ``chef-solo`` is a recorder
(``sandbox/builders/chef_solo_recorder.py``): see docs/sandbox.md for what runs for real and
what is recorded.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORDER = Path(__file__).with_name("chef_solo_recorder.py")
LOGIN_USER = "ec2-user"
LOGIN_UID = 1950  # not a uid this machine uses; the base layer adds the user
RECORD_DIR = "/run/sandbox-builder"  # inside the builder; a host folder, outside the image
HIDDEN = ("/root", "/work", "/home")  # host folders the builder must not see
TOOLS = ("unshare", "chroot", "mount", "/usr/sbin/sshd", "sudo", "scp", "ssh-keygen", "python3")
BOOT_TIMEOUT = 20.0

_PR_SET_PDEATHSIG = 1


class BuilderError(RuntimeError):
    """A builder could not be made (the reason in words)."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _which(tool: str) -> str | None:
    return tool if os.path.isabs(tool) and os.access(tool, os.X_OK) else shutil.which(tool)


_AVAILABLE: tuple[bool, str] | None = None


def available() -> tuple[bool, str]:
    """(True, "") when this machine can run builders; else (False, why, in words). Probed once:
    the tools must be installed, and a mount+PID namespace with an overlay root must work."""
    global _AVAILABLE
    if _AVAILABLE is not None:
        return _AVAILABLE
    missing = [t for t in TOOLS if _which(t) is None]
    if missing:
        pkgs = {"/usr/sbin/sshd": "openssh-server", "sudo": "sudo", "scp": "openssh-client"}
        names = sorted({pkgs.get(t, t) for t in missing})
        _AVAILABLE = (False, f"missing {', '.join(missing)} (Debian: apt-get install {' '.join(names)})")
        return _AVAILABLE
    if os.geteuid() != 0:
        _AVAILABLE = (False, "builders need root (mount namespaces, an overlay root, port 22)")
        return _AVAILABLE
    import tempfile

    with tempfile.TemporaryDirectory(prefix="builder-probe-") as tmp:
        for d in ("upper", "work", "root"):
            os.mkdir(os.path.join(tmp, d))
        script = (
            f"mount --make-rprivate / && mount -t overlay probe "
            f"-o lowerdir=/,upperdir={tmp}/upper,workdir={tmp}/work {tmp}/root && test -x {tmp}/root/usr/sbin/sshd"
        )
        try:
            probe = subprocess.run(
                ["unshare", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", script],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except subprocess.TimeoutExpired:
            _AVAILABLE = (False, "a mount namespace probe did not finish in 10 s")
            return _AVAILABLE
    if probe.returncode != 0:
        _AVAILABLE = (False, f"no mount namespace with an overlay root here: {probe.stderr.strip()[-200:]}")
    else:
        _AVAILABLE = (True, "")
    return _AVAILABLE


def port_free(address: str, port: int = 22) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


@dataclass
class ImageFiles:
    """What a bake changed on the builder's disk: the image's own layer, by path.
    ``files`` maps a path to its mode, owner and (for regular files) bytes; ``removed`` lists
    paths the bake deleted from the source image."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    def read(self, path: str) -> bytes | None:
        entry = self.files.get(path)
        return None if entry is None or entry.get("type") != "file" else bytes.fromhex(entry["hex"])

    def summary(self) -> dict[str, Any]:
        return {
            "files": {p: {k: v for k, v in e.items() if k != "hex"} for p, e in sorted(self.files.items())},
            "removed": sorted(self.removed),
        }


def layer_files(upper: Path, max_bytes: int = 1 << 20) -> ImageFiles:
    """Walk an overlay upper layer: regular files (bytes kept up to max_bytes), folders,
    links; a whiteout (a 0/0 character device) is a file the layer removed."""
    out = ImageFiles()
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = "/" + str(full.relative_to(upper))
            st = full.lstat()
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out.removed.append(rel)
                continue
            entry: dict[str, Any] = {"mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISREG(st.st_mode):
                data = full.read_bytes() if st.st_size <= max_bytes else b""
                entry.update(type="file", size=st.st_size, sha256=hashlib.sha256(data).hexdigest(), hex=data.hex())
            elif stat.S_ISDIR(st.st_mode):
                entry["type"] = "dir"
            elif stat.S_ISLNK(st.st_mode):
                entry.update(type="link", target=os.readlink(full))
            else:
                entry["type"] = "other"
            out.files[rel] = entry
    return out


@dataclass
class BuilderSpec:
    instance_id: str
    address: str  # the loopback address the sandbox reports as the instance's public IP
    public_key: str  # OpenSSH public key of the instance's key pair
    hostname: str
    chef_exit_code: int = 0
    chef_output: str = ""
    sysprep_exit_code: int = 0
    sysprep_output: str = ""


class LinuxBuilder:
    """One builder machine. boot() returns once sshd accepts connections (or raises
    BuilderError); stop() ends every process of it; snapshot() reads its image layer.
    Subclasses (windows.py) change who logs in, where, with which shell."""

    platform = "linux"
    login_user = LOGIN_USER
    login_uid = LOGIN_UID
    login_home = f"/home/{LOGIN_USER}"  # under /home: hidden host folder, bind-mounted from the base layer
    login_shell = "/bin/sh"
    authorized_keys = "%h/.ssh/authorized_keys"  # sshd's AuthorizedKeysFile

    def __init__(self, home: Path, spec: BuilderSpec) -> None:
        self.home = home
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home / "builder.log"
        self.record_dir = home / "record"
        self.upper = home / "upper"

    # -- layers ------------------------------------------------------------------------
    def _write_base(self) -> Path:
        base = self.home / "base"
        etc = base / "etc"
        (etc / "sudoers.d").mkdir(parents=True)
        (etc / "ssh").mkdir()
        user, uid = self.login_user, self.login_uid
        for name, line in (
            ("passwd", f"{user}:x:{uid}:{uid}:EC2 Default User:{self.login_home}:{self.login_shell}\n"),
            ("group", f"{user}:x:{uid}:\n"),
            ("shadow", f"{user}:*:20000:0:99999:7:::\n"),
        ):
            src = Path("/etc", name)
            (etc / name).write_text(src.read_text() + line)
            shutil.copymode(src, etc / name)
            st = src.stat()
            os.chown(etc / name, st.st_uid, st.st_gid)
        sudoers = etc / "sudoers.d" / "90-cloud-init-users"
        sudoers.write_text(f"{user} ALL=(ALL) NOPASSWD:ALL\n")
        sudoers.chmod(0o440)
        (etc / "ssh" / "sshd_config.builder").write_text(
            "\n".join(
                [
                    f"ListenAddress {self.spec.address}:22",
                    "HostKey /run/sshd-host-key",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin no",
                    "UsePAM no",
                    f"AllowUsers {user}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "Subsystem sftp internal-sftp",
                    "PidFile /run/sshd.pid",
                    "",
                ]
            )
        )
        (etc / "hostname").write_text(self.spec.hostname + "\n")
        (etc / "hosts").write_text(Path("/etc/hosts").read_text() + f"127.0.1.1 {self.spec.hostname}\n")
        lib = base / "usr" / "local" / "lib" / "sandbox-builder"
        lib.mkdir(parents=True)
        for module in Path(__file__).parent.glob("*_recorder.py"):
            shutil.copy(module, lib / module.name)
        self._write_login(base)
        return base

    def _write_login(self, base: Path) -> None:
        """The login user's key and Chef (Linux: ~/.ssh/authorized_keys, /usr/local/bin/chef-solo)."""
        ssh_dir = base / "home" / LOGIN_USER / ".ssh"
        ssh_dir.mkdir(parents=True)
        (ssh_dir / "authorized_keys").write_text(self.spec.public_key.strip() + "\n")
        for p in (ssh_dir.parent, ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(p, LOGIN_UID, LOGIN_UID)
        ssh_dir.chmod(0o700)
        ssh_dir.parent.chmod(0o700)
        chef = base / "usr" / "local" / "bin" / "chef-solo"
        chef.parent.mkdir(parents=True)
        chef.write_text(RECORDER.read_text())
        chef.chmod(0o755)

    def _boot_script(self, base: Path) -> str:
        n = self.home / "root"
        hidden = "\n".join(f"mount -t tmpfs -o size=1m,mode=0755 hidden {n}{d}" for d in HIDDEN if os.path.isdir(d))
        # The base layer must be on a file system of its own (the kernel refuses two lower
        # layers of one overlay where one is inside the other): a tmpfs copy, in the namespace.
        layer = self.home / "base-fs"
        return f"""set -eu
mount --make-rprivate /
mkdir -p {layer}
mount -t tmpfs -o size=16m,mode=0755 base {layer}
cp -a {base}/. {layer}/
mount -t overlay builder -o lowerdir={layer}:/,upperdir={self.upper},workdir={self.home}/work {n}
{hidden}
{self._home_mount(layer, n)}
mount -t proc proc {n}/proc
mount --rbind /dev {n}/dev
mount -t tmpfs -o mode=1777 tmp {n}/tmp
mount -t tmpfs -o mode=0755 run {n}/run
mkdir -p {n}{RECORD_DIR} {n}/run/sshd
mount --bind {self.record_dir} {n}{RECORD_DIR}
hostname {self.spec.hostname}
ssh-keygen -q -t ed25519 -N '' -f {n}/run/sshd-host-key </dev/null
exec chroot {n} /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config.builder
"""

    def _home_mount(self, layer: Path, n: Path) -> str:
        # the login user's home is in the base layer: bring it back above the hidden /home
        return f"mkdir -p {n}{self.login_home}\nmount --bind {layer}{self.login_home} {n}{self.login_home}"

    # -- lifecycle -----------------------------------------------------------------------
    def boot(self, timeout: float = BOOT_TIMEOUT) -> None:
        for d in ("upper", "work", "root", "record"):
            (self.home / d).mkdir(parents=True, exist_ok=True)
        (self.record_dir / "chef-solo.json").write_text(
            json.dumps(
                {
                    "exit_code": self.spec.chef_exit_code,
                    "output": self.spec.chef_output,
                    "sysprep_exit_code": self.spec.sysprep_exit_code,
                    "sysprep_output": self.spec.sysprep_output,
                }
            )
        )
        base = self._write_base()
        script = self.home / "boot.sh"
        script.write_text(self._boot_script(base))
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--pid", "--uts", "--ipc", "--kill-child", "sh", str(script)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection((self.spec.address, 22), timeout=1) as s:
                s.settimeout(2)
                if s.recv(16).startswith(b"SSH-"):
                    return
            time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
        self.stop()
        raise BuilderError(
            f"builder of {self.spec.instance_id} did not start its SSH server on {self.spec.address}:22 "
            f"in {timeout:.0f} s: {' | '.join(tail) or 'no output'}"
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """End every process of the builder (its PID namespace) and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)  # unshare; --kill-child takes its namespace down with it
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def snapshot(self) -> ImageFiles:
        return layer_files(self.upper)

    def events(self) -> list[dict[str, Any]]:
        """What the builder's shell recorded besides chef-solo (the Windows builder's)."""
        return []

    def records(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.record_dir.glob("call-*.json")):  # chef-solo's records
            with contextlib.suppress(ValueError):
                out.append(json.loads(p.read_text()))
        return out

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)
