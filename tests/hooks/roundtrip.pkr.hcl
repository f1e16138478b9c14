# Test template (null builder, no AWS): prints base64(jsonencode(var.secrets)) so a test can
# check that secrets reach Packer exactly as they are in Vault.
variable "secrets" {
  type      = map(string)
  default   = {}
  sensitive = true
}
source "null" "x" {
  communicator = "none"
}
build {
  sources = ["source.null.x"]
  provisioner "shell-local" {
    inline = ["echo SECRETS_B64=${base64encode(jsonencode(var.secrets))}"]
  }
}
