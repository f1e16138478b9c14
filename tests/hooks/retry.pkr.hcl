# What retry settings does Packer get from the pipeline? (tests/unit/test_aws_retry_policy.py)
variable "out" { type = string }
variable "aws_max_retries" {
  type    = number
  default = -1
}
source "null" "peek" { communicator = "none" }
build {
  sources = ["source.null.peek"]
  provisioner "shell-local" {
    inline = ["echo \"max_retries=${var.aws_max_retries} polls=$AWS_MAX_ATTEMPTS delay=$AWS_POLL_DELAY_SECONDS\" > ${var.out}"]
  }
}
