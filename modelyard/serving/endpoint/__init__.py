"""Endpoints: a named, stable HTTP address in a stage (dev, prod) serving one or more variants.

One supervisor process per endpoint (`supervisor.py`) runs, in one asyncio loop:
- the front proxy (`proxy.py`) on the endpoint's address: the guards, then a variant chosen by
  traffic weight (`routing.py`), then one of that variant's replicas over a pooled keep-alive
  connection (`upstream.py`), retrying elsewhere when a replica went away before answering;
- the replicas (`replicas.py`): `modelyard serve` child processes on sockets the supervisor
  bound, restarted when they die, drained before they are stopped;
- the rollout of a new variant (`rollout.py`, a pure state machine: all at once, canary, linear;
  bake times; error-rate and latency thresholds; automatic rollback);
- autoscaling of each variant (`modelyard.serving.autoscale`).

The desired state (variants, weights, rollouts) and what the supervisor observes live in the
metadata DB (`modelyard.store.endpoints`), so the CLI reads the truth after any restart.
"""
