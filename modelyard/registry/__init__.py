"""The model registry: model versions, their packages, lineage, gates, approvals and aliases.

Submodules are imported where used (`modelyard.registry.packaging`, ...) so that importing this
package stays cheap: MLflow is only loaded by the functions that need it.
"""
