"""Real swarm nodes for the local run: the node image baked with our own Ansible role, each
instance a container running its own dockerd, and SSM commands run in it for real.

The pieces, for the emulator to wire in:

- `docker_available()` says whether this machine can do it (root, the docker CLI, a dockerd that
  answers), or why not.
- `bake_image(tag)` builds `slipway-node:<tag>`: the cached Debian 12 root (debootstrap, once, in
  .cache/debian-12-root), copied, converged with ansible/swarm_node.yml through the chroot
  connection (as tests/infra/test_swarm_node_role.py does), kept in .cache/node-root-<tag>, and
  imported with `docker import`. An existing image, or converged root, is reused; a second image
  key of the same root is committed from the first image (same files, its own labels).
- `DockerNodes` answers what `slipway.emulator.nodes.EmulatedNodes` answers (`run`, `state`, `role`), plus
  the lifecycle: `launch` a container per instance on a user-defined bridge network whose subnet
  is the VPC's CIDR (so each container has the instance's private address and host name),
  `terminate`, `stop_docker`/`start_docker`, and `close`, which removes every container, the
  network and the images it baked.
- For real stacks (tests/realnodes/test_stack_real.py): `start_aws_endpoint()` serves this
  process's moto on the network's `gateway` and gives every command `run` runs AWS_ENDPOINT_URL,
  AWS_REGION and fake credentials (the instance role and IMDS, on EC2); `insecure_registries`
  lets the nodes' dockerds pull from a `slipway.realnodes.registry.LocalRegistry` over HTTP;
  `published_ports` publishes node ports on this machine's loopback (`host_port` says where).
- For a load balancer in front (slipway/realnodes/load_balancer.py): `mesh` (published port -> task port) runs
  slipway/realnodes/mesh.py, a stand-in for Swarm's ingress routing mesh, in every node (`start_mesh`), and
  keeps each node's list of peers (`set_mesh_peers`) the live nodes' addresses as nodes are
  launched and terminated: every node answers on the published port, whichever runs the task.

Everything this module creates carries the label `slipway.emulator=<run id>`; `cleanup()`
removes what a crashed run left behind.

Node containers need capabilities, not `--privileged` (which fails on some kernels with "unable
to apply caps"): SYS_ADMIN, SYS_PTRACE (for `docker exec` and health checks in nested
containers), NET_ADMIN, MKNOD, no seccomp or AppArmor profile, and the host's cgroup tree. Their
dockerd runs with --iptables=false (this kernel has no IPVS, so Swarm's routing mesh and service
VIPs cannot work with or without iptables: publish ports with `mode: host`, use
`endpoint_mode: dnsrr`); its /var/lib/docker is a volume, so it uses overlay2.
"""

from slipway.realnodes.bake import (
    BASE_ROOT,
    CACHE_DIR,
    NODE_COMMAND,
    bake_available,
    bake_image,
    base_root,
    converge,
    image_exists,
    image_name,
    node_images,
    prepare_chroot,
    remove_images,
    working_tree_tag,
)
from slipway.realnodes.cleanup import cleanup
from slipway.realnodes.containers import MESH_PEERS, DockerNodes
from slipway.realnodes.dockercli import LABEL, ROLE_LABEL, DockerUnavailable, NodeError, docker_available

__all__ = [
    "BASE_ROOT",
    "CACHE_DIR",
    "LABEL",
    "MESH_PEERS",
    "NODE_COMMAND",
    "ROLE_LABEL",
    "DockerNodes",
    "DockerUnavailable",
    "NodeError",
    "bake_available",
    "bake_image",
    "base_root",
    "cleanup",
    "converge",
    "docker_available",
    "image_exists",
    "image_name",
    "node_images",
    "prepare_chroot",
    "remove_images",
    "working_tree_tag",
]
