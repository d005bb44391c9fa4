"""The device agent (`modelyard-agent`): runs Greengrass v2 components on one device.

- `model`: a component recipe as typed, validated data (what the other modules work on);
- `recipe`: parsing and validating recipes (YAML or JSON, RecipeFormatVersion 2020-01-25),
  selecting the manifest of this platform, recipe variables, dependency version ranges;
- `lifecycle`: running a component's lifecycle scripts as a state machine, with its logs;
- `ipc_broker`: local publish/subscribe on a Unix socket, authorised by each component's
  accessControl policies.

Nothing here imports the control plane (`modelyard.*` outside `modelyard.edge.agent`), so the
agent runs with few dependencies; a test guards it.
"""
