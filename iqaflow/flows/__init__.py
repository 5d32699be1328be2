"""Prefect flows: orchestration only; the work lives in ``iqaflow.tasks``."""
