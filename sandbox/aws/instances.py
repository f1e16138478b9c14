"""EC2 instances with a machine behind them: the sandbox's builders wired to moto's calls.

RunInstances boots a builder (``sandbox/builders``) for an instance when all of this holds, as
it must on AWS for Packer to reach its builder over SSH:

* the instance was launched with a key pair whose public key the account holds (Packer's
  temporary key pair, made by CreateKeyPair);
* (a Windows image gets the Windows-shaped builder: sandbox/builders/windows.py);
* it has a public IP (the subnet maps one, or AssociatePublicIpAddress): the sandbox's
  "internet" is this machine's loopback, so the public IP it reports is a loopback address
  where the builder's SSH server listens. The private IP is moto's and reaches nothing;
* one of its security groups lets tcp/22 in from this machine (127.0.0.1).

Otherwise the instance stays a record, as before, and the sandbox says why in
``/_sandbox/builders`` (``skipped``): Packer would wait for SSH until its ``ssh_timeout``, as
it would on AWS. StopInstances stops the builder, CreateImage keeps its disk layer as the
image's files, TerminateInstances removes it.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from moto.ec2.models import amis as _amis
from moto.ec2.models import instances as _instances

from .state import RUNTIME

log = logging.getLogger("sandbox.builders")
_ORIGINAL: dict[str, Any] = {}
HOST = ipaddress.ip_address("127.0.0.1")


def _groups(instance: Any) -> list[Any]:
    groups = list(getattr(instance, "security_groups", None) or [])
    for nic in getattr(instance, "nics", {}).values():
        for g in getattr(nic, "group_set", None) or []:
            if g not in groups:
                groups.append(g)
    return groups


def ssh_allowed(instance: Any, port: int = 22) -> bool:
    """Does any security group of the instance let tcp/port in from this machine?"""
    for group in _groups(instance):
        for rule in getattr(group, "ingress_rules", []):
            if rule.ip_protocol not in ("tcp", "6", "-1"):
                continue
            if rule.ip_protocol != "-1" and not (int(rule.from_port) <= port <= int(rule.to_port)):
                continue
            cidr = (rule.ip_range or {}).get("CidrIp")
            if cidr and HOST in ipaddress.ip_network(cidr, strict=False):
                return True
    return False


def why_no_builder(backend: Any, instance: Any) -> str | None:
    """None when the instance gets a builder; else why not (for /_sandbox/builders)."""
    key_name = getattr(instance, "key_name", None)
    if not key_name:
        return None  # not a machine anyone logs into: no builder, nothing to say
    key_pair = backend.key_pairs.get(key_name)
    if key_pair is None or not getattr(key_pair, "material_public", None):
        return f"key pair {key_name!r} is not one the account holds"
    if not instance.public_ip:
        return "no public IP (the subnet maps none and AssociatePublicIpAddress was not set): nothing reaches it"
    if not ssh_allowed(instance):
        return "no security group of the instance lets tcp/22 in from 127.0.0.1"
    return ""


def _run_instances(self: Any, *args: Any, **kwargs: Any) -> Any:
    reservation = _ORIGINAL["run_instances"](self, *args, **kwargs)
    builders = RUNTIME.builders
    if builders is None or not builders.enabled:
        return reservation
    for instance in reservation.instances:
        why = why_no_builder(self, instance)
        if why is None:
            continue
        if why:
            builders.note_skipped(instance.id, why)
            continue
        address = builders.allocate_address()
        instance.nics[0].public_ip = address
        hostname = "ip-" + str(instance.private_ip).replace(".", "-")
        platform = "windows" if getattr(instance, "platform", None) == "windows" else "linux"
        public_key = self.key_pairs[instance.key_name].material_public.decode()
        builders.launch(instance.id, address, public_key, hostname, platform=platform)
    return reservation


def _stop_instances(self: Any, instance_ids: list[str]) -> Any:
    out = _ORIGINAL["stop_instances"](self, instance_ids)
    if RUNTIME.builders is not None:
        for instance_id in instance_ids:
            RUNTIME.builders.stop_instance(instance_id)
    return out


def _terminate_instances(self: Any, instance_ids: list[str]) -> Any:
    out = _ORIGINAL["terminate_instances"](self, instance_ids)
    if RUNTIME.builders is not None:
        for instance_id in instance_ids:
            RUNTIME.builders.terminate_instance(instance_id)
    return out


def _create_image(self: Any, instance_id: str, *args: Any, **kwargs: Any) -> Any:
    ami = _ORIGINAL["create_image"](self, instance_id, *args, **kwargs)
    if RUNTIME.builders is not None and RUNTIME.builders.has(instance_id):
        RUNTIME.builders.image_created(ami.id, instance_id)
    return ami


def install() -> None:
    if _ORIGINAL:
        return
    backend = _instances.InstanceBackend
    _ORIGINAL["run_instances"] = backend.run_instances
    _ORIGINAL["stop_instances"] = backend.stop_instances
    _ORIGINAL["terminate_instances"] = backend.terminate_instances
    backend.run_instances = _run_instances  # type: ignore[method-assign]
    backend.stop_instances = _stop_instances  # type: ignore[method-assign]
    backend.terminate_instances = _terminate_instances  # type: ignore[method-assign]
    # patches.install() wraps AmiBackend.create_image already: wrap what is there now
    _ORIGINAL["create_image"] = _amis.AmiBackend.create_image
    _amis.AmiBackend.create_image = _create_image  # type: ignore[method-assign]
