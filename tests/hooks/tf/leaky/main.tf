# A module that runs a command on the worker (what contained.py refuses in an app's module):
# here it shows what such code could see of the worker's environment.
variable "out" { type = string }

resource "terraform_data" "peek" {
  provisioner "local-exec" {
    command = "env > ${var.out}"
  }
}
