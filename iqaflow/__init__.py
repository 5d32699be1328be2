"""iqaflow: workflow-orchestrated image-quality QA for large image collections."""

__version__ = "0.1.0"
