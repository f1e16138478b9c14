# Variables shared by every platform's template (packer build loads this file and the
# platform's <platform>.pkr.hcl from one folder; Packer 1.6 has no include of its own).
# Values come from the pipeline in a JSON var file; secrets only through var.secrets, from
# Packer's environment (PKR_VAR_secrets), sensitive, never argv, tags or the var file.

variable "region" { type = string }
variable "aws_max_retries" {
  type        = number
  default     = 9
  description = "API retries after the first try (throttling, 5xx): the pipeline sets it from [ami_release] aws_max_attempts (PKR_VAR_aws_max_retries)"
}
variable "ami_regions" {
  type    = list(string)
  default = []
}
variable "ec2_endpoint" {
  type    = string
  default = ""
}
variable "source_ami" { type = string }
variable "ami_name" { type = string }
variable "ami_description" {
  type    = string
  default = ""
}
variable "instance_type" { type = string }
variable "subnet_id" {
  type    = string
  default = ""
}
variable "security_group_id" {
  type        = string
  description = "The builder's security group, made (and deleted) by the pipeline, tagged with the release"
}
variable "temporary_key_pair_name" {
  type        = string
  description = "Named after the release, so a retry can delete what a killed build left"
}
variable "tags" { type = map(string) }
variable "run_tags" { type = map(string) }
variable "run_list" { type = list(string) }
variable "cookbooks_dir" { type = string }
variable "app_version" { type = string }
variable "chef_node_json" {
  type        = string
  default     = "{}"
  description = "The node JSON chef-solo reads with -j (plugins/amirelease/chef.py); never a secret"
}
variable "secrets" {
  type      = map(string)
  default   = {}
  sensitive = true
}

# How Packer reaches the builder and installs Chef ([ami_release] builder_* and
# chef_preinstalled; plugins/amirelease/operators/bake.py builder_settings).
variable "ssh_interface" {
  type        = string
  default     = "private_ip"
  description = "Which address of the builder Packer connects to; private_ip: the workers reach it inside the VPC"
}
variable "associate_public_ip_address" {
  type    = bool
  default = false
}
variable "ssh_timeout" {
  type    = string
  default = "10m"
}
variable "chef_skip_install" {
  type        = bool
  default     = false
  description = "true when the base image already has Chef Infra Client (no download from omnitruck at bake time)"
}
