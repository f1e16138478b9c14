# Windows AMI: vendor Windows Server image + stacked Chef cookbooks (windows-base first).
# Same variables and the same two sources as linux.pkr.hcl; the provisioned source talks
# WinRM over HTTPS (enabled by the user-data script) and finishes with Sysprep via EC2Launch.

# Shared variables: variables.pkr.hcl. Only this platform's own here.
variable "winrm_username" {
  type    = string
  default = "Administrator"
}

source "amazon-ebs" "base" {
  region                  = var.region
  ami_regions             = var.ami_regions
  custom_endpoint_ec2     = var.ec2_endpoint
  source_ami              = var.source_ami
  ami_name                = var.ami_name
  ami_description         = var.ami_description
  instance_type           = var.instance_type
  subnet_id               = var.subnet_id
  security_group_id       = var.security_group_id
  temporary_key_pair_name = var.temporary_key_pair_name
  tags                    = var.tags
  snapshot_tags           = var.tags
  run_tags                = var.run_tags
  max_retries             = var.aws_max_retries
}

build {
  # The two sources share source.amazon-ebs.base; each adds only what differs (Packer 1.6 can
  # add arguments to a source in a build block, not override them).
  source "source.amazon-ebs.base" {
    name            = "provisioned"
    communicator    = "winrm"
    winrm_username  = var.winrm_username
    winrm_use_ssl   = true
    winrm_insecure  = true
    winrm_timeout   = "30m"
    user_data_file  = "${path.root}/windows/winrm_bootstrap.ps1"
    run_volume_tags = var.run_tags
  }
  source "source.amazon-ebs.base" {
    name                       = "unprovisioned"
    communicator               = "none"
    skip_credential_validation = true
    skip_metadata_api_check    = true
    skip_region_validation     = true
  }

  provisioner "powershell" {
    except = ["amazon-ebs.unprovisioned"]
    # the powershell provisioner always passes environment_vars via an uploaded script, not argv
    environment_vars = [
      "CHEF_DATABAG_SECRET=${lookup(var.secrets, "chef_data_bag_secret", "")}",
      "CHEF_NODE_JSON_B64=${base64encode(var.chef_node_json)}",
    ]
    inline = [
      "New-Item -ItemType Directory -Force C:\\chef | Out-Null",
      "[IO.File]::WriteAllBytes('C:\\chef\\ami-release-node.json', [Convert]::FromBase64String($Env:CHEF_NODE_JSON_B64))",
      "Set-Content -NoNewline -Path C:\\chef\\encrypted_data_bag_secret -Value $Env:CHEF_DATABAG_SECRET",
      "icacls C:\\chef\\encrypted_data_bag_secret /inheritance:r /grant:r SYSTEM:F Administrators:F | Out-Null",
    ]
  }
  provisioner "chef-solo" {
    except          = ["amazon-ebs.unprovisioned"]
    guest_os_type   = "windows"
    cookbook_paths  = [var.cookbooks_dir]
    run_list        = var.run_list
    execute_command = "c:/opscode/chef/bin/chef-solo.bat --no-color -c {{.ConfigPath}} -j C:/chef/ami-release-node.json"
  }
  provisioner "powershell" {
    except = ["amazon-ebs.unprovisioned"]
    inline = [
      "Remove-Item -Force C:\\chef\\encrypted_data_bag_secret, C:\\chef\\ami-release-node.json",
      "& 'C:\\Program Files\\Amazon\\EC2Launch\\ec2launch.exe' sysprep --shutdown=false",
    ]
  }

  provisioner "shell-local" {
    only   = ["amazon-ebs.unprovisioned"]
    inline = ["echo 'NOTE: source amazon-ebs.unprovisioned has no communicator: the Chef run list (${join(" ", var.run_list)}) is NOT applied to this image. Use the provisioned source against a reachable account.'"]
  }
}
