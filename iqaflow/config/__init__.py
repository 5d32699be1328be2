"""Typed configs (run, training, default scorer recipes) and their YAML + flags loader."""

from iqaflow.config.run import RunConfig, build_config, load_config

__all__ = ["RunConfig", "build_config", "load_config"]
