variable "app" { type = string }
variable "region" { type = string }
variable "release_id" { type = string }
variable "ami_id" { type = string }
variable "vpc_id" { type = string }
variable "vpc_cidr" { type = string }
variable "subnet_ids" { type = list(string) }

variable "instance_type" {
  type    = string
  default = "t3.large"
}
variable "min_size" {
  type    = number
  default = 2
}
variable "max_size" {
  type    = number
  default = 4
}
variable "desired_capacity" {
  type    = number
  default = 2
}
