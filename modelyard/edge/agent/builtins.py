"""AWS-provided components that recipes depend on: which the modelyard agent stands in for.

Greengrass recipes often name `aws.greengrass.*` components as dependencies. A modelyard device
has no AWS account behind it, so each is either provided by the agent itself (the nucleus, its
CLI, Docker when the device has it) or refused with the reason, before anything is installed.
All refusals of a deployment are reported together, so a user fixes them in one go.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from modelyard.edge.agent.errors import DeploymentError, RecipeError
from modelyard.edge.agent.model import Component

AWS_PREFIX = "aws.greengrass."
DOCKER_MANAGER = "aws.greengrass.DockerApplicationManager"

# provided by the agent whatever version is asked for: the agent is what runs them
_PROVIDED = {
    "aws.greengrass.Nucleus": "the modelyard agent itself",
    "aws.greengrass.Cli": "the `modelyard-agent` CLI",
}
_NO_CLOUD = "not available on a modelyard device"
# refused, with why: they need AWS services or run code the agent cannot run
_REFUSED = {
    "aws.greengrass.TokenExchangeService": f"needs AWS credentials: {_NO_CLOUD}",
    "aws.greengrass.ShadowManager": f"syncs device shadows with AWS IoT Core: {_NO_CLOUD}",
    "aws.greengrass.StreamManager": f"streams data to AWS services: {_NO_CLOUD}",
    "aws.greengrass.SecretManager": f"needs AWS Secrets Manager and credentials: {_NO_CLOUD}",
    "aws.greengrass.LogManager": f"uploads logs to CloudWatch: {_NO_CLOUD}",
    "aws.greengrass.Cloudwatch": f"publishes CloudWatch metrics: {_NO_CLOUD}",
    "aws.greengrass.telemetry.NucleusEmitter": f"sends telemetry to AWS IoT Core: {_NO_CLOUD}",
    "aws.greengrass.DeviceDefender": f"reports to AWS IoT Device Defender: {_NO_CLOUD}",
    "aws.greengrass.LambdaLauncher": "runs AWS Lambda functions: not supported by modelyard",
    "aws.greengrass.LambdaManager": "runs AWS Lambda functions: not supported by modelyard",
    "aws.greengrass.LambdaRuntimes": "runs AWS Lambda functions: not supported by modelyard",
    "aws.greengrass.clientdevices.mqtt.Bridge": f"bridges MQTT to AWS IoT Core: {_NO_CLOUD}",
    "aws.greengrass.clientdevices.mqtt.Moquette": f"an MQTT broker for client devices: {_NO_CLOUD}",
    "aws.greengrass.clientdevices.mqtt.EMQX": f"an MQTT broker for client devices: {_NO_CLOUD}",
    "aws.greengrass.clientdevices.Auth": f"authenticates client devices with AWS: {_NO_CLOUD}",
    "aws.greengrass.clientdevices.IPDetector": f"reports addresses to AWS IoT: {_NO_CLOUD}",
    "aws.greengrass.SageMakerEdgeManager": "AWS's model runtime: package the model with modelyard",
    "aws.greengrass.LocalDebugConsole": f"the Greengrass debug console: {_NO_CLOUD}",
}
_KNOWN = ", ".join(name.removeprefix(AWS_PREFIX) for name in [*_PROVIDED, DOCKER_MANAGER])


@dataclass(frozen=True)
class BuiltinStatus:
    """Whether this device can satisfy a dependency on an AWS-provided component, and why."""

    name: str
    requirement: str
    provided: bool
    reason: str  # what provides it, or why it is refused
    required_by: tuple[str, ...] = ()  # component refs (or "deployment") that asked for it

    def describe(self) -> str:
        who = f" (required by {', '.join(self.required_by)})" if self.required_by else ""
        return f"{self.name} {self.requirement}{who}: {self.reason}"


def is_builtin(name: str) -> bool:
    """True for names in AWS's namespace, which only this module resolves."""
    return name.startswith(AWS_PREFIX)


def docker_available() -> bool:
    return shutil.which("docker") is not None


def check_builtin(name: str, requirement: str = "*") -> BuiltinStatus:
    """Whether `name` (an `aws.greengrass.*` component) can be had on this device."""
    if not is_builtin(name):
        raise ValueError(f"{name} is not an AWS-provided component")
    if name in _PROVIDED:
        return BuiltinStatus(name, requirement, True, f"provided by {_PROVIDED[name]}")
    if name == DOCKER_MANAGER:
        if docker_available():
            return BuiltinStatus(name, requirement, True, "provided by Docker on this device")
        return BuiltinStatus(name, requirement, False, "needs Docker on the device: install docker")
    if name in _REFUSED:
        return BuiltinStatus(name, requirement, False, _REFUSED[name])
    reason = f"unknown AWS-provided component; a modelyard device provides only {_KNOWN}"
    return BuiltinStatus(name, requirement, False, reason)


def check_builtins(wanted: Mapping[str, Mapping[str, str]]) -> list[BuiltinStatus]:
    """The status of each AWS-provided component a deployment wants.

    `wanted` maps a builtin's name to {who requires it: the version range it asks for}.
    """
    statuses = []
    for name in sorted(wanted):
        by = wanted[name]
        requirement = " ".join(dict.fromkeys(by.values())) or "*"
        status = check_builtin(name, requirement)
        statuses.append(
            BuiltinStatus(name, requirement, status.provided, status.reason, tuple(sorted(by)))
        )
    return statuses


def require_builtins(wanted: Mapping[str, Mapping[str, str]]) -> list[BuiltinStatus]:
    """`check_builtins`, raising one DeploymentError that lists every refusal."""
    statuses = check_builtins(wanted)
    refused = [status for status in statuses if not status.provided]
    if refused:
        lines = "; ".join(status.describe() for status in refused)
        noun = "dependency" if len(refused) == 1 else "dependencies"
        raise DeploymentError(
            f"{len(refused)} AWS-provided {noun} cannot run on this device: {lines}",
            hint="remove these dependencies from the recipes, or deploy to a device that has them",
        )
    return statuses


def check_docker_artifacts(component: Component) -> None:
    """Refuse a component with `docker:` artifacts unless Docker is on the PATH."""
    docker = [artifact for artifact in component.artifacts if artifact.is_docker]
    if not docker or docker_available():
        return
    index = next(
        (i for i, m in enumerate(component.recipe.manifests) if m is component.manifest), None
    )
    where = f"Manifests[{index}]." if index is not None else ""
    position = component.artifacts.index(docker[0])
    raise RecipeError(
        f"{component.name}'s artifact {docker[0].uri} needs Docker on the device; "
        "none found on PATH",
        path=f"{where}Artifacts[{position}].URI",
        hint="install docker, or use a manifest without docker: artifacts",
    )
