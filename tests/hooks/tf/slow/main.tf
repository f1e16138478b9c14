# Test module (no provider): an apply that takes a while, with its state in S3 (the sandbox) and
# S3-native locking, so a test can interrupt or kill Terraform while it holds the lock.
terraform {
  backend "s3" {}
}
variable "seconds" {
  type    = number
  default = 60
}
variable "run" {
  type    = string
  default = "1"
}
resource "terraform_data" "slow" {
  input = var.run
  provisioner "local-exec" {
    command = "sleep ${var.seconds}"
  }
}
output "run" {
  value = terraform_data.slow.output
}
