"""modelyard: ML CI/CD in one Python system.

The public API is small on purpose and imported lazily, so `import modelyard` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "ModelyardError",
    "PipelineBuilder",
    "StepContext",
    "define_pipeline",
    "log_metric",
    "log_metrics",
    "log_params",
    "step",
]

_EXPORTS = {
    "ModelyardError": "modelyard.errors",
    "PipelineBuilder": "modelyard.pipeline.builder",
    "StepContext": "modelyard.executors.pyfunc",
    "define_pipeline": "modelyard.pipeline.builder",
    "log_metric": "modelyard.tracking.api",
    "log_metrics": "modelyard.tracking.api",
    "log_params": "modelyard.tracking.api",
    "step": "modelyard.pipeline.builder",
}

if TYPE_CHECKING:
    from modelyard.errors import ModelyardError
    from modelyard.executors.pyfunc import StepContext
    from modelyard.pipeline.builder import PipelineBuilder, define_pipeline, step
    from modelyard.tracking.api import log_metric, log_metrics, log_params


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'modelyard' has no attribute '{name}'")
