# Windows AMI: vendor Windows Server image + stacked Chef cookbooks (windows-base first).
# Same variables and the same two sources as linux.pkr.hcl. The provisioned source uses the
# same communicator as Linux, SSH with the temporary key pair, to OpenSSH Server, which the
# user-data script (windows/ssh_bootstrap.ps1) starts with the key pair's public key for
# Administrator. Sysprep (EC2Launch) is the last provisioner, always: an image that was not
# generalised clones its machine identity into every instance (the bake checks it, see
# plugins/amirelease/hooks/packer.py sysprep_is_last).
#
# Why SSH, not WinRM: one protocol, one port (22) and one kind of credential for both platforms;
# key-pair authentication instead of the Administrator password decrypted from GetPasswordData
# and sent with basic auth over a certificate Packer does not verify (winrm_insecure); SCP
# uploads instead of WinRM's base64 chunks; no WinRM listener with basic auth left in the image.

# Shared variables: variables.pkr.hcl. Only this platform's own here.
variable "windows_username" {
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
    name                        = "provisioned"
    communicator                = "ssh"
    ssh_username                = var.windows_username
    ssh_interface               = var.ssh_interface
    associate_public_ip_address = var.associate_public_ip_address
    ssh_timeout                 = var.ssh_timeout
    user_data_file              = "${path.root}/windows/ssh_bootstrap.ps1"
    run_volume_tags             = var.run_tags
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
    skip_install    = var.chef_skip_install
    cookbook_paths  = [var.cookbooks_dir]
    run_list        = var.run_list
    execute_command = "c:/opscode/chef/bin/chef-solo.bat --no-color -c {{.ConfigPath}} -j C:/chef/ami-release-node.json"
  }
  # Last, always: the secret, the node JSON, Chef's staging folder and the builder's SSH key
  # out of the image, then Sysprep. Nothing may run after it.
  provisioner "powershell" {
    except = ["amazon-ebs.unprovisioned"]
    inline = [
      "Remove-Item -Force C:\\chef\\encrypted_data_bag_secret, C:\\chef\\ami-release-node.json",
      "Remove-Item -Recurse -Force C:\\Windows\\Temp\\packer-chef-solo",
      "Remove-Item -Force C:\\ProgramData\\ssh\\administrators_authorized_keys",
      "& 'C:\\Program Files\\Amazon\\EC2Launch\\ec2launch.exe' sysprep --shutdown=false",
    ]
  }

  provisioner "shell-local" {
    only   = ["amazon-ebs.unprovisioned"]
    inline = ["echo 'NOTE: source amazon-ebs.unprovisioned has no communicator: the Chef run list (${join(" ", var.run_list)}) is NOT applied to this image. Use the provisioned source against a reachable account.'"]
  }
}
