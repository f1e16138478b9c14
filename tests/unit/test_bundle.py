"""Release bundles: deterministic, content-addressed, complete, and what a re-release bakes."""

from __future__ import annotations

import os
import shutil

import pytest

from amirelease import bundle, catalog
from amirelease.errors import ConfigError
from tests.conftest import REPO


@pytest.fixture
def include(tmp_path):
    root = tmp_path / "include"
    shutil.copytree(REPO / "include", root)
    return root


def _pack(root):
    app = catalog.get_app("demo-web", root / "apps")
    return bundle.pack_app(app, root)


def test_digest_is_stable_for_identical_inputs(include, tmp_path, monkeypatch):
    first = _pack(include)
    import time

    later = time.time() + 86_400
    monkeypatch.setattr(time, "time", lambda: later)  # packed a day later (gzip headers carry a time)
    copy = tmp_path / "copy"
    shutil.copytree(include, copy)  # another path
    for f in copy.rglob("*"):
        os.utime(f, (1_000_000_000, 1_000_000_000))  # other times (a fresh checkout has its own)
    assert _pack(copy).sha256 == first.sha256 == _pack(include).sha256
    assert first.data == _pack(copy).data


@pytest.mark.parametrize(
    "path",
    [
        "cookbooks/demo-web/recipes/default.rb",
        "cookbooks/linux-base/recipes/default.rb",
        "packer/linux.pkr.hcl",
        "packer/variables.pkr.hcl",
        "terraform/demo-web/main.tf",
        "apps/demo-web.yaml",
    ],
)
def test_digest_changes_when_any_input_changes(include, path):
    before = _pack(include).sha256
    with open(include / path, "a") as f:
        f.write("\n# changed\n")
    assert _pack(include).sha256 != before


def test_other_apps_and_platforms_are_not_in_the_bundle(include):
    before = _pack(include)
    assert "packer/windows.pkr.hcl" not in before.files
    assert not [f for f in before.files if f.startswith(("cookbooks/demo-win", "terraform/demo-win"))]
    (include / "packer" / "windows.pkr.hcl").write_text("# changed\n")
    (include / "terraform" / "demo-win" / "main.tf").write_text("# changed\n")
    assert _pack(include).sha256 == before.sha256


def test_unpacked_bundle_is_the_release_as_it_was(include, tmp_path):
    packed = _pack(include)
    (include / "cookbooks" / "demo-web" / "recipes" / "default.rb").write_text("# today's cookbook\n")
    dest = tmp_path / "unpacked"
    names = bundle.unpack(packed.data, dest)
    assert set(names) == set(packed.files)
    assert "today's cookbook" not in (dest / "cookbooks/demo-web/recipes/default.rb").read_text()
    app = bundle.load_app(dest, "demo-web")
    assert app.infrastructure.module == "terraform/demo-web"
    assert bundle.pack_app(app, dest).sha256 == packed.sha256  # re-packing gives the same digest


def test_a_missing_input_is_named(include):
    (include / "packer" / "variables.pkr.hcl").unlink()
    with pytest.raises(ConfigError, match=r"packer/variables\.pkr\.hcl not found"):
        _pack(include)


def test_unpack_refuses_links_and_escapes(tmp_path):
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("evil")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ConfigError, match="not a plain file"):
        bundle.unpack(raw.getvalue(), tmp_path / "x")
    # an absolute name under tmp_path, so that a broken check writes nowhere that matters
    for name in ("../outside", f"{tmp_path}/outside", "a/../../outside"):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
        with pytest.raises(ConfigError, match="points outside the bundle"):
            bundle.unpack(raw.getvalue(), tmp_path / "y")
    assert not (tmp_path / "outside").exists()


def test_unpack_keeps_an_executable_bit_and_drops_special_ones(tmp_path):
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, mode in (("bin/run.sh", 0o4777), ("conf/app.yaml", 0o666)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 2, mode
            tar.addfile(info, io.BytesIO(b"ok"))
    assert bundle.unpack(raw.getvalue(), tmp_path / "z") == ["bin/run.sh", "conf/app.yaml"]
    assert (tmp_path / "z/bin/run.sh").stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "z/conf/app.yaml").stat().st_mode & 0o7777 == 0o644
