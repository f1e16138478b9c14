# demo-web's infrastructure: everything the fleet needs besides the AMI.
#
# Applied by the release pipeline in every release (ami_release / ami_rollback) with the
# AMI it just baked (var.ami_id): the launch template gets a new version whose image is the
# new AMI; the group follows the template's latest version, and the pipeline then starts an
# instance refresh. Applied the same way against AWS and against the local sandbox: the
# pipeline writes the backend settings and, when the AWS connection has a custom endpoint,
# a provider override file; nothing here knows which account it runs in.

terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
  # Settings come from the pipeline (-backend-config): bucket, key, region, encrypt, use_lockfile.
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

locals {
  name = "${var.app}${var.name_suffix}"
}

resource "aws_security_group" "web" {
  name        = "${local.name}-web"
  description = "${local.name} web servers: HTTP from the load balancer"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "http_from_alb" {
  security_group_id            = aws_security_group.web.id
  referenced_security_group_id = one(data.aws_lb.shared.security_groups)
  from_port                    = 80
  to_port                      = 80
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_egress_rule" "web_all" {
  security_group_id = aws_security_group.web.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}

# The runtime secret the app reads at boot (from Vault, via TF_VAR_api_token): an SSM
# SecureString written through a write-only argument, so the value is in no plan file and no
# state. It is written again when its Vault version changes (secret_versions, from the pipeline).
resource "aws_ssm_parameter" "api_token" {
  name             = "/${local.name}/api-token"
  description      = "${local.name} runtime API token (written by the release pipeline from Vault)"
  type             = "SecureString"
  value_wo         = var.api_token
  value_wo_version = lookup(var.secret_versions, "api_token", 1)
}

resource "aws_launch_template" "web" {
  name                   = local.name
  description            = "${local.name} web servers"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  vpc_security_group_ids = [aws_security_group.web.id]
  update_default_version = true

  metadata_options {
    http_tokens = "required"
  }

  tag_specifications {
    resource_type = "instance"
    tags = {
      App     = var.app
      Release = var.release_id
    }
  }
}

# The platform's shared load balancer (part of the account, not of the app): the app adds
# its target group and a host-based rule on the shared HTTP listener.
data "aws_lb" "shared" {
  name = var.load_balancer_name
}

data "aws_lb_listener" "http" {
  load_balancer_arn = data.aws_lb.shared.arn
  port              = 80
}

resource "aws_lb_target_group" "web" {
  name     = "${local.name}-tg"
  port     = 80
  protocol = "HTTP"
  vpc_id   = var.vpc_id

  health_check {
    path    = "/health"
    matcher = "200"
  }
}

resource "aws_lb_listener_rule" "web" {
  listener_arn = data.aws_lb_listener.http.arn
  priority     = var.listener_rule_priority

  condition {
    host_header {
      values = [var.host_name]
    }
  }

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.web.arn
  }
}

resource "aws_autoscaling_group" "web" {
  name                      = "${local.name}-asg"
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.desired_capacity
  vpc_zone_identifier       = var.subnet_ids
  target_group_arns         = [aws_lb_target_group.web.arn]
  health_check_type         = "ELB"
  health_check_grace_period = 60
  wait_for_capacity_timeout = "0"

  launch_template {
    id      = aws_launch_template.web.id
    version = aws_launch_template.web.latest_version
  }

  tag {
    key                 = "Name"
    value               = "${local.name}-web"
    propagate_at_launch = true
  }

  lifecycle {
    # Scaling changes the desired capacity at run time; Terraform does not fight it.
    ignore_changes = [desired_capacity]
  }
}

resource "aws_cloudwatch_metric_alarm" "http_5xx" {
  alarm_name          = "${local.name}-5xx"
  alarm_description   = "${local.name}: targets answer 5xx"
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HTTPCode_Target_5XX_Count"
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 10
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  dimensions = {
    LoadBalancer = data.aws_lb.shared.arn_suffix
    TargetGroup  = aws_lb_target_group.web.arn_suffix
  }
}

resource "aws_cloudwatch_metric_alarm" "latency" {
  alarm_name          = "${local.name}-latency"
  alarm_description   = "${local.name}: slow responses"
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 1
  threshold           = 1.5
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  dimensions = {
    LoadBalancer = data.aws_lb.shared.arn_suffix
    TargetGroup  = aws_lb_target_group.web.arn_suffix
  }
}
