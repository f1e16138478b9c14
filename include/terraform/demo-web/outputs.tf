# What the pipeline reads after the apply (named in the catalog: infrastructure.outputs).
output "launch_template_id" {
  value = aws_launch_template.web.id
}
output "launch_template_version" {
  value = aws_launch_template.web.latest_version
}
output "auto_scaling_groups" {
  value = [aws_autoscaling_group.web.name]
}
output "target_group_arns" {
  value = [aws_lb_target_group.web.arn]
}
output "alarm_names" {
  value = [aws_cloudwatch_metric_alarm.http_5xx.alarm_name, aws_cloudwatch_metric_alarm.latency.alarm_name]
}
