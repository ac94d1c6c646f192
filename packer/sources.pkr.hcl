locals {
  # The same tags on the image, its snapshots and the build instance, so teardown finds them all.
  tags = {
    "Name"                = var.ami_name
    "slipway:environment" = var.environment
    "slipway:deployment"  = var.deployment
    "slipway:commit"      = var.commit
    "slipway:image-key"   = var.image_key
    "slipway:role"        = "image"
  }
}

source "amazon-ebs" "node" {
  region        = var.region
  ami_name      = var.ami_name
  instance_type = var.instance_type

  source_ami_filter {
    filters = {
      name                = var.ubuntu_image_filter
      root-device-type    = "ebs"
      virtualization-type = "hvm"
      architecture        = "x86_64"
    }
    owners      = ["099720109477"] # Canonical
    most_recent = true
  }

  # No SSH from the world: Packer reaches the build instance through SSM Session Manager with a
  # temporary instance profile, and its temporary security group admits only the builder's IP.
  communicator                              = "ssh"
  ssh_username                              = "ubuntu"
  ssh_interface                             = "session_manager"
  temporary_security_group_source_public_ip = true
  temporary_iam_instance_profile_policy_document {
    Version = "2012-10-17"
    Statement {
      Effect = "Allow"
      Action = [
        "ssm:UpdateInstanceInformation",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
      ]
      Resource = ["*"]
    }
  }

  imds_support = "v2.0"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  encrypt_boot = true
  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = var.root_volume_size
    volume_type           = "gp3"
    encrypted             = true
    delete_on_termination = true
  }

  tags          = local.tags
  snapshot_tags = local.tags
  run_tags      = local.tags
}
