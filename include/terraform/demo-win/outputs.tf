output "launch_template_id" {
  value = aws_launch_template.iis.id
}
output "launch_template_version" {
  value = aws_launch_template.iis.latest_version
}
output "auto_scaling_groups" {
  value = [aws_autoscaling_group.iis.name]
}
