"""Release bundles: the exact inputs of one release in one content-addressed archive.

A bundle holds the app's catalog entry, the cookbooks of its run list, the Packer files and
the Terraform module, laid out like include/:

    apps/<app>.yaml
    cookbooks/<name>/...            (the platform base cookbook and the app's)
    packer/variables.pkr.hcl, packer/<platform>.pkr.hcl
    <infrastructure.module>/...     (e.g. terraform/demo-web/*.tf)

An app whose AMI project lives in its own git repository (docs/sources.md) is staged into the
same layout from exactly one commit: apps/<app>.yaml is the central entry merged with the
repository's ami-release.yaml, its cookbooks sit beside the platform's base cookbook, its
module under project/, and source.json says which repository, folder, ref and commit.

The archive is deterministic (sorted entries, no timestamps, owners or modes beyond x), so
identical inputs give identical bytes and the same sha256, whichever worker packs them. It is
stored next to the ledger record, ``releases/<app>/<release_id>/bundle.tar.gz``, its sha256 in
the record; bake and apply unpack it instead of reading the worker's checkout, and a rollback
bakes and applies the bundle of the release it repeats.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any

import yaml
from botocore.exceptions import ClientError

from amirelease import catalog
from amirelease.errors import AwsErrorFamily, ConfigError, PreflightError, aws_error_code, aws_error_family

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MAX_BUNDLE_BYTES = 64 * 1024 * 1024
SOURCE_FILE = "source.json"  # git-sourced apps: repository (no credentials), path, ref, commit
_SKIP_DIRS = {".terraform", "__pycache__", ".git", ".kitchen"}
_SKIP_FILES = {".terraform.lock.hcl", "terraform.tfstate", "terraform.tfstate.backup"}


def bundle_key(app: str, release_id: str) -> str:
    return f"releases/{app}/{release_id}/bundle.tar.gz"


@dataclass(frozen=True)
class Bundle:
    """A packed bundle in memory."""

    data: bytes
    sha256: str
    files: tuple[str, ...]


def _files_under(root: Path, rel: str) -> list[tuple[str, Path]]:
    base = root / rel
    if base.is_file():
        return [(rel, base)]
    out = []
    for path in sorted(base.rglob("*")):
        parts = path.relative_to(root).parts
        if any(p in _SKIP_DIRS for p in parts) or path.name in _SKIP_FILES or not path.is_file():
            continue
        out.append((PurePosixPath(*parts).as_posix(), path))
    return out


def members(app: catalog.App, root: Path, entry_file: Path) -> list[tuple[str, Path]]:
    """(name in the archive, file on disk) for every input of a release of `app`."""
    found: dict[str, Path] = {f"apps/{app.name}.yaml": entry_file}
    for cb in app.run_list:
        found.update(_files_under(root, f"cookbooks/{catalog.cookbook_name(cb)}"))
    for rel in catalog.packer_files(app.platform, root):
        found.update(_files_under(root, rel) or [(rel, root / rel)])
    found.update(_files_under(root, app.infrastructure.module))
    if (root / SOURCE_FILE).is_file():
        found[SOURCE_FILE] = root / SOURCE_FILE
    missing = [name for name, path in found.items() if not path.is_file()]
    if missing:
        raise ConfigError(
            f"release inputs of {app.name} are incomplete: {', '.join(missing)} not found under {root}",
            fix="restore the files (check the worker's checkout) or correct the catalog entry",
        )
    return sorted(found.items())


def pack(files: list[tuple[str, Path]]) -> Bundle:
    """A deterministic .tar.gz of the given files."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    data = out.getvalue()
    return Bundle(data=data, sha256=hashlib.sha256(data).hexdigest(), files=tuple(name for name, _ in files))


def pack_app(app: catalog.App, root: Path | None = None, entry_file: Path | None = None) -> Bundle:
    """The bundle of `app` from a checkout (include/ and the catalog folder by default)."""
    if entry_file is None:
        entry_file = catalog.app_file(app.name, root / "apps" if root else None)
    return pack(members(app, root or catalog.include_dir(), entry_file))


def read_source(root: Path) -> dict[str, Any] | None:
    """The recorded git source of an unpacked bundle (None: the app is embedded in the catalog)."""
    path = root / SOURCE_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def stage_git_project(
    entry: catalog.Entry, project: Path, stage: Path, source: dict[str, Any]
) -> tuple[catalog.App, Path]:
    """Lay out one commit's AMI project (exported into `project`) as a bundle folder in `stage`.

    The platform's parts come from the catalog checkout (include/): the base cookbook and the
    Packer files. Everything else comes from the commit. Returns the merged App and its entry file.
    """
    assert entry.source is not None
    include = catalog.include_dir()
    where = f"{source['repository']} at {source['commit'][:12]}: {entry.source.path}/{catalog.DEFINITION_FILE}"
    definition_file = project / catalog.DEFINITION_FILE
    if not definition_file.is_file():
        raise ConfigError(
            f"{source['repository']} at {source['commit'][:12]} has no {entry.source.path}/{catalog.DEFINITION_FILE}",
            fix="add the app's release definition there (docs/sources.md), or correct source.path in the central entry",
        )
    try:
        definition = yaml.safe_load(definition_file.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}", fix="fix the YAML syntax and push a new commit") from None
    merged = catalog.merge_definition(entry.document, definition, where)
    base = catalog.BASE_COOKBOOK[entry.platform]
    if (project / "cookbooks" / base).exists():
        raise ConfigError(
            f"{where}: the repository ships its own '{base}' cookbook",
            fix=f"remove cookbooks/{base} from the app's repository: the platform's base cookbook always runs first",
        )
    shutil.copytree(include / "cookbooks" / base, stage / "cookbooks" / base)
    if (project / "cookbooks").is_dir():
        for cookbook in sorted((project / "cookbooks").iterdir()):
            if cookbook.is_dir():
                shutil.copytree(cookbook, stage / "cookbooks" / cookbook.name)
    for rel in catalog.packer_files(entry.platform, include):
        src = include / rel
        if src.is_dir():
            shutil.copytree(src, stage / rel)
        else:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, stage / rel)
    module = merged.get("infrastructure", {}).get("module", "")
    rel_module = module.removeprefix(f"{catalog.PROJECT_DIR}/")
    if module and (project / rel_module).is_dir():
        shutil.copytree(project / rel_module, stage / module, ignore=shutil.ignore_patterns(*_SKIP_DIRS, *_SKIP_FILES))
    entry_file = stage / "apps" / f"{entry.name}.yaml"
    entry_file.parent.mkdir(parents=True, exist_ok=True)
    entry_file.write_text(yaml.safe_dump(merged, sort_keys=False))
    (stage / SOURCE_FILE).write_text(json.dumps(source, sort_keys=True, indent=2) + "\n")
    app = catalog.parse_app(merged, f"{entry.name} ({where})", stage)
    return app, entry_file


def unpack(data: bytes, dest: Path) -> list[str]:
    """Extract a bundle into dest; refuses anything but plain files inside dest."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise ConfigError(f"bundle is {len(data)} bytes, more than {MAX_BUNDLE_BYTES}", fix="keep inputs small")
    names = []
    root = dest.resolve()
    root.mkdir(parents=True, exist_ok=True)
    # Written by hand, not with TarFile.extract(filter="data"): that filter is Python 3.11.4+,
    # and Debian bookworm's python3 is 3.11.2 (found by the container test on a Debian base).
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for info in tar.getmembers():
            if not info.isfile():
                raise ConfigError(f"bundle member {info.name!r} is not a plain file", fix="rebuild the bundle")
            target = (root / info.name).resolve()
            if info.name.startswith("/") or not target.is_relative_to(root) or target == root:
                raise ConfigError(f"bundle member {info.name!r} points outside the bundle", fix="rebuild the bundle")
            source = tar.extractfile(info)
            if source is None:  # a regular file always has its bytes; kept for the type checker
                raise ConfigError(f"bundle member {info.name!r} has no content", fix="rebuild the bundle")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
            target.chmod(0o600 | (info.mode & 0o755))  # never setuid/setgid or writable by others
            names.append(info.name)
    return names


def load_app(root: Path, app_name: str) -> catalog.App:
    """The App as recorded in an unpacked bundle (validated against today's schema)."""
    entry = root / "apps" / f"{app_name}.yaml"
    if not entry.is_file():
        raise ConfigError(f"the bundle has no catalog entry for {app_name}", fix="choose another release")
    return catalog.parse_app(catalog.read_entry(entry), str(entry), root)


class BundleStore:
    """Bundles in the ledger bucket (S3 client from the provider's S3Hook)."""

    def __init__(self, s3_client: S3Client, bucket: str) -> None:
        self.s3 = s3_client
        self.bucket = bucket

    def exists(self, key: str, sha256: str) -> bool:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if aws_error_family(exc) is AwsErrorFamily.NOT_FOUND:
                return False
            raise
        return bool(head.get("Metadata", {}).get("sha256") == sha256)

    def put(self, key: str, bundle: Bundle) -> None:
        """Store a bundle; a retry finds it already there (same key, same digest) and writes nothing."""
        if self.exists(key, bundle.sha256):
            return
        self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=bundle.data,
            ContentType="application/gzip",
            Metadata={"sha256": bundle.sha256},
            ChecksumAlgorithm="SHA256",
        )

    def get(self, key: str, sha256: str) -> bytes:
        """The bundle's bytes, verified against the digest recorded in the ledger."""
        try:
            data: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise PreflightError(
                f"release bundle s3://{self.bucket}/{key} cannot be read ({aws_error_code(exc)})",
                fix="check the ledger bucket and the worker's s3:GetObject permission; a bundle is never rebuilt",
            ) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise PreflightError(
                f"release bundle s3://{self.bucket}/{key} has sha256 {actual[:16]}…, the ledger says {sha256[:16]}…",
                fix="the bundle was changed after the release; restore it from the bucket's versions",
            )
        return data


@contextmanager
def unpacked(store: BundleStore, key: str, sha256: str) -> Iterator[Path]:
    """A temporary folder with the verified bundle's files, removed afterwards."""
    with TemporaryDirectory(prefix="release-bundle-") as tmp:
        unpack(store.get(key, sha256), Path(tmp))
        yield Path(tmp)
