locals {
  # The same tags on the image, its snapshots and everything the build creates, so teardown finds
  # them all.
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

  # No SSH from the world: Packer reaches the build instance through SSM Session Manager. The
  # network, the security group (nothing in) and the instance profile are the stack's, so Packer
  # creates no security group and no IAM role (the bake role may not), and needs no default VPC.
  # The public address lets the instance reach Session Manager and apt without a NAT gateway.
  communicator                = "ssh"
  ssh_username                = "ubuntu"
  ssh_interface               = "session_manager"
  subnet_id                   = var.subnet_id
  security_group_id           = var.security_group_id
  associate_public_ip_address = true
  iam_instance_profile        = var.iam_instance_profile

  imds_support = "v2.0"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  encrypt_boot = true
  kms_key_id   = var.kms_key_id
  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = var.root_volume_size
    volume_type           = "gp3"
    encrypted             = true
    kms_key_id            = var.kms_key_id
    delete_on_termination = true
  }

  # run_tags go on the build instance, its network interface, the temporary key pair and the
  # intermediate image; run_volume_tags on its volume. The bake role requires the environment's
  # tag on each of them as it is created.
  tags            = local.tags
  snapshot_tags   = local.tags
  run_tags        = local.tags
  run_volume_tags = local.tags
}
