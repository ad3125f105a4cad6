locals {
  reachable_ip            = coalesce(aws_instance.control_plane.public_ip, aws_instance.control_plane.private_ip)
  admin_token_ssm_command = "aws ssm get-parameter --region ${var.region} --name ${local.admin_token_parameter} --with-decryption --query Parameter.Value --output text"
  admin_token_ssh_command = "ssh admin@${local.reachable_ip} sudo cat /var/lib/cumulus/admin.token"
}

output "api_url" {
  description = "The Cumulus API (public address when the instance has one); set CUMULUS_URL to it."
  value       = "http://${local.reachable_ip}:${var.api_port}"
}

output "instance_id" {
  description = "EC2 instance id of the control plane."
  value       = aws_instance.control_plane.id
}

output "private_ip" {
  description = "Private IPv4 address of the control plane (nodes reach it there unless control_plane_url is set)."
  value       = aws_instance.control_plane.private_ip
}

output "admin_token_parameter" {
  description = "SSM parameter (SecureString) holding the admin token once the bootstrap finished; null when admin_token_in_ssm is false."
  value       = var.admin_token_in_ssm ? local.admin_token_parameter : null
}

output "admin_token_command" {
  description = "A command that prints the admin token (from SSM, else over SSH)."
  value       = var.admin_token_in_ssm ? local.admin_token_ssm_command : local.admin_token_ssh_command
}

output "ssh_command" {
  description = "SSH to the control plane (needs key_name and ssh_allowed_cidrs); logs: journalctl -u cumulus, /var/log/cloud-init-output.log."
  value       = "ssh admin@${local.reachable_ip}"
}

output "node_security_group_id" {
  description = "Security group of the nodes the control plane launches."
  value       = aws_security_group.node.id
}

output "role_arn" {
  description = "IAM role of the control plane."
  value       = aws_iam_role.control_plane.arn
}

output "database_address" {
  description = "Address of the RDS PostgreSQL, or null without enable_rds."
  value       = var.enable_rds ? aws_db_instance.cumulus[0].address : null
}

output "terminate_nodes_command" {
  description = "Terminates every node of this cluster (terraform destroy also does it unless terminate_nodes_on_destroy is false)."
  value       = "${path.module}/scripts/terminate-nodes.sh ${var.cluster_name} ${var.region}"
}
