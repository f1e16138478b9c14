# Test template: a real amazon-ebs build whose provisioning step hangs, so the test can
# interrupt Packer while its builder instance is running.
variable "region" { type = string }
variable "ec2_endpoint" { type = string }
variable "source_ami" { type = string }
variable "run_tags" { type = map(string) }
variable "security_group_id" { type = string } # made by the caller, as the bake task does
source "amazon-ebs" "unprovisioned" {
  region                     = var.region
  custom_endpoint_ec2        = var.ec2_endpoint
  source_ami                 = var.source_ami
  ami_name                   = "interrupt-test-{{timestamp}}"
  instance_type              = "t3.micro"
  communicator               = "none"
  skip_credential_validation = true
  skip_metadata_api_check    = true
  skip_region_validation     = true
  run_tags                   = var.run_tags
  security_group_id          = var.security_group_id
}
build {
  sources = ["source.amazon-ebs.unprovisioned"]
  provisioner "shell-local" {
    inline = ["sleep 120"]
  }
}
