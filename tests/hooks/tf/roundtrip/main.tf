# Test module (no provider): does a secret reach Terraform intact through TF_VAR_*?
variable "secret" {
  type      = string
  sensitive = true
}
output "secret_b64" {
  value = nonsensitive(base64encode(var.secret))
}
