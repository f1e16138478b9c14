# Linux AMI: vendor base image + stacked Chef cookbooks (linux-base first, then the app's).
# Rendered variables come from the pipeline (PKR_VAR_* in Packer's environment); secrets
# only ever arrive through `var.secrets`, which is sensitive and never in argv or tags.
#
# One base source, two named variants in the build:
#   amazon-ebs.provisioned    SSH to the builder and run chef-solo (real AWS)
#   amazon-ebs.unprovisioned  no communicator: the provisioners are skipped (`except`), for
#                             accounts where no host is reachable (the local sandbox)

# Shared variables: variables.pkr.hcl. Only this platform's own here.
variable "ssh_username" {
  type    = string
  default = "ec2-user"
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
  shutdown_behavior       = "terminate"
}

build {
  # The two sources share source.amazon-ebs.base; each adds only what differs (Packer 1.6 can
  # add arguments to a source in a build block, not override them).
  source "source.amazon-ebs.base" {
    name                        = "provisioned"
    communicator                = "ssh"
    ssh_username                = var.ssh_username
    ssh_interface               = var.ssh_interface
    associate_public_ip_address = var.associate_public_ip_address
    ssh_timeout                 = var.ssh_timeout
    run_volume_tags             = var.run_tags
  }
  source "source.amazon-ebs.base" {
    name                       = "unprovisioned"
    communicator               = "none"
    skip_credential_validation = true
    skip_metadata_api_check    = true
    skip_region_validation     = true
  }

  # The data-bag secret reaches the builder through an env-var file that Packer uploads
  # and deletes (use_env_var_file: never on a command line), lands in the root-only path
  # Chef reads by default, and is shredded before the image is taken.
  provisioner "shell" {
    except           = ["amazon-ebs.unprovisioned"]
    use_env_var_file = true
    environment_vars = [
      "CHEF_DATABAG_SECRET=${lookup(var.secrets, "chef_data_bag_secret", "")}",
      "CHEF_NODE_JSON_B64=${base64encode(var.chef_node_json)}",
    ]
    execute_command = "chmod +x {{.Path}}; sudo -E sh -c '. {{.EnvVarFile}} && {{.Path}}'"
    inline = [
      "umask 077 && mkdir -p /etc/chef",
      "printf '%s' \"$CHEF_DATABAG_SECRET\" > /etc/chef/encrypted_data_bag_secret",
      "printf '%s' \"$CHEF_NODE_JSON_B64\" | base64 -d > /etc/chef/ami-release-node.json",
    ]
  }
  # The node JSON (run list, the release's identity, the app's attributes with its version) is
  # the pipeline's: chef-solo reads it with -j on every Packer version (1.6's `json` argument
  # takes flat strings only). See plugins/amirelease/chef.py.
  provisioner "chef-solo" {
    except          = ["amazon-ebs.unprovisioned"]
    cookbook_paths  = [var.cookbooks_dir]
    run_list        = var.run_list
    skip_install    = var.chef_skip_install
    execute_command = "{{if .Sudo}}sudo {{end}}chef-solo --no-color -c {{.ConfigPath}} -j /etc/chef/ami-release-node.json"
  }
  provisioner "shell" {
    except = ["amazon-ebs.unprovisioned"]
    inline = [
      "sudo shred -u /etc/chef/encrypted_data_bag_secret || true",
      "sudo rm -rf /tmp/packer-chef-solo /etc/chef/ami-release-node.json",
    ]
  }

  provisioner "shell-local" {
    only   = ["amazon-ebs.unprovisioned"]
    inline = ["echo 'NOTE: source amazon-ebs.unprovisioned has no communicator: the Chef run list (${join(" ", var.run_list)}) is NOT applied to this image. Use the provisioned source against a reachable account.'"]
  }
}
