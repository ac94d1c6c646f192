"""The execution state the state machines pass between steps, declared: one TypedDict per ResultPath.

Each Task of statemachines/*.asl.json writes its step's answer at a `ResultPath` of the execution's
state, and later steps read it from there. This module is that contract written down: the shape a
step returns is the shape the next one reads, a step is annotated with the shape it returns, and
each machine's run (`DeployRun`, `TeardownRun`) says which shape lives at which path: its key `k`
is the ResultPath `$.k`. tests/unit/test_state.py holds the ASL files to it (every ResultPath
declared, each written by the step that returns its shape), and the pipeline tests check every
answer a run produced against it (tests/shapes.py).

A step builds its answer by calling the TypedDict (`Queue(clear=..., ...)`), or, to change one key
of what it was given, as a literal annotated with it (`pending: Health = {**health, ...}`): either
way mypy names a missing or misspelt key.
"""

# No `from __future__ import annotations` here: TypedDict reads NotRequired[...] only from real
# annotations (on 3.11, postponed ones make every key required).
from typing import Any, NotRequired, TypedDict


class Deployment(TypedDict):
    """What 'Prepare deployment' fixed for the run: every later step reads it from `$.deployment`."""

    id: str  # the execution's name
    environment: str
    repository: str
    ref: str
    commit: str
    pusher: str
    image_key: str
    image_name: str
    image_source: NotRequired[str]  # "commit" (its own packer/ and ansible/) or "installation"
    trigger: NotRequired[str]  # "heal": started by steps/heal.py for the last deployed commit


class GitHubReport(TypedDict):
    """What a report to GitHub did (`$.github`): the commit status set, or why none was; and the
    run's GitHub Deployment, carried from 'Prepare deployment' to the report of the run's end."""

    reported: bool  # whether the commit status was set
    state: NotRequired[str]
    description: NotRequired[str]
    why: NotRequired[str]
    deployment_id: NotRequired[int]  # the run's GitHub Deployment
    deployment_state: NotRequired[str]  # the deployment status last set on it
    deployment_why: NotRequired[str]  # why there is none, or why its status was not set
    replaced: NotRequired[int]  # the environment's earlier deployment this one marked inactive


class Prepared(TypedDict):
    """'Prepare deployment' replaces the execution's input with this (ResultPath `$`)."""

    deployment: Deployment
    poll_seconds: int
    github: GitHubReport


class SupersededBy(TypedDict):
    execution: str
    commit: str


class Lease(TypedDict):
    """The environment's lease, taken by 'Look for earlier runs' once the way is clear (steps/lease.py)."""

    owner: str  # the execution ARN holding it: this run's
    expires_at: int  # epoch seconds: past the latest moment the run can still be running
    reclaimed_from: NotRequired[str]  # the execution that held it and had ended without giving it up


class Queue(TypedDict):
    """'Look for earlier runs' (`$.queue`): go on, wait, or skip for a newer push."""

    clear: bool
    skip: bool
    ahead: list[str]
    checks: int
    poll_seconds: int
    superseded_by: NotRequired[SupersededBy]
    lease: NotRequired[Lease]  # once clear: this run holds the environment until it gives the lease up


class LeaseReleased(TypedDict):
    """'Release the lease' (`$.lease` of the teardown machine) on its way to 'Teardown failed'."""

    released: bool  # False: this run did not hold it (it failed before its turn, or it was reclaimed)


class Image(TypedDict):
    """The node image to run (`$.image`): None until one is baked."""

    ami_id: str | None


class Bake(TypedDict):
    """The CodeBuild bake (`$.bake`): IN_PROGRESS, then SUCCEEDED with the image."""

    build_id: str
    status: str
    ami_id: NotRequired[str | None]


class ServiceBuild(TypedDict):
    """One service built from the repository (`$.builds.services`)."""

    name: str
    key: str  # the build key: the content address of what shapes its image (chalicelib/builds.py)
    repository: str  # its ECR repository
    image: str  # what the stack deploys: <repository uri>:<key>
    digest: str | None  # the pushed image's, once known
    build_id: str | None  # the CodeBuild build making it, None when ECR had the key already
    built: bool  # whether this run builds it (False: reused)


class Builds(TypedDict):
    """'Start the builds' and 'Check the builds' (`$.builds`): NONE (the stack builds nothing),
    IN_PROGRESS, or SUCCEEDED with every service's image in ECR."""

    status: str
    services: list[ServiceBuild]
    checks: int


class Network(TypedDict):
    """The environment's network, converged (`$.network` of the deploy machine)."""

    vpc_id: str
    subnet_ids: list[str]
    internet_gateway_id: str
    route_table_id: str
    security_group_id: str
    lb_security_group_id: str | None  # the load balancer's group (SLIPWAY_INGRESS=nlb), None without one
    created: list[str]


class Ingress(TypedDict):
    """'Provision the load balancer' (`$.ingress`): the environment's address and where it sends requests."""

    kind: str  # nlb, or none (the nodes' own public addresses)
    url: str | None  # http://<the load balancer's DNS name>, None without one
    dns_name: str | None
    load_balancer_arn: str | None
    target_groups: dict[str, str]  # service port -> target group ARN
    created: list[str]


class Traffic(TypedDict):
    """The load balancer's targets (`$.traffic`): the nodes that serve registered and healthy, then
    the old ones deregistered and drained, before they leave the swarm."""

    phase: str  # register (waiting for the new targets' health), drain, or none (no load balancer)
    done: bool
    registered: list[str]  # instance ids registered in every target group
    deregistered: list[str]
    ports: list[int]  # the target groups whose health is waited for: the service ports the stack publishes
    unhealthy: dict[str, str]  # "<instance>:<port>" -> its state, while not every target is healthy
    checks: int
    waited: int  # seconds waited so far (bounded by SLIPWAY_TARGET_HEALTH_TIMEOUT_SECONDS)
    wait_seconds: int  # the next Wait's (SecondsPath): a health poll, or the deregistration delay


class LoadBalancerRemoval(TypedDict):
    """Removing the load balancer (`$.lb_removal`): deleted, then its network interfaces released."""

    removed: dict[str, int]
    interfaces: int  # network interfaces AWS has not released yet
    done: bool
    checks: int
    poll_seconds: int


class Nodes(TypedDict):
    """Which nodes this run launched, which serve once it ends, and the previous image's (`$.nodes`)."""

    new: list[str]
    current: list[str]
    old: list[str]


class Readiness(TypedDict):
    """Whether the nodes run and are online with SSM (`$.readiness`)."""

    ready: bool
    attempts: int
    online: int
    wanted: int


class Swarm(TypedDict):
    """The swarm's forming, one command at a time (`$.swarm`): built only by `swarm.swarm_state`."""

    action: str  # init, join or none
    joined: list[str]
    managers: list[str]
    command_id: str | None
    targets: list[str]
    role: str | None
    initialised: bool
    done: NotRequired[bool]
    complete: NotRequired[bool]


class NodeView(TypedDict):
    """The managers asked for the swarm's view of its nodes, and the nodes' host names."""

    command_id: str
    targets: list[str]
    hostnames: dict[str, str]


class Health(TypedDict):
    """The health gate (`$.health`): PENDING until every answer is in, then HEALTHY."""

    command_id: str
    targets: list[str]
    status: str
    view: NodeView
    checks: int  # evaluations so far
    wait_seconds: int  # before the next evaluation: short first, doubling up to the poll interval
    manager: NotRequired[str]
    gone: NotRequired[list[str]]  # members the swarm lists Down whose instance is gone: forgotten at retire


class Command(TypedDict):
    """A swarm command sent to one manager (`$.promote`, `$.leave`); `done` once it has finished."""

    command_id: str | None
    targets: NotRequired[list[str]]
    what: NotRequired[str]
    promoted: NotRequired[list[str]]
    done: NotRequired[bool]


class Retire(TypedDict):
    """Taking the previous image's nodes out of the swarm, then terminating them (`$.retire`), and
    forgetting members whose instances are gone."""

    old: list[str]
    forgotten: NotRequired[list[str]]  # host names of the members forgotten
    command_id: str | None
    hostnames: NotRequired[dict[str, str]]
    demote: NotRequired[dict[str, str]]
    targets: NotRequired[list[str]]
    what: NotRequired[str]
    done: NotRequired[bool]


class StackFile(TypedDict):
    """'Read the stack file' (`$.stack`): the commit's stack file, validated and stored, or none."""

    present: bool
    path: str  # in the repository (SLIPWAY_STACK_FILE)
    key: str | None  # the validated file in the bake bucket, content-addressed
    services: list[str]
    secrets: dict[str, int]  # each Slipway secret the stack uses -> its SSM parameter's version
    ports: list[int]  # the TCP ports its services publish
    warnings: list[str]
    builds: NotRequired[list[str]]  # the services built from the repository ('Start the builds')
    configs: NotRequired[dict[str, str]]  # each config read from the commit -> sha256 of its bytes
    variables: NotRequired[list[str]]  # the environment's variables it uses (names, never a value)


class ServiceReport(TypedDict):
    """One service of the stack as the rollout left it."""

    name: str
    image: str  # as the stack names it
    digest: str  # what it runs: sha256:...
    running: int
    desired: int
    updated: bool  # whether this run changed it
    state: str  # converged, updating, failed


class Rollout(TypedDict):
    """The stack rollout (`$.rollout`): the command under way on a manager, and the services."""

    phase: str  # none (no stack), inspect, deploy, status, done
    done: bool
    command_id: str | None
    manager: str | None
    changed: list[str]
    removed: list[str]
    services: list[ServiceReport]
    checks: int
    waited: int  # seconds waited so far for the services (bounded by SLIPWAY_STACK_TIMEOUT_SECONDS)
    wait_seconds: int  # the next Wait's (SecondsPath)
    key: str | None  # the file deployed (only the changed services, pinned), when one was


class ImagesRemoved(TypedDict):
    """Old images deregistered after a deployment (`$.images` of the deploy machine)."""

    removed: list[str]
    count: int


class Removal(TypedDict):
    """Nodes being terminated: still there? (`$.removal`)."""

    done: bool
    remaining: int
    checks: int


class Terminated(TypedDict):
    """Nodes whose termination was asked for (`$.removal` of deploy, `$.nodes` of teardown)."""

    instance_ids: list[str]
    poll_seconds: int


class NetworkRemoved(TypedDict):
    """What removing a network deleted, by resource role, and the swarm parameters deleted."""

    removed: dict[str, int]
    parameters: int


class ImagesDeregistered(TypedDict):
    """Teardown's images (`$.images` of the teardown machine): AMIs deregistered, and ECR
    repositories of the builds deleted."""

    images: int
    repositories: NotRequired[int]


class Leftover(TypedDict):
    """Teardown's last word (`$.leftover`): nothing is tagged for the environment any more."""

    environment: str
    leftover: dict[str, int]


class CaughtError(TypedDict):
    """What a Catch puts at its ResultPath (`$.error`, `$.undo_error`, ...): Step Functions' own shape."""

    Error: str
    Cause: str


# --- what each Task receives ---------------------------------------------------------------
# Tasks without `Parameters` receive the whole execution state: the deploy machine's is `DeployRun`
# (every key present once the state that writes it has run), the teardown machine's `TeardownRun`.
# Each key is the ResultPath its shape is written at, but for what the run starts with: Prepare's
# answer (`Prepared`, ResultPath `$`) and the teardown's input. A Catch writes `CaughtError`.


class DeployRun(TypedDict, total=False):
    deployment: Deployment
    poll_seconds: int
    github: GitHubReport
    queue: Queue
    image: Image
    bake: Bake
    builds: Builds
    network: Network
    ingress: Ingress
    traffic: Traffic
    lb_removal: LoadBalancerRemoval
    nodes: Nodes
    readiness: Readiness
    swarm: Swarm
    health: Health
    promote: Command
    retire: Retire
    stack: StackFile
    rollout: Rollout
    images: ImagesRemoved
    leave: Command
    removal: Removal
    undo: NetworkRemoved
    error: CaughtError
    undo_error: CaughtError
    leave_error: CaughtError
    github_error: CaughtError


class TeardownRun(TypedDict, total=False):
    environment: str  # the teardown's input: the environment to remove
    queue: Queue
    nodes: Terminated
    removal: Removal
    lb_removal: LoadBalancerRemoval
    network: NetworkRemoved
    images: ImagesDeregistered
    leftover: Leftover
    lease: LeaseReleased
    error: CaughtError
    lease_error: CaughtError


# Tasks with `Parameters` receive exactly what those build:
class PrepareInput(TypedDict):
    input: dict[str, Any]  # the execution's input, as started: validated by `deploy_input.parse`
    execution: str
    execution_arn: str


class WaitTurnInput(TypedDict):
    run: dict[str, Any]  # the execution's state: a deployment's, or a teardown's input
    execution: str
    state_machine: str


class CheckCommandInput(TypedDict):
    deployment: Deployment
    command: Command


class ReleaseLeaseInput(TypedDict):
    execution_arn: str


class ReportInput(TypedDict):
    run: dict[str, Any]  # the execution's state at the end, or its input when Prepare failed
    outcome: str
    execution_arn: str
