"""The local AWS account: moto in server mode, in-process, with the sandbox's extensions.

Importing this package points ``MOTO_AMIS_PATH`` at ``sandbox/amis.json`` (the
vendor base images, EBS-backed) unless the variable is already set, so moto
does not load its large default AMI list.  See docs/sandbox.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

AMIS_PATH = Path(__file__).resolve().parents[1] / "amis.json"
os.environ.setdefault("MOTO_AMIS_PATH", str(AMIS_PATH))

from moto.ec2.models import amis as _moto_amis  # noqa: E402

if os.environ["MOTO_AMIS_PATH"] == str(AMIS_PATH):
    # moto reads the file at import time: if it was imported before us, swap the list in.
    _moto_amis.AMIS = json.loads(AMIS_PATH.read_text())

from .faults import Faults  # noqa: E402
from .sandbox import AwsSandbox, install_extensions  # noqa: E402

__all__ = ["AMIS_PATH", "AwsSandbox", "Faults", "install_extensions"]
