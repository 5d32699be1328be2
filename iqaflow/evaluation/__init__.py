"""Evaluation maths (pure): agreement with human scores and the synthetic distortion benchmark."""
