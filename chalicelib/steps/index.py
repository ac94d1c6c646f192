"""Generated from the @task decorators by `make docs` (slipway/docs.py); do not edit.

Each Task's Lambda name and the phase module that holds its step, so that app.py can wire every
Lambda without importing any phase. tests/unit/test_registry.py fails when this is stale.
"""

TASK_MODULES: dict[str, str] = {
    "prepare": "chalicelib.steps.prepare",
    "read_stack": "chalicelib.steps.stack",
    "wait_turn": "chalicelib.steps.queue",
    "start_builds": "chalicelib.steps.build",
    "find_image": "chalicelib.steps.bake",
    "start_bake": "chalicelib.steps.bake",
    "check_bake": "chalicelib.steps.bake",
    "check_builds": "chalicelib.steps.build",
    "ensure_network": "chalicelib.steps.network",
    "ensure_ingress": "chalicelib.steps.load_balancer",
    "launch_nodes": "chalicelib.steps.nodes",
    "check_nodes": "chalicelib.steps.nodes",
    "form_swarm": "chalicelib.steps.swarm",
    "check_swarm": "chalicelib.steps.swarm",
    "start_health_check": "chalicelib.steps.health",
    "evaluate_health": "chalicelib.steps.health",
    "promote_managers": "chalicelib.steps.swarm",
    "check_command": "chalicelib.steps.swarm",
    "inspect_stack": "chalicelib.steps.stack",
    "update_stack": "chalicelib.steps.stack",
    "check_services": "chalicelib.steps.stack",
    "register_targets": "chalicelib.steps.load_balancer",
    "check_targets": "chalicelib.steps.load_balancer",
    "deregister_old_targets": "chalicelib.steps.load_balancer",
    "retire_old_nodes": "chalicelib.steps.retire",
    "terminate_old_nodes": "chalicelib.steps.retire",
    "remove_old_images": "chalicelib.steps.retire",
    "report_outcome": "chalicelib.steps.report",
    "leave_swarm": "chalicelib.steps.teardown",
    "terminate_nodes": "chalicelib.steps.teardown",
    "check_nodes_gone": "chalicelib.steps.teardown",
    "delete_load_balancer": "chalicelib.steps.load_balancer",
    "delete_network": "chalicelib.steps.teardown",
    "delete_images": "chalicelib.steps.teardown",
    "confirm_teardown": "chalicelib.steps.teardown",
    "release_lease": "chalicelib.steps.lease",
}
