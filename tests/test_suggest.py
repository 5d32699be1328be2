"""`gates suggest`'s rule learning: the logistic rule against scikit-learn, held-out figures, declared directions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from iqaflow.schemas import gate_expr
from iqaflow.tasks.gates.suggest import suggest_from_scores
from iqaflow.tasks.gates.suggest_rules import Target, choose, fit_combined

NAMES = ["sharpness", "noise"]  # declared: higher sharpness is better, lower noise is better


def labelled(n: int, seed: int, noise_way: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Scores of n images and reject labels from a latent quality (noise_way -1: noise reads backwards)."""
    rng = np.random.default_rng(seed)
    quality = rng.normal(0, 1, n)
    sharp = 150 + 40 * quality + rng.normal(0, 30, n)
    noise = 6 - 2 * noise_way * quality + rng.normal(0, 2, n)
    reject = quality + rng.normal(0, 0.6, n) < -0.5
    return np.stack([sharp, noise], axis=1), reject


def gate_passes(expression: str, X: np.ndarray) -> np.ndarray:
    table = pa.table({name: X[:, j] for j, name in enumerate(NAMES)})
    node = gate_expr.parse(expression)
    gate_expr.check(node, dict.fromkeys(NAMES, "number"))
    return np.array(gate_expr.evaluate(node, table).to_pylist(), dtype=bool)


def test_logistic_rule_matches_scikit_learn() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X, y = labelled(400, 1)
    rule = fit_combined(X, y, NAMES, [True, False], Target("recall", 0.8))
    assert rule is not None and rule.columns == NAMES and not rule.dropped
    scaler = StandardScaler().fit(X)
    model = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(X), y)
    np.testing.assert_allclose(rule.weights, -model.coef_[0], rtol=1e-4)
    assert rule.weights[0] > 0 > rule.weights[1]  # sharpness counts for, noise against
    # The written expression, evaluated by the gate grammar, rejects exactly where scikit-learn's score is high.
    sk_reject = model.decision_function(scaler.transform(X)) > model.intercept_[0] - rule.threshold
    passes = gate_passes(rule.expression(), X)
    assert (~passes == sk_reject).mean() >= 0.995 and (~passes == rule.rejects(X)).all()
    assert (~passes)[y].mean() >= 0.8  # the target, on the labels it was fitted to
    fresh, _ = labelled(200, 2)
    expected = model.decision_function(scaler.transform(fresh)) > model.intercept_[0] - rule.threshold
    assert (~gate_passes(rule.expression(), fresh) == expected).mean() >= 0.99


def test_held_out_figures_differ_from_in_sample() -> None:
    X, y = labelled(160, 3)
    candidates = choose(X, y, NAMES, [True, False], Target("recall", 0.8))
    combined = next(c for c in candidates if c.label == "combined")
    assert combined.fitted.recall >= 0.8 and combined.held_out is not None
    assert (combined.held_out.precision, combined.held_out.recall) != (combined.fitted.precision,
                                                                       combined.fitted.recall)
    assert sum(c.chosen for c in candidates) == 1
    result = suggest_from_scores({"sharpness": X[:, 0], "noise": X[:, 1]}, y, Target("precision", 0.7))
    kept = next(c for c in result.candidates if c.chosen)
    assert kept.held_out is not None and f"precision {kept.held_out.precision:.2f}" in result.text
    assert "5-fold stratified cross-validation" in result.text and "Target: precision of rejects >= 0.70" in result.text


def test_a_column_against_its_declared_direction_is_dropped_with_a_comment() -> None:
    X, y = labelled(300, 4, noise_way=-1.0)  # on these labels, noisier images were the better ones
    rule = fit_combined(X, y, NAMES, [True, False], Target("recall", 0.8))
    assert rule is not None and rule.columns == ["sharpness"] and "noise" in rule.dropped
    assert "higher noise went with accepted images" in rule.dropped["noise"]
    result = suggest_from_scores({"sharpness": X[:, 0], "noise": X[:, 1]}, y, Target("recall", 0.8))
    assert "# Columns left out:\n#   noise: on these labels higher noise went with accepted images" in result.text
    require = next(line for line in result.text.splitlines() if "require:" in line and "sharpness" in line)
    assert "noise" not in require and "sharpness >=" in require
    for c in result.candidates:
        assert "noise" not in c.rule.columns


def test_no_usable_column_is_a_config_error() -> None:
    from iqaflow.errors import ConfigError

    X, y = labelled(100, 5)
    with pytest.raises(ConfigError, match="no score column separates the labels"):
        suggest_from_scores({"sharpness": -X[:, 0]}, y, Target("recall", 0.8))
