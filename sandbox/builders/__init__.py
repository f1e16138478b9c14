"""Builders: real machines behind the instances Packer launches in the sandbox.

moto keeps an instance as a record. When an instance is launched with a key pair made through
the EC2 API (what Packer's temporary key pair is) from a Linux image, and its security groups
let this machine reach port 22, the sandbox boots a builder for it (``linux.py``): an SSH
server at the loopback address the sandbox reports as the instance's public IP. StopInstances
stops it (its disk stays), CreateImage keeps its disk layer as the image's files (the SSM
sandbox reads them: ``cat /etc/ami-release.json`` on an instance of that image answers from
them), TerminateInstances removes it, a reset or stop of the sandbox removes all.

Everything about builders lives in this package; ``sandbox/aws/instances.py`` wires it to
moto's EC2 calls. A Windows image gets a Windows-shaped builder (``windows.py``): the same SSH
server, Administrator's key in ``administrators_authorized_keys``, a ``C:`` drive and a shell
that records PowerShell, chef-solo and Sysprep.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .linux import BuilderError, BuilderSpec, ImageFiles, LinuxBuilder, available, port_free
from .windows import WindowsBuilder

__all__ = ["BuilderError", "Builders", "ImageFiles", "available"]

log = logging.getLogger("sandbox.builders")


class Builders:
    """The builders of one sandbox process. Thread-safe. Boots and stops run on one long-lived
    thread of their own, so a builder's ``unshare`` dies with this process and only then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._home: Path | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.enabled = False
        self.reason = "not started"
        self.chef_exit_code = 0
        self.chef_output = ""
        self.sysprep_exit_code = 0
        self.sysprep_output = ""
        self._by_instance: dict[str, LinuxBuilder] = {}
        self._boots: dict[str, Future[None]] = {}
        self._errors: dict[str, str] = {}
        self._skipped: dict[str, str] = {}
        self._records: dict[str, list[dict[str, Any]]] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._images: dict[str, ImageFiles] = {}
        self._image_instance: dict[str, str] = {}
        self._next = 0
        # one /16 of loopback per process: sandboxes of parallel test workers never collide
        self._net = ipaddress.ip_network(f"127.{100 + os.getpid() % 150}.0.0/16")

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, enabled: bool = True) -> Builders:
        ok, why = available() if enabled else (False, "turned off")
        with self._lock:
            self.enabled, self.reason = ok, why
            if ok and self._pool is None:
                self._home = Path(tempfile.mkdtemp(prefix="sandbox-builders-"))
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-builders")
        if not ok:
            log.warning("sandbox builders off: %s; Packer's provisioned source has no host to reach", why)
        return self

    def stop(self) -> None:
        self.reset()
        with self._lock:
            pool, self._pool = self._pool, None
            home, self._home = self._home, None
        if pool is not None:
            pool.shutdown(wait=True)
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)

    def reset(self) -> None:
        with self._lock:
            builders = list(self._by_instance.values())
            self._by_instance.clear()
            self._boots.clear()
            self._errors.clear()
            self._skipped.clear()
            self._records.clear()
            self._events.clear()
            self._images.clear()
            self._image_instance.clear()
            self.chef_exit_code, self.chef_output = 0, ""
            self.sysprep_exit_code, self.sysprep_output = 0, ""
        for b in builders:
            b.destroy()

    def configure(
        self,
        chef_exit_code: int | None = None,
        chef_output: str | None = None,
        sysprep_exit_code: int | None = None,
        sysprep_output: str | None = None,
    ) -> None:
        if sysprep_exit_code is not None:
            self.sysprep_exit_code = int(sysprep_exit_code)
        if sysprep_output is not None:
            self.sysprep_output = str(sysprep_output)
        if chef_exit_code is not None:
            self.chef_exit_code = int(chef_exit_code)
        if chef_output is not None:
            self.chef_output = str(chef_output)

    # -- addresses -------------------------------------------------------------------------
    def allocate_address(self) -> str:
        with self._lock:
            for _ in range(1000):
                self._next += 1
                addr = str(self._net.network_address + 256 + self._next)
                if port_free(addr):
                    return addr
        raise BuilderError(f"no free loopback address in {self._net} for a builder")

    # -- instances -------------------------------------------------------------------------
    def launch(self, instance_id: str, address: str, public_key: str, hostname: str, platform: str = "linux") -> None:
        """Boot a builder for the instance, in the background (Packer retries SSH until then)."""
        with self._lock:
            if not self.enabled or self._pool is None or self._home is None:
                return
            spec = BuilderSpec(
                instance_id=instance_id,
                address=address,
                public_key=public_key,
                hostname=hostname,
                chef_exit_code=self.chef_exit_code,
                chef_output=self.chef_output,
                sysprep_exit_code=self.sysprep_exit_code,
                sysprep_output=self.sysprep_output,
            )
            kind = WindowsBuilder if platform == "windows" else LinuxBuilder
            builder = kind(self._home / instance_id, spec)
            self._by_instance[instance_id] = builder
            self._boots[instance_id] = self._pool.submit(self._boot, builder)

    def _boot(self, builder: LinuxBuilder) -> None:
        try:
            builder.boot()
            log.info("builder %s: SSH on %s:22", builder.spec.instance_id, builder.spec.address)
        except (BuilderError, OSError) as err:
            log.error("builder %s failed to boot: %s", builder.spec.instance_id, err)
            with self._lock:
                self._errors[builder.spec.instance_id] = str(err)

    def note_skipped(self, instance_id: str, why: str) -> None:
        log.info("no builder for %s: %s", instance_id, why)
        with self._lock:
            self._skipped[instance_id] = why

    def has(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id in self._by_instance

    def stop_instance(self, instance_id: str) -> None:
        """StopInstances: the machine stops; its disk (the layer) stays for CreateImage."""
        builder = self._wait_booted(instance_id)
        if builder is not None:
            self._collect(instance_id, builder)
            builder.stop()

    def image_created(self, image_id: str, instance_id: str) -> None:
        builder = self._wait_booted(instance_id)
        if builder is None:
            return
        files = builder.snapshot()
        with self._lock:
            self._images[image_id] = files
            self._image_instance[image_id] = instance_id

    def terminate_instance(self, instance_id: str) -> None:
        builder = self._wait_booted(instance_id)
        if builder is None:
            return
        self._collect(instance_id, builder)
        with self._lock:
            self._by_instance.pop(instance_id, None)
            self._boots.pop(instance_id, None)
        builder.destroy()

    def _wait_booted(self, instance_id: str) -> LinuxBuilder | None:
        with self._lock:
            builder = self._by_instance.get(instance_id)
            boot = self._boots.get(instance_id)
        if boot is not None:
            boot.result(timeout=60)
        return builder

    def _collect(self, instance_id: str, builder: LinuxBuilder) -> None:
        records, events = builder.records(), builder.events()
        with self._lock:
            if records:
                self._records[instance_id] = records
            if events:
                self._events[instance_id] = events

    # -- what tests and the SSM sandbox read ------------------------------------------------
    def image_platform_path(self, image_id: str, path: str) -> str:
        """A guest path as it is kept in the image's layer (C:\\x -> /winroot/C:/x)."""
        if len(path) > 1 and path[1] == ":":
            return f"/winroot/{path[0].upper()}:{path[2:].replace(chr(92), '/')}"
        return path

    def image_file(self, image_id: str, path: str) -> bytes | None:
        path = self.image_platform_path(image_id, path)
        with self._lock:
            files = self._images.get(image_id)
        return None if files is None else files.read(path)

    def baked_by_builder(self, image_id: str) -> bool:
        with self._lock:
            return image_id in self._images

    def state(self) -> dict[str, Any]:
        with self._lock:
            live = dict(self._by_instance)
            out: dict[str, Any] = {
                "enabled": self.enabled,
                "reason": self.reason,
                "chef_exit_code": self.chef_exit_code,
                "errors": dict(self._errors),
                "skipped": dict(self._skipped),
                "images": {
                    i: {"instance": self._image_instance.get(i), **f.summary()} for i, f in self._images.items()
                },
            }
            records = {k: list(v) for k, v in self._records.items()}
            events = {k: list(v) for k, v in self._events.items()}
        for instance_id, b in live.items():
            records.setdefault(instance_id, b.records())
            events.setdefault(instance_id, b.events())
        out["chef_runs"] = records
        out["windows_steps"] = {k: v for k, v in events.items() if v}
        out["platforms"] = {i: b.platform for i, b in live.items()}
        out["running"] = {i: b.spec.address for i, b in live.items() if b.running}
        return out
