packer {
  required_version = ">= 1.10.0"
  required_plugins {
    amazon = {
      version = "= 1.3.3"
      source  = "github.com/hashicorp/amazon"
    }
    ansible = {
      version = "= 1.1.1"
      source  = "github.com/hashicorp/ansible"
    }
  }
}

variable "ami_name" {
  type        = string
  description = "Name of the image: slipway-<environment>-node-<content key>. The pipeline looks images up by this name, so it must be unique per content."
}

variable "environment" {
  type        = string
  description = "Slipway environment the image belongs to (tag slipway:environment)."
}

variable "deployment" {
  type        = string
  description = "Step Functions execution that baked the image (tag slipway:deployment)."
}

variable "commit" {
  type        = string
  description = "Git commit the image was baked from (tag slipway:commit)."
}

variable "image_key" {
  type        = string
  description = "Content key of ansible/ and packer/ that shaped the image (tag slipway:image-key)."
}

variable "region" {
  type        = string
  default     = env("AWS_REGION")
  description = "AWS region to bake in; CodeBuild sets AWS_REGION."
}

variable "instance_type" {
  type        = string
  default     = "t3.small"
  description = "Instance type of the temporary build instance."
}

variable "ubuntu_image_filter" {
  type        = string
  default     = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
  description = "Name filter of Canonical's base image (Ubuntu 24.04 LTS, amd64)."
}

variable "root_volume_size" {
  type        = number
  default     = 20
  description = "Root volume size in GiB."
}

# Where the build instance runs and as what: the bake network and instance profile that
# `slipway bootstrap` creates (.chalice/resources.yaml), given by the CodeBuild project as
# PKR_VAR_<name>. No defaults: without them Packer would fall back to the default VPC and a
# temporary IAM role, which the bake role does not allow.
variable "subnet_id" {
  type        = string
  description = "Subnet of the bake network the build instance runs in (stack resource BakeSubnet)."
}

variable "security_group_id" {
  type        = string
  description = "Security group of the build instance: nothing in, HTTPS and HTTP out (stack resource BakeSecurityGroup)."
}

variable "iam_instance_profile" {
  type        = string
  description = "Instance profile of the build instance: Session Manager only (stack resource BakeInstanceProfile)."
}

variable "kms_key_id" {
  type        = string
  default     = ""
  description = "The stage's own KMS key (SLIPWAY_KMS_KEY_ARN) for the build volume and the image; empty for EBS's default key."
}


variable "ecr_account_id" {
  type        = string
  default     = ""
  description = "The account whose ECR registry the nodes' Docker gets credentials for (credHelpers); empty for public registries only."
}
