"""Which manifest of a recipe applies to this device: Greengrass's platform matching (os,
architecture and other attributes; `*` and `/regex/` values), with the names Greengrass gives
this machine."""

from __future__ import annotations

import platform as _platform_module
import re
import sys

from modelyard.edge.agent.errors import RecipeError
from modelyard.edge.agent.model import (
    Component,
    Platform,
    Recipe,
)

_ARCHITECTURES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "i386": "x86",
    "i686": "x86",
    "x86": "x86",
}


def current_platform() -> Platform:
    """This machine, named as Greengrass names platforms (os linux, architecture amd64, ...)."""
    if sys.platform.startswith("linux"):
        os_name = "linux"
    elif sys.platform == "darwin":
        os_name = "darwin"
    elif sys.platform in ("win32", "cygwin"):
        os_name = "windows"
    else:
        os_name = _platform_module.system().lower()
    machine = _platform_module.machine().lower()
    arch = _ARCHITECTURES.get(machine) or ("arm" if machine.startswith("arm") else machine)
    return Platform(os=os_name, architecture=arch)


def _value_matches(wanted: str | None, actual: str | None) -> bool:
    if wanted is None or wanted == "*":
        return True  # also when the device does not define the attribute
    if len(wanted) >= 2 and wanted.startswith("/") and wanted.endswith("/"):
        return re.fullmatch(wanted[1:-1], actual or "") is not None
    return wanted == actual


def platform_matches(wanted: Platform, device: Platform) -> bool:
    """Whether a manifest's platform requirements hold for the device (Greengrass's rule)."""
    return (
        _value_matches(wanted.os, device.os)
        and _value_matches(wanted.architecture, device.architecture)
        and all(
            _value_matches(value, device.attributes.get(key))
            for key, value in wanted.attributes.items()
        )
    )


def describe_platform(platform: Platform) -> str:
    parts = [f"os={platform.os}"] if platform.os else []
    parts += [f"architecture={platform.architecture}"] if platform.architecture else []
    parts += [f"{key}={value}" for key, value in platform.attributes.items()]
    return ", ".join(parts) or "any platform"


def select_manifest(recipe: Recipe, platform: Platform) -> Component:
    """The recipe with the first manifest whose platform matches `platform`."""
    for manifest in recipe.manifests:
        if platform_matches(manifest.platform, platform):
            return Component(recipe=recipe, manifest=manifest)
    offered = "; ".join(
        f"[{i}] {describe_platform(m.platform)}" for i, m in enumerate(recipe.manifests)
    )
    offered = offered or "none"
    raise RecipeError(
        f"{recipe.ref} has no manifest for this device ({describe_platform(platform)})",
        path="Manifests",
        hint=f"its manifests are for: {offered}; add a manifest for this platform",
    )
