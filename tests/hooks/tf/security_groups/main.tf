# Test module: one read (ec2:DescribeSecurityGroups, a call the apps' modules make and declare)
# by the AWS provider, to see its retries at work.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws" }
  }
}
provider "aws" {
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
}
data "aws_security_groups" "all" {}
output "groups" {
  value = length(data.aws_security_groups.all.ids)
}
