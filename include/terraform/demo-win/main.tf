# demo-win's infrastructure (Windows IIS service). Validated by the test suite; not deployed
# in the sandbox. Same contract as demo-web: the pipeline passes the new AMI as var.ami_id.

terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
  backend "s3" {}
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      App       = var.app
      ManagedBy = "terraform"
    }
  }
}

resource "aws_security_group" "iis" {
  name        = "${var.app}-iis"
  description = "${var.app} IIS servers: HTTPS from the VPC"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "https" {
  security_group_id = aws_security_group.iis.id
  cidr_ipv4         = var.vpc_cidr
  from_port         = 443
  to_port           = 443
  ip_protocol       = "tcp"
}

resource "aws_launch_template" "iis" {
  name                   = var.app
  description            = "${var.app} IIS servers"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  vpc_security_group_ids = [aws_security_group.iis.id]
  update_default_version = true

  metadata_options {
    http_tokens = "required"
  }
}

resource "aws_autoscaling_group" "iis" {
  name                      = "${var.app}-asg"
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.desired_capacity
  vpc_zone_identifier       = var.subnet_ids
  health_check_type         = "EC2"
  health_check_grace_period = 900
  wait_for_capacity_timeout = "0"

  launch_template {
    id      = aws_launch_template.iis.id
    version = aws_launch_template.iis.latest_version
  }

  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

resource "aws_cloudwatch_metric_alarm" "cpu" {
  alarm_name          = "${var.app}-cpu"
  alarm_description   = "${var.app}: CPU saturated"
  namespace           = "AWS/EC2"
  metric_name         = "CPUUtilization"
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 2
  threshold           = 90
  comparison_operator = "GreaterThanThreshold"
  dimensions = {
    AutoScalingGroupName = aws_autoscaling_group.iis.name
  }
}
