"""The device agent (`modelyard-agent`): runs Greengrass v2 components on one device.

- `model`: a component recipe as typed data (what the other modules work on);
- `recipe`: parsing and validating recipes (YAML or JSON, RecipeFormatVersion 2020-01-25);
  `platform`: the manifest for this device; `variables`: recipe variables; `versions`: version
  ranges and resolving a deployment; `builtins`: AWS-provided components; `digests`: artifacts;
- `store` (+ `archives`): recipes and artifacts on disk, verified and unpacked safely;
- `lifecycle` (+ `logs`): one component's scripts as a state machine; `components`: many, in
  dependency order;
- `policy` and `ipc_broker`: local publish/subscribe on a Unix socket, authorised by each
  component's accessControl policies (the client for component code is `modelyard.edge.ipc`);
- `deployments` (documents in Greengrass's CreateDeployment shape, local deployments, planning),
  `configuration` (merge and reset), `journal` (the device's state and each deployment's record,
  written atomically: what crash recovery reads);
- `agent`: the process (`modelyard-agent run`): one per root, applies queued deployments with
  NOTIFY_COMPONENTS and ROLLBACK, recovers an interrupted one; `cli`: `modelyard-agent`.

Nothing here imports the control plane (`modelyard.*` outside `modelyard.edge`), so the agent
runs with few dependencies; tests guard it.
"""
