"""The Windows builder: the Linux builder's machine, shaped as Packer's SSH communicator finds a
Windows Server builder with OpenSSH Server (what include/packer/windows/ssh_bootstrap.ps1 sets
up on AWS).

* ``Administrator`` logs in with the key pair's public key from
  ``C:\\ProgramData\\ssh\\administrators_authorized_keys`` (Windows OpenSSH's file for
  administrators), no sudo: Administrator is the machine's administrator;
* the drive ``C:`` is ``/winroot/C:`` in the builder's image layer (``c:`` is the same folder):
  ``C:\\Windows\\Temp`` (where Packer uploads), ``C:\\ProgramData``, EC2Launch and Chef's
  folders exist as on the vendor image;
* the login shell is ``windows_shell_recorder.py``: it runs Packer's uploads for real (``scp``
  into the drive) and records the PowerShell scripts, the chef-solo call and Sysprep, giving the
  few statements our template uses their effect on the drive (see that module).

The image's files are the drive's changes, so a test can ask whether the data-bag secret, the
node JSON or the builder's SSH key went into the image.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .linux import LinuxBuilder

ROOT = "/winroot"
AUTHORIZED_KEYS = f"{ROOT}/C:/ProgramData/ssh/administrators_authorized_keys"
SHELL = "/usr/local/lib/sandbox-builder/windows_shell_recorder.py"
FOLDERS = (
    "C:/Windows/Temp",
    "C:/ProgramData/ssh",
    "C:/ProgramData/Amazon/EC2Launch",
    "C:/Program Files/Amazon/EC2Launch",
    "C:/opscode/chef/bin",
    "C:/Users/Administrator",
)


class WindowsBuilder(LinuxBuilder):
    platform = "windows"
    login_user = "Administrator"
    login_uid = 1951
    login_home = ROOT
    login_shell = SHELL
    authorized_keys = AUTHORIZED_KEYS

    def _write_login(self, base: Path) -> None:
        drive = base / ROOT.lstrip("/")
        for folder in FOLDERS:
            (drive / folder).mkdir(parents=True, exist_ok=True)
        (drive / "c:").symlink_to("C:")
        keys = base / AUTHORIZED_KEYS.lstrip("/")
        keys.write_text(self.spec.public_key.strip() + "\n")
        keys.chmod(0o600)
        for dirpath, dirnames, filenames in os.walk(drive):
            for name in [*dirnames, *filenames]:
                os.lchown(os.path.join(dirpath, name), self.login_uid, self.login_uid)
        os.chown(drive, self.login_uid, self.login_uid)
        (base / SHELL.lstrip("/")).chmod(0o755)

    def _home_mount(self, layer: Path, n: Path) -> str:
        return ""  # the drive is part of the image: no separate home mount

    def boot(self, timeout: float = 20.0) -> None:
        self.record_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.record_dir, self.login_uid, self.login_uid)  # the shell records as Administrator
        super().boot(timeout)

    def events(self) -> list[dict[str, object]]:
        import json

        path = self.record_dir / "windows-events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
