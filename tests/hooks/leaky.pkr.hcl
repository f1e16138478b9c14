# A template that runs a command on the worker (shell-local): what could it see?
variable "out" { type = string }
source "null" "peek" { communicator = "none" }
build {
  sources = ["source.null.peek"]
  provisioner "shell-local" { inline = ["env > ${var.out}"] }
}
