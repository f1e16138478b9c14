"""The policy file: loaded, validated, errors name the file and the field."""

from __future__ import annotations

import pytest
import yaml

from amirelease.errors import ConfigError
from amirelease.retention.policy import DEFAULT_POLICY_PATH, load_policy


def _write(tmp_path, mutate):
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    mutate(data)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_policy_is_the_rule():
    p = load_policy()
    assert (p.min_age_days, p.grace_days) == (60, 7)
    assert (p.protect_tag_key, p.protect_tag_value) == ("RetainIndefinitely", "true")
    assert (p.mark_tag, p.mark_op) == ("maid_status", "deregister")
    assert p.hold_enabled and p.hold_tag == "ForensicHold"
    assert p.protect_launch_templates and p.protect_launch_configurations
    assert p.max_deregistrations_per_run > 0 and p.dry_run is False


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(min_age_days="60"), "min_age_days"),
        (lambda d: d.update(grace_days=0), "grace_days"),
        (lambda d: d.update(regions=[]), "regions"),
        (lambda d: d.update(regions=["US East"]), "regions/0"),
        (lambda d: d["protect_tag"].update(value=True), "protect_tag/value"),
        (lambda d: d["mark"].update(message="a: b"), "mark/message"),
        (lambda d: d["protections"].pop("forensic_hold"), "protections"),
        (lambda d: d.update(max_deregistrations_per_run=-1), "max_deregistrations_per_run"),
        (lambda d: d.update(dry_run="no"), "dry_run"),
        (lambda d: d.update(typo_field=1), "(top level)"),
    ],
)
def test_invalid_policy_names_file_and_field(tmp_path, mutate, field):
    path = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert str(path) in str(err.value)
    assert f"{field}:" in str(err.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_age_days: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(bad)
