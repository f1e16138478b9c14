"""A Windows image must be generalised by Sysprep as the very last step of the provisioned build
(hooks/packer.py sysprep_problem, checked by the bake before anything is made in AWS)."""

from __future__ import annotations

from pathlib import Path

from amirelease.hooks.packer import sysprep_problem

REPO = Path(__file__).resolve().parents[2]
SHIPPED = (REPO / "include" / "packer" / "windows.pkr.hcl").read_text()
SYSPREP_LINE = "      \"& 'C:\\\\Program Files\\\\Amazon\\\\EC2Launch\\\\ec2launch.exe' sysprep --shutdown=false\",\n"


def _template(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "windows.pkr.hcl"
    path.write_text(text)
    return path


def test_the_shipped_template_ends_with_sysprep(tmp_path):
    assert SYSPREP_LINE in SHIPPED
    assert sysprep_problem(_template(tmp_path, SHIPPED)) is None


def test_a_step_after_sysprep_is_refused(tmp_path):
    text = SHIPPED.replace(
        '  provisioner "shell-local" {',
        '  provisioner "powershell" {\n    except = ["amazon-ebs.unprovisioned"]\n'
        '    inline = ["Install-WindowsFeature Web-Server"]\n  }\n  provisioner "shell-local" {',
    )
    problem = sysprep_problem(_template(tmp_path, text))
    assert problem == (
        "the last step of windows.pkr.hcl for amazon-ebs.provisioned is a powershell provisioner ending with "
        "'Install-WindowsFeature Web-Server', not Sysprep"
    )


def test_sysprep_that_is_not_the_last_line_is_refused(tmp_path):
    text = SHIPPED.replace(SYSPREP_LINE, "").replace(
        '      "Remove-Item -Recurse -Force', SYSPREP_LINE + '      "Remove-Item -Recurse -Force'
    )
    assert "not Sysprep" in sysprep_problem(_template(tmp_path, text))


def test_a_step_only_for_the_unprovisioned_source_does_not_count(tmp_path):
    # the shipped template's last block is shell-local for the unprovisioned source: ignored
    assert SHIPPED.rstrip().endswith("}") and '"shell-local"' in SHIPPED.split('provisioner "powershell"')[-1]
    assert sysprep_problem(_template(tmp_path, SHIPPED)) is None
