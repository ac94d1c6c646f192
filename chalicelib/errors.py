"""Domain errors. Their class names are the error names Step Functions Retry and Catch match on."""


class SlipwayError(Exception):
    """Base of every error Slipway raises on purpose."""


class ConfigurationError(SlipwayError):
    """The stage configuration is missing or invalid."""


class InvalidInput(SlipwayError):
    """A state machine was started with input it cannot use."""


class TransientError(SlipwayError):
    """An AWS call failed in a way worth retrying (the state machine retries it)."""


class BakeFailed(SlipwayError):
    """The CodeBuild bake ended without producing an image."""


class BuildFailed(SlipwayError):
    """A service's image could not be built: the message names the service, the failing step, the
    build log's last lines and where the whole log is."""


class EnvironmentOwned(SlipwayError):
    """The environment runs another repository's application: a push from this one is refused."""


class NodesNotReady(SlipwayError):
    """Nodes did not reach running and SSM-online within the allowed polls."""


class SwarmFailed(SlipwayError):
    """A swarm init or join command failed on a node."""


class NodesUnhealthy(SlipwayError):
    """The health gate found a node whose swarm is not active."""


class CommandFailed(SlipwayError):
    """An SSM Run Command ended in a state other than Success."""


class TeardownIncomplete(SlipwayError):
    """Something tagged for the environment is still there after teardown."""


class GitHubRefused(SlipwayError):
    """GitHub refused a request in a way that retrying will not change (401, 403, 404, 422)."""


class QueueTimeout(SlipwayError):
    """A run waited for the environment's earlier runs longer than SLIPWAY_QUEUE_MAX_CHECKS polls."""


class StackInvalid(InvalidInput):
    """The stack file cannot be deployed; the message names the file and says why."""


class StackFailed(SlipwayError):
    """The stack could not be rolled out: an image could not be pulled, a service's new tasks failed
    and Swarm rolled it back, or the services did not converge in SLIPWAY_STACK_TIMEOUT_SECONDS."""


class IngressFailed(SlipwayError):
    """The load balancer did not find the serving nodes healthy in SLIPWAY_TARGET_HEALTH_TIMEOUT_SECONDS,
    or did not let go of its network interfaces when it was removed."""
