"""Experiment tracking: steps log metrics and parameters (`api`), the driver records them in the
metadata DB with an outbox (`records`), and a background pusher sends them to MLflow (`pusher`).

Only `api` is imported by steps; it uses the standard library alone, so logging costs nothing at
import time. MLflow is imported by the pusher only.
"""
