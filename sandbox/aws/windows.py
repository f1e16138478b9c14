"""GetPasswordData as AWS does it (moto answers a random 128-character string).

AWS (EC2 API reference, GetPasswordData): a Windows instance's generated Administrator
password, encrypted with the public key of the key pair it was launched with (RSA, PKCS#1
v1.5), base64-encoded. Generating it takes a while after launch: until then ``PasswordData``
is an empty string ("If you try to retrieve the password before it's available, the output
returns an empty string"). A Linux instance, or one launched without a key pair, has none
(empty string). ED25519 key pairs cannot encrypt: AWS does not support them for Windows
instances; the sandbox answers an empty string for them.

The sandbox generates the password once per instance and encrypts it once, so every call
answers the same ciphertext, available ``windows_password_seconds`` after the launch (sandbox
configuration, ``POST /_sandbox/config``; default 2 s, where AWS takes minutes). Packer
decrypts it with the private key of its temporary key pair.
"""

from __future__ import annotations

import base64
import secrets
import string
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from moto.core.utils import utcnow
from moto.ec2.models import windows as _windows

from .state import RUNTIME

_ORIGINAL: dict[str, Any] = {}
ALPHABET = string.ascii_letters + string.digits + "!@#$%&*()-=+?"


def generate_password(length: int = 32) -> str:
    """What EC2Launch would set: long, random, from upper, lower, digits and symbols."""
    while True:
        pw = "".join(secrets.choice(ALPHABET) for _ in range(length))
        if (
            any(c.islower() for c in pw)
            and any(c.isupper() for c in pw)
            and any(c.isdigit() for c in pw)
            and any(not c.isalnum() for c in pw)
        ):
            return pw


def encrypt_for(public_key_openssh: bytes, password: str) -> str | None:
    """base64(RSA PKCS#1 v1.5 encryption of the password with the key pair's public key);
    None for a key that cannot encrypt (ED25519)."""
    key = load_ssh_public_key(public_key_openssh)
    if not isinstance(key, rsa.RSAPublicKey):
        return None
    return base64.b64encode(key.encrypt(password.encode(), padding.PKCS1v15())).decode()


def _launched(instance: Any) -> datetime:
    value = instance.launch_time
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _get_password_data(self: Any, instance_id: str) -> str:
    instance = self.get_instance(instance_id)
    if instance.platform != "windows" or not instance.key_name:
        return ""
    cached = getattr(instance, "sandbox_password_data", None)
    if cached is not None:
        return str(cached)
    launched = _launched(instance)
    now = utcnow()
    if launched.tzinfo is None:
        now = now.replace(tzinfo=None)
    if (now - launched).total_seconds() < RUNTIME.config.windows_password_seconds:
        return ""  # still booting: AWS answers an empty string
    key_pair = self.key_pairs.get(instance.key_name)
    if key_pair is None or not getattr(key_pair, "material_public", None):
        return ""
    password = generate_password()
    data = encrypt_for(key_pair.material_public, password)
    instance.sandbox_password_data = data or ""
    instance.sandbox_admin_password = password  # what a Windows builder would accept
    return instance.sandbox_password_data


def install() -> None:
    if _ORIGINAL:
        return
    _ORIGINAL["get_password_data"] = _windows.WindowsBackend.get_password_data
    _windows.WindowsBackend.get_password_data = _get_password_data  # type: ignore[method-assign]
