# Set by the pipeline on every apply.
variable "app" { type = string }
variable "region" { type = string }
variable "release_id" { type = string }
variable "ami_id" {
  type        = string
  description = "The AMI this release baked"
}
variable "vpc_id" { type = string }
variable "vpc_cidr" { type = string }
variable "subnet_ids" { type = list(string) }

# From the app's catalog file (infrastructure.variables).
variable "instance_type" {
  type    = string
  default = "t3.micro"
}
variable "min_size" {
  type    = number
  default = 2
}
variable "max_size" {
  type    = number
  default = 6
}
variable "desired_capacity" {
  type    = number
  default = 3
}

variable "load_balancer_name" {
  type        = string
  description = "The platform's shared application load balancer"
}
variable "host_name" {
  type        = string
  description = "Host header the shared listener forwards to this app"
}
variable "name_suffix" {
  type        = string
  default     = ""
  description = "Added to every resource name: a stage's own copy of the app (e.g. -staging)"
}
variable "listener_rule_priority" {
  type    = number
  default = 100
}

# From Vault (infrastructure.secrets in the catalog): TF_VAR_api_token, never argv. Ephemeral:
# Terraform keeps it out of plan files and state (it may only feed write-only arguments).
variable "api_token" {
  type      = string
  sensitive = true
  ephemeral = true
}
variable "secret_versions" {
  type        = map(number)
  default     = {}
  description = "Vault KV version of each secret key, from the pipeline: a new version rewrites the value"
}
