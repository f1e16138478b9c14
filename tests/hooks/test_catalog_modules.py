"""Every shipped app's Terraform module is valid Terraform (init without a backend + validate),
Windows included, so a broken module is found here rather than in someone's release."""

from __future__ import annotations

import pytest

from amirelease import catalog
from amirelease.hooks.terraform import TerraformHook
from amirelease.hooks.tool import workdir

APPS = catalog.app_names()


@pytest.mark.parametrize("app", APPS)
def test_the_apps_terraform_module_validates(app):
    spec = catalog.get_app(app)
    hook = TerraformHook()
    lines: list[str] = []
    with workdir("terraform") as wd:
        module = hook.prepare(catalog.include_dir() / spec.infrastructure.module, wd, None)
        env = hook.environment(wd, {"AWS_REGION": spec.home_region})
        assert hook.init(module, None, env, lines.append).returncode == 0, lines[-15:]
        run = hook.validate(module, env, lines.append)
    assert run.returncode == 0 and not run.errors, lines[-15:]
    assert "The module is valid." in lines
