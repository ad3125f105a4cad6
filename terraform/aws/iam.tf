# The control plane's instance role: exactly the EC2 actions of the aws provider
# (provisioners.aws.EC2_ACTIONS; tests/terraform checks the two are equal), scoped to the cluster's
# tag wherever EC2 supports it. Nodes get no instance profile, so no iam:PassRole is needed.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id
  ec2_arn    = "arn:${local.partition}:ec2:${var.region}:${local.account_id}"
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "control_plane" {
  # DescribeInstances supports no resource-level permissions or tag conditions.
  statement {
    sid       = "ListNodes"
    actions   = ["ec2:DescribeInstances"]
    resources = ["*"]
  }

  # The instances and volumes a launch creates must carry the cluster's tag...
  statement {
    sid       = "LaunchTaggedNodes"
    actions   = ["ec2:RunInstances"]
    resources = ["${local.ec2_arn}:instance/*", "${local.ec2_arn}:volume/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/cumulus:cluster"
      values   = [var.cluster_name]
    }
  }

  # ...and the launch may only use the nodes' image, subnet, security group and key pair.
  statement {
    sid     = "LaunchNodesWith"
    actions = ["ec2:RunInstances"]
    resources = concat([
      "arn:${local.partition}:ec2:${var.region}::image/${local.node_image_id}",
      "${local.ec2_arn}:subnet/${var.subnet_id}",
      "${local.ec2_arn}:security-group/${aws_security_group.node.id}",
      "${local.ec2_arn}:network-interface/*",
    ], var.node_key_name == null ? [] : ["${local.ec2_arn}:key-pair/${var.node_key_name}"])
  }

  # Tags only as part of a launch (TagSpecifications), and only with the cluster's tag.
  statement {
    sid       = "TagNodesAtLaunch"
    actions   = ["ec2:CreateTags"]
    resources = ["${local.ec2_arn}:instance/*", "${local.ec2_arn}:volume/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["RunInstances"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/cumulus:cluster"
      values   = [var.cluster_name]
    }
  }

  statement {
    sid       = "TerminateOwnNodes"
    actions   = ["ec2:TerminateInstances"]
    resources = ["${local.ec2_arn}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/cumulus:cluster"
      values   = [var.cluster_name]
    }
  }

  # The bootstrap publishes the admin token; the AWS-managed aws/ssm key needs no kms permission.
  dynamic "statement" {
    for_each = var.admin_token_in_ssm ? [local.admin_token_parameter] : []
    content {
      sid       = "PublishAdminToken"
      actions   = ["ssm:PutParameter"]
      resources = ["arn:${local.partition}:ssm:${var.region}:${local.account_id}:parameter${statement.value}"]
    }
  }
}

resource "aws_iam_role" "control_plane" {
  name               = "cumulus-${var.cluster_name}-control-plane"
  description        = "Cumulus control plane of cluster ${var.cluster_name}: manages its EC2 nodes"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

resource "aws_iam_role_policy" "control_plane" {
  name   = "cumulus-nodes"
  role   = aws_iam_role.control_plane.id
  policy = data.aws_iam_policy_document.control_plane.json
}

resource "aws_iam_instance_profile" "control_plane" {
  name = "cumulus-${var.cluster_name}-control-plane"
  role = aws_iam_role.control_plane.name
}
