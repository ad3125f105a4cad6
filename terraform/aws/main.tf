# A Cumulus control plane on one EC2 instance, ready to grow its fleet through the aws provider.

data "aws_subnet" "selected" {
  id = var.subnet_id
}

# The newest official Debian 12 AMI (Debian's own account).
data "aws_ami" "debian12" {
  most_recent = true
  owners      = ["136693071363"]

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

locals {
  node_image_id         = coalesce(var.node_image_id, data.aws_ami.debian12.id)
  admin_token_parameter = var.admin_token_in_ssm ? "/cumulus/${var.cluster_name}/admin-token" : ""

  # The config file of `cumulus up` (control_plane/config.py) as data: the bootstrap writes it as
  # TOML. [cumulus] keys are Settings fields, [provider.aws] keys are AwsProvider's keyword
  # arguments; null values are left out.
  cumulus_config = {
    cumulus = {
      cluster   = var.cluster_name
      provider  = "aws"
      min_nodes = var.min_nodes
      max_nodes = var.max_nodes
      db        = local.database_url # "" keeps SQLite in the data directory
    }
    node_types = [for t in var.node_types : {
      name        = t.name
      cpu_millis  = t.cpu_millis
      memory_mib  = t.memory_mib
      hourly_cost = t.hourly_cost
      boot_s      = t.boot_s
    }]
    provider = {
      aws = {
        region             = var.region
        image_id           = local.node_image_id
        subnet_id          = var.subnet_id
        security_group_ids = [aws_security_group.node.id]
        key_name           = var.node_key_name
        instance_types     = { for t in var.node_types : t.name => t.instance_type }
        extra_tags         = var.tags
      }
    }
  }

  # Everything the user data is configured with, as one JSON document (see the template).
  bootstrap = {
    config                = local.cumulus_config
    cumulus_source        = var.cumulus_source
    pip_extra_args        = var.pip_extra_args
    apt_packages          = var.apt_packages
    api_port              = var.api_port
    region                = var.region
    control_plane_url     = var.control_plane_url
    admin_token_parameter = local.admin_token_parameter
  }
}

# Security groups -----------------------------------------------------------------------------------
# Rules are separate resources: the control plane and node groups refer to each other.

resource "aws_security_group" "control_plane" {
  name        = "cumulus-${var.cluster_name}-control-plane"
  description = "Cumulus control plane: the API to clients and nodes, SSH to operators"
  vpc_id      = data.aws_subnet.selected.vpc_id
  tags        = { Name = "cumulus-${var.cluster_name}-control-plane" }
}

resource "aws_security_group" "node" {
  name        = "cumulus-${var.cluster_name}-node"
  description = "Cumulus nodes: the agent port to the control plane only"
  vpc_id      = data.aws_subnet.selected.vpc_id
  tags        = { Name = "cumulus-${var.cluster_name}-node" }
}

resource "aws_vpc_security_group_ingress_rule" "api_from_clients" {
  for_each          = toset(var.api_allowed_cidrs)
  security_group_id = aws_security_group.control_plane.id
  description       = "Cumulus API from clients"
  ip_protocol       = "tcp"
  from_port         = var.api_port
  to_port           = var.api_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "api_from_nodes" {
  security_group_id            = aws_security_group.control_plane.id
  description                  = "Cumulus API from the cluster's nodes (join, heartbeats, agent package)"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each          = toset(var.ssh_allowed_cidrs)
  security_group_id = aws_security_group.control_plane.id
  description       = "SSH from operators"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "agent_from_control_plane" {
  security_group_id            = aws_security_group.node.id
  description                  = "Node agent from the control plane"
  ip_protocol                  = "tcp"
  from_port                    = var.agent_port
  to_port                      = var.agent_port
  referenced_security_group_id = aws_security_group.control_plane.id
}

# Both install packages (apt, PyPI) and call AWS APIs.
resource "aws_vpc_security_group_egress_rule" "control_plane_out" {
  security_group_id = aws_security_group.control_plane.id
  description       = "Everything out"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "node_out" {
  security_group_id = aws_security_group.node.id
  description       = "Everything out"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# The control plane -------------------------------------------------------------------------------

resource "aws_instance" "control_plane" {
  ami                         = data.aws_ami.debian12.id
  instance_type               = var.instance_type
  subnet_id                   = var.subnet_id
  vpc_security_group_ids      = [aws_security_group.control_plane.id]
  key_name                    = var.key_name
  iam_instance_profile        = aws_iam_instance_profile.control_plane.name
  associate_public_ip_address = var.associate_public_ip
  user_data = templatefile("${path.module}/templates/user-data.sh.tftpl", {
    bootstrap_json = jsonencode(local.bootstrap)
  })

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = var.root_volume_gb
    volume_type = "gp3"
    encrypted   = true
  }

  # Never cumulus:cluster: the control plane would list itself among its nodes and terminate it as
  # an orphan (and its IAM policy lets it terminate exactly the instances carrying that tag).
  tags = {
    Name                    = "cumulus-${var.cluster_name}-control-plane"
    "cumulus:control-plane" = var.cluster_name
  }

  lifecycle {
    # A newer Debian AMI must not replace a running control plane (and its SQLite state).
    ignore_changes = [ami, user_data]
  }

  # Destroyed before the fleet clean-up runs, so no new node appears after it.
  depends_on = [terraform_data.fleet_cleanup]
}

# On destroy: terminate the nodes the control plane created (instances tagged cumulus:cluster=<name>)
# and wait until they are gone, so that the node security group can be deleted after them.
resource "terraform_data" "fleet_cleanup" {
  count = var.terminate_nodes_on_destroy ? 1 : 0

  input = {
    cluster = var.cluster_name
    region  = var.region
    script  = "${path.module}/scripts/terminate-nodes.sh"
  }

  depends_on = [aws_security_group.node]

  provisioner "local-exec" {
    when        = destroy
    interpreter = ["/bin/bash", "-c"]
    command     = "bash \"$CUMULUS_TERMINATE_SCRIPT\" \"$CUMULUS_CLUSTER\" \"$AWS_REGION\""
    environment = {
      CUMULUS_TERMINATE_SCRIPT = self.input.script
      CUMULUS_CLUSTER          = self.input.cluster
      AWS_REGION               = self.input.region
    }
  }
}
