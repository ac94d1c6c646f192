"""The stack rollout's decisions: what the manager's output says, what changed, when it converged."""

import json

from chalicelib import plans, rollout

DIGEST = "sha256:" + "a" * 64


def service_line(name: str, image: str, spec: str = "", state: str | None = None, replicas: int | None = 2) -> str:
    mode = {"Replicated": {"Replicas": replicas}} if replicas is not None else {"Global": {}}
    update = {"State": state, "Message": f"update {state}"} if state else None
    body = {"name": name, "spec": spec, "image": image, "updated_at": "t", "update": update, "mode": mode}
    return "service " + json.dumps(body)


def task_line(name: str, image: str, desired: str = "Running", current: str = "Running 1 second ago", error: str = ""):
    return "task " + json.dumps({"name": name, "image": image, "desired": desired, "current": current, "error": error})


def test_the_inspection_gives_each_service_and_each_images_digest_now():
    output = "\n".join(
        [
            service_line("dev_web", f"web:1@{DIGEST}", spec="abc"),
            task_line("dev_web.1", f"web:1@{DIGEST}"),
            f"image web:1 {json.dumps(['web@' + DIGEST])}",
            f"image nginx:1.27 {json.dumps(['nginx@' + DIGEST])}",
            f"image registry:5000/team/app:2 {json.dumps(['registry:5000/team/app@' + DIGEST])}",
            "pull-failed private/app:1 Error response from daemon: pull access denied for private/app",
        ]
    )
    found = rollout.parse_inspection(output, "dev")
    assert set(found.services) == {"web"} and found.services["web"].spec == "abc"
    assert found.services["web"].tasks[0].name == "dev_web.1"
    assert found.digests == {"web:1": DIGEST, "nginx:1.27": DIGEST, "registry:5000/team/app:2": DIGEST}
    assert found.pull_errors == {"private/app:1": "Error response from daemon: pull access denied for private/app"}


def test_a_service_with_the_same_definition_and_digest_is_not_changed_and_one_with_a_new_digest_is():
    document = {"services": {"web": {"image": "web:1"}, "worker": {"image": "worker:1"}}}
    pinned = rollout.pin(document, {"web:1": DIGEST, "worker:1": DIGEST}, "image-key")
    running = {
        name: rollout.RunningService(name, s["deploy"]["labels"][rollout.SPEC_LABEL], s["image"], "t", "", "", 1)
        for name, s in pinned["services"].items()
    }
    assert not rollout.changes(pinned, running).any
    other = rollout.pin(document, {"web:1": "sha256:" + "b" * 64, "worker:1": DIGEST}, "image-key")
    assert rollout.changes(other, running) == rollout.Changes(("web",), ())
    moved = rollout.pin(document, {"web:1": DIGEST, "worker:1": DIGEST}, "new-image-key")
    assert rollout.changes(moved, running).changed == ("web", "worker")  # every task moves to the new nodes
    dropped = rollout.pin({"services": {"web": {"image": "web:1"}}}, {"web:1": DIGEST}, "image-key")
    assert rollout.changes(dropped, running) == rollout.Changes((), ("worker",))


def test_pinning_keeps_the_users_constraints_and_labels_and_a_new_secret_name_is_a_change():
    document = {
        "services": {
            "web": {
                "image": "web:1",
                "secrets": ["token"],
                "deploy": {"placement": {"constraints": ["node.role == worker"]}, "labels": ["team=a"]},
            }
        },
        "secrets": {"token": {"external": True, "name": "token-v1"}},
    }
    pinned = rollout.pin(document, {"web:1": DIGEST}, "k")
    web = pinned["services"]["web"]
    assert web["image"] == f"web:1@{DIGEST}"
    assert web["deploy"]["placement"]["constraints"] == ["node.role == worker", "node.labels.slipway.image == k"]
    assert web["deploy"]["labels"]["team"] == "a"
    rotated = rollout.pin(
        {**document, "secrets": {"token": {"external": True, "name": "token-v2"}}}, {"web:1": DIGEST}, "k"
    )
    assert (
        rotated["services"]["web"]["deploy"]["labels"][rollout.SPEC_LABEL]
        != web["deploy"]["labels"][rollout.SPEC_LABEL]
    )
    assert document["services"]["web"]["image"] == "web:1"  # the input is not changed


def test_converged_means_update_done_and_every_replica_running_on_the_new_definition():
    new = f"web:2@{DIGEST}"
    old = "web:1@sha256:" + "c" * 64
    on_new = [task_line("dev_web.1", new), task_line("dev_web.2", new)]
    services = rollout.parse_services("\n".join([service_line("dev_web", new, state="completed"), *on_new]), "dev")
    assert rollout.judge(services["web"]).state == "converged"
    one_old = [task_line("dev_web.1", new), task_line("dev_web.2", old)]
    services = rollout.parse_services("\n".join([service_line("dev_web", new, state="completed"), *one_old]), "dev")
    assert rollout.judge(services["web"]).state == "updating"  # an old task still serves
    updating = rollout.parse_services("\n".join([service_line("dev_web", new, state="updating"), *on_new]), "dev")
    assert rollout.judge(updating["web"]).state == "updating"


def test_a_rolled_back_service_fails_with_the_tasks_error():
    lines = [
        service_line("dev_web", "web:1", state="rollback_completed"),
        task_line("dev_web.1", "web:1"),
        task_line("dev_web.1", "web:2", desired="Shutdown", current="Failed", error="dockerexec: unhealthy container"),
    ]
    verdict = rollout.judge(rollout.parse_services("\n".join(lines), "dev")["web"])
    assert verdict.state == "failed" and "unhealthy container" in verdict.why and "rollback_completed" in verdict.why


def test_a_service_not_listed_yet_is_still_being_created():
    assert rollout.verdict({}, ["web"]) == [rollout.ServiceVerdict("web", "", 0, 0, "updating", "not created yet")]


def test_a_global_service_wants_one_task_per_node_running():
    lines = [service_line("dev_agent", "agent:1", replicas=None), task_line("dev_agent.a", "agent:1")]
    verdict = rollout.judge(rollout.parse_services("\n".join(lines), "dev")["agent"])
    assert (verdict.running, verdict.desired, verdict.state) == (1, 1, "converged")


def test_polls_start_short_and_double_up_to_the_interval():
    assert [plans.next_wait(n, 2, 30) for n in range(6)] == [2, 4, 8, 16, 30, 30]
    assert plans.next_wait(3, 2, 0) == 0  # the emulator's tests poll without waiting


def test_the_deploy_script_carries_neither_the_file_nor_a_secrets_value():
    script = "\n".join(
        rollout.deploy_script("dev", "bucket", "stacks/k.yml", {"token-v3": "/slipway/dev/secrets/token"}, [])
    )
    assert "slipway-node fetch bucket stacks/k.yml" in script
    assert "slipway-node secret token-v3 /slipway/dev/secrets/token" in script
    assert "--resolve-image never --with-registry-auth" in script
