"""Serving models: `modelyard serve MODEL` answers MLflow scoring requests over HTTP.

The request side is `signature` (a model's input schema, read from its `MLmodel` file, and its
JSON Schema for the OpenAPI document) and `payloads` (parsing and validating `POST /invocations`
bodies into column batches, with HTTP-ready errors); the ASGI app, the micro-batcher and the
predictors use them. Submodules are imported where used, so importing this package is free.
"""
