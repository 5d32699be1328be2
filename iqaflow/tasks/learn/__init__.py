"""Training, evaluation, the default scorer's recipe, MLflow model registry, official parity."""
