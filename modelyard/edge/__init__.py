"""Edge fleets: Greengrass v2 components on devices.

`modelyard.edge.agent` is the device side (the agent process, its component store, local pub/sub,
deployments with rollback) and imports nothing else of modelyard, so that a device needs only
what the agent needs. `modelyard.edge.ipc` is the client that component code uses to talk to it.
"""
