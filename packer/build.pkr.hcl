build {
  name    = "slipway-node"
  sources = ["source.amazon-ebs.node"]

  # apt must not race cloud-init's own package work on first boot.
  provisioner "shell" {
    inline = ["cloud-init status --wait"]
  }

  provisioner "ansible" {
    playbook_file    = "${path.root}/../ansible/swarm_node.yml"
    user             = "ubuntu"
    use_proxy        = false
    ansible_env_vars = ["ANSIBLE_ROLES_PATH=${path.root}/../ansible/roles"]
    extra_arguments = [
      "--extra-vars",
      "swarm_node_full_upgrade=true swarm_node_ecr_account_id=${var.ecr_account_id} swarm_node_ecr_region=${var.region}",
    ]
  }

  post-processor "manifest" {
    output     = "manifest.json"
    strip_path = true
  }
}
