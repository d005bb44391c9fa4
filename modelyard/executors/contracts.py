"""The step contracts: how inputs, outputs and parameters reach a step's process.

modelyard's own contract uses MODELYARD_* variables (and `${{ }}` references in the command);
the SageMaker training contract uses SM_* variables, /opt/ml-style config files and
hyperparameters as `--name value` arguments, so existing SageMaker scripts run unchanged.
"""

from __future__ import annotations

import json
import os
import sys

from modelyard.executors.base import StepTask
from modelyard.pipeline.templates import as_text

SAGEMAKER_HOST = "algo-1"


def env_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def modelyard_environment(task: StepTask) -> dict[str, str]:
    env = {
        "MODELYARD_RUN_ID": str(task.run_id),
        "MODELYARD_STEP": task.step,
        "MODELYARD_ATTEMPT": str(task.attempt),
        "MODELYARD_PROJECT_DIR": str(task.project_dir),
        "MODELYARD_VALUES_FILE": str(task.values_file),
        "MODELYARD_METRICS_FILE": str(task.metrics_file),
        "MODELYARD_PARAMS": json.dumps(task.params),
    }
    env |= {f"MODELYARD_INPUT_{env_name(k)}": str(v) for k, v in task.inputs.items()}
    env |= {f"MODELYARD_OUTPUT_{env_name(k)}": str(v) for k, v in task.outputs.items()}
    env |= {f"MODELYARD_PARAM_{env_name(k)}": as_text(v) for k, v in task.params.items()}
    return env


def sagemaker_contract(task: StepTask) -> tuple[dict[str, str], list[str]]:
    """SM_* variables, config files and hyperparameter arguments of a SageMaker training job.

    The output named `model` is SM_MODEL_DIR; an output named `output_data` (or else a scratch
    folder) is SM_OUTPUT_DATA_DIR. Channels are the step's inputs.
    """
    config_dir = task.workdir / "sagemaker" / "input" / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    hyperparameters = {k: as_text(v) for k, v in task.params.items()}
    channels = sorted(task.inputs)
    output_data = task.outputs.get("output_data") or task.workdir / "sagemaker" / "output" / "data"
    output_data.mkdir(parents=True, exist_ok=True)
    model_dir = task.outputs.get("model") or task.workdir / "sagemaker" / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    resource = {"current_host": SAGEMAKER_HOST, "hosts": [SAGEMAKER_HOST]}
    (config_dir / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config_dir / "inputdataconfig.json").write_text(
        json.dumps({c: {"TrainingInputMode": "File"} for c in channels})
    )
    (config_dir / "resourceconfig.json").write_text(json.dumps(resource))
    env = {
        "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DATA_DIR": str(output_data),
        "SM_OUTPUT_DIR": str(output_data.parent),
        "SM_INPUT_DIR": str(config_dir.parent),
        "SM_INPUT_CONFIG_DIR": str(config_dir),
        "SM_CHANNELS": json.dumps(channels),
        "SM_HPS": json.dumps(hyperparameters),
        "SM_HOSTS": json.dumps([SAGEMAKER_HOST]),
        "SM_CURRENT_HOST": SAGEMAKER_HOST,
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_NUM_GPUS": "0",
        "SM_RESOURCE_CONFIG": json.dumps(resource),
        "SM_USER_ARGS": json.dumps(_hyperparameter_args(hyperparameters)),
    }
    env |= {f"SM_CHANNEL_{env_name(c)}": str(task.inputs[c]) for c in channels}
    env |= {f"SM_HP_{env_name(k)}": v for k, v in hyperparameters.items()}
    return env, _hyperparameter_args(hyperparameters)


def _hyperparameter_args(hyperparameters: dict[str, str]) -> list[str]:
    args: list[str] = []
    for name, value in hyperparameters.items():
        args += [f"--{name}", value]
    return args


def process_environment(task: StepTask) -> dict[str, str]:
    """The full environment of a step's process: ours, then the task's, project on PYTHONPATH."""
    env = dict(os.environ)
    env |= task.env
    # `python` in a command means the interpreter running modelyard (as in an activated venv),
    # the one whose installed packages the environment digest describes.
    interpreter_dir = os.path.dirname(sys.executable)
    env["PATH"] = interpreter_dir + os.pathsep + env.get("PATH", "")
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(task.project_dir) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def prepare_directories(task: StepTask) -> None:
    for folder in task.outputs.values():
        folder.mkdir(parents=True, exist_ok=True)
    task.log_path.parent.mkdir(parents=True, exist_ok=True)
