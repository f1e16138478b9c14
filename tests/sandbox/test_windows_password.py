"""GetPasswordData as AWS documents it (sandbox/aws/windows.py), decrypted the way Packer does:
with the private key CreateKeyPair returned (RSA, PKCS#1 v1.5, base64)."""

from __future__ import annotations

import base64
import time

from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import load_pem_private_key


def _run(sandbox, image: str, key_name: str | None) -> str:
    ec2 = sandbox.client("ec2")
    kwargs = {"KeyName": key_name} if key_name else {}
    return ec2.run_instances(
        ImageId=sandbox.account["vendor_images"][image],
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.medium",
        SubnetId=sandbox.account["subnet_ids"][0],
        **kwargs,
    )["Instances"][0]["InstanceId"]


def _password_data(sandbox, instance_id: str) -> str:
    return sandbox.client("ec2").get_password_data(InstanceId=instance_id)["PasswordData"]


def test_empty_until_generated_then_encrypted_with_the_key_pair(sandbox):
    sandbox.configure(windows_password_seconds=1.0)
    ec2 = sandbox.client("ec2")
    private = load_pem_private_key(ec2.create_key_pair(KeyName="packer_win")["KeyMaterial"].encode(), None)
    instance_id = _run(sandbox, "windows", "packer_win")

    assert _password_data(sandbox, instance_id) == ""  # still booting, as AWS answers then
    time.sleep(1.2)
    data = _password_data(sandbox, instance_id)
    assert data and _password_data(sandbox, instance_id) == data  # generated once: the same answer every time
    password = private.decrypt(base64.b64decode(data), padding.PKCS1v15()).decode()
    assert len(password) >= 16 and any(c.isupper() for c in password) and any(not c.isalnum() for c in password)

    # another key cannot read it (cryptography's PKCS#1 v1.5 uses implicit rejection: it answers
    # random bytes instead of raising)
    other = load_pem_private_key(ec2.create_key_pair(KeyName="other")["KeyMaterial"].encode(), None)
    try:
        assert other.decrypt(base64.b64decode(data), padding.PKCS1v15()) != password.encode()
    except ValueError:
        pass


def test_no_password_for_linux_or_without_a_key_pair(sandbox):
    sandbox.configure(windows_password_seconds=0.0)
    sandbox.client("ec2").create_key_pair(KeyName="k")
    assert _password_data(sandbox, _run(sandbox, "amazon-linux", "k")) == ""
    assert _password_data(sandbox, _run(sandbox, "windows", None)) == ""
