"""One function per state-machine Task, one module per pipeline phase as the console shows it.

A step takes the state its Task passes (the execution's state, or what the Task's `Parameters`
build) and returns a small answer that the Task puts at its `ResultPath`; `state.py` declares
every one of those shapes. Each step gathers facts through the adapters, asks plans.py what to do,
and does it. Waiting is the state machine's job: a step that finds work unfinished says so and
returns at once.

    prepare   'Prepare deployment'                       queue     'Look for earlier runs'
    bake      image lookup, bake, bake check             network   'Provision network'
    nodes     launch, readiness                          swarm     join/init, promotion, command checks
    health    the health gate                            retire    old nodes out, terminated; old images
    report    commit statuses, the stopped-run report    teardown  the undo and the teardown machine
    lease     one run at a time, for certain: the environment's lease, taken in the queue, given up at the end
    prune     the schedule and its results                traffic   the load balancer and its targets
    heal      a node lost between pushes: the heal and the drift check
"""

from chalicelib.steps.bake import check_bake, find_image, start_bake
from chalicelib.steps.heal import drift_check, heal_on_instance_event
from chalicelib.steps.health import evaluate_health, start_health_check
from chalicelib.steps.lease import release_lease
from chalicelib.steps.network import ensure_network
from chalicelib.steps.nodes import check_nodes, launch_nodes
from chalicelib.steps.prepare import prepare
from chalicelib.steps.prune import prune, prune_comment, record_prune
from chalicelib.steps.queue import wait_turn
from chalicelib.steps.report import report_outcome, report_stopped_run
from chalicelib.steps.retire import remove_old_images, retire_old_nodes, terminate_old_nodes
from chalicelib.steps.stack import check_services, inspect_stack, read_stack, update_stack
from chalicelib.steps.swarm import check_command, check_swarm, form_swarm, promote_managers
from chalicelib.steps.teardown import (
    check_nodes_gone,
    confirm_teardown,
    delete_images,
    delete_network,
    leave_swarm,
    terminate_nodes,
)
from chalicelib.steps.traffic import (
    check_targets,
    delete_load_balancer,
    deregister_old_targets,
    ensure_ingress,
    register_targets,
)

__all__ = [
    "drift_check",
    "heal_on_instance_event",
    "check_targets",
    "delete_load_balancer",
    "deregister_old_targets",
    "ensure_ingress",
    "register_targets",
    "check_bake",
    "check_command",
    "check_nodes",
    "check_nodes_gone",
    "check_services",
    "check_swarm",
    "confirm_teardown",
    "delete_images",
    "delete_network",
    "ensure_network",
    "evaluate_health",
    "find_image",
    "form_swarm",
    "inspect_stack",
    "launch_nodes",
    "leave_swarm",
    "prepare",
    "promote_managers",
    "prune",
    "prune_comment",
    "read_stack",
    "record_prune",
    "release_lease",
    "remove_old_images",
    "report_outcome",
    "report_stopped_run",
    "retire_old_nodes",
    "start_bake",
    "start_health_check",
    "terminate_nodes",
    "terminate_old_nodes",
    "update_stack",
    "wait_turn",
]
