"""Pipelines: the model of a pipeline, its DAG, templates, expressions and lint rules."""
