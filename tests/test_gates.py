"""Gate files: the expression grammar, every rule kind, GX suite compile + validation + data docs, drift."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from gatekit import gate_text, row, table, write_run

from iqaflow.errors import ConfigError
from iqaflow.models.gate_binding import prepare
from iqaflow.schemas import gate_expr
from iqaflow.schemas.gates import GATES_KEY, bind, load_gate_file, parse_gate_text
from iqaflow.schemas.gx_suite import compile_suite
from iqaflow.schemas.results import GATE_FIELDS, Col, results_schema
from iqaflow.tasks.gates import decide
from iqaflow.tasks.gates.gate import apply_decisions, drift_distance, locate_run, validate_collection

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCHEMA = results_schema(["sharpness", "noise"])


def _eval(expr: str, t: pa.Table) -> list[bool | None]:
    node = gate_expr.parse(expr)
    gate_expr.check(node, {f.name: gate_expr.value_kind(f.type) for f in t.schema})
    return gate_expr.evaluate(node, t).to_pylist()


@pytest.fixture
def small() -> pa.Table:
    return table([row("/c/a.png", 300, 1), row("/c/b.png", 150, 20), row("/c/c.png", 50, 1),
                  row("/c/d.png", error="TRUNCATED"), row("/c/e.png", 120, 7)])


# --- grammar -----------------------------------------------------------------------------------

@pytest.mark.parametrize("expr, expected", [
    ("sharpness >= 120", [True, True, False, None, True]),
    ("sharpness > 120", [True, True, False, None, False]),
    ("noise < 5 or sharpness == 150", [True, True, True, None, False]),
    ("sharpness >= 100 and (noise < 5 or not noise > 10)", [True, False, False, None, True]),
    ("not sharpness < 100", [True, True, False, None, True]),
    ("error_code is null", [True, True, True, False, True]),
    ("error_code is not null", [False, False, False, True, False]),
    ("error_code in ('TRUNCATED', 'EMPTY_FILE')", [False, False, False, True, False]),
    ("error_code not in ('TRUNCATED')", [True, True, True, False, True]),  # a missing value is not in a list
    ("sharpness >= noise", [True, True, True, None, True]),
    ("width >= 128 AND height >= 96", [True, True, True, None, True]),
    ("noise <= 1e1 or sharpness >= -5", [True, True, True, None, True]),
    ("error_code is null or sharpness > 1000", [True, True, True, None, True]),  # Kleene: unknown or false
    ("error_code is not null or sharpness > 0", [True, True, True, True, True]),  # Kleene: true or unknown
    ("sharpness - 100 >= 20", [True, True, False, None, True]),  # arithmetic: null in, null out (unknown)
    ("0.5 * (sharpness - 100) / 10 - 2 * (noise - 1) / 4 >= 1", [True, False, False, None, False]),
    ("(sharpness + noise) / 2 > 80 and not (noise > 5)", [True, False, False, None, False]),
    ("-sharpness <= -150", [True, True, False, None, False]),
    ("sharpness * 2 - noise * 10 >= 100 or noise-1 == 0", [True, True, True, None, True]),
    ("sharpness / (noise - 1) > 100", [True, False, True, None, False]),  # x/0 = inf, as IEEE floats
])
def test_expressions_evaluate_vectorised(small: pa.Table, expr: str, expected: list) -> None:
    assert _eval(expr, small) == expected


def test_and_binds_tighter_than_or() -> None:
    node = gate_expr.parse("a > 1 or b > 2 and c > 3")
    assert isinstance(node, gate_expr.BoolOp) and node.op == "or"
    assert isinstance(node.items[1], gate_expr.BoolOp) and node.items[1].op == "and"
    assert gate_expr.columns(node) == ["a", "b", "c"]


@pytest.mark.parametrize("expr, message, pos", [
    ("sharpness >= ", "expected a column name or a value", 13),
    ("sharpness = 5", "unknown operator '=' (use == to compare)", 10),
    ("a && b", "unknown operator '&&'", 2),
    ("(sharpness > 1", "expected ')'", 14),
    ("sharpness > 1)", "unexpected ')'", 13),
    ("sharpness 5", "expected a comparison", 10),
    ("not", "expected a column name or a value", 3),
    ("", "empty expression", 0),
    ("noise is 3", "'null' after 'is'", 9),
    ("noise not 3", "expected 'in' after 'not'", 10),
    ("__import__('os')", "after '__import__', got '('", 10),
    ("__import__('os').system('rm -rf /')", "unknown operator '.'", 16),
    ("sharpness > 1; import os", "unknown operator ';'", 13),
    ("x in (a)", "expected a value in the in-list", 6),
    ("sharpness + 1", "expected a comparison (<=, >=, ==, !=, <, >) after the arithmetic", 13),
    ("(sharpness - 1 > 2", "expected ')'", 18),
    ("sharpness * > 2", "expected a column name or a value, got '>'", 12),
])
def test_bad_expressions_name_the_position(expr: str, message: str, pos: int) -> None:
    with pytest.raises(gate_expr.ExprError) as info:
        gate_expr.parse(expr)
    assert message in info.value.message and info.value.pos == pos


def test_expressions_are_never_evaluated_as_python(monkeypatch: pytest.MonkeyPatch, small: pa.Table) -> None:
    def forbidden(*_a: object, **_k: object) -> None:
        raise AssertionError("eval/exec/compile must not be used")

    for name in ("eval", "exec"):
        monkeypatch.setattr(builtins, name, forbidden)
    assert _eval("sharpness >= 120 and error_code is null", small) == [True, True, False, False, True]
    text = gate_text("image_rules:\n  - name: x\n    require: \"__import__('os').system('touch pwned')\"\n"
                     "    outcome: reject\n")
    with pytest.raises(ConfigError, match=r"t.yaml:5:31: rule 'x' require: unknown operator '\.'"):
        parse_gate_text(text, "t.yaml")


def test_type_and_column_checks(small: pa.Table) -> None:
    kinds = {f.name: gate_expr.value_kind(f.type) for f in small.schema}
    for expr, msg in [("sharpness > 'high'", "compares a number with a string"),
                      ("1 < 2", "compares two constants"), ("sharpnes > 3", "did you mean 'sharpness'"),
                      ("error_code in (1, 2)", "is a number but error_code holds string values"),
                      ("sharpness", "'sharpness' holds number values; only a true/false column"),
                      ("not error_code and noise < 3", "'error_code' holds string values"),
                      ("error_code + 1 > 2", "arithmetic needs numbers, but error_code is a string"),
                      ("(1 + 2) * 3 > 4", "compares two constants")]:
        with pytest.raises(gate_expr.ExprError, match=msg):
            gate_expr.check(gate_expr.parse(expr), kinds)


# --- gate file schema: line numbers, unknown keys, columns -------------------------------------

def test_errors_name_file_line_and_column() -> None:
    text = gate_text("image_rules:\n  - name: sharp\n    require: sharpnes >= 120\n    outcome: flag\n")
    spec = parse_gate_text(text, "g.yaml")
    with pytest.raises(ConfigError) as info:
        bind(spec, SCHEMA)
    assert str(info.value).startswith("g.yaml:5:14: rule 'sharp' require 'sharpnes >= 120': unknown column "
                                      "'sharpnes'; did you mean 'sharpness'?")
    bad_key = gate_text("image_rules:\n  - name: a\n    require: noise < 3\n    outcome: flag\n    reasn: x\n")
    with pytest.raises(ConfigError, match=r"g.yaml:7: image_rules.0.reasn: unknown key"):
        parse_gate_text(bad_key, "g.yaml")
    bad_outcome = gate_text("image_rules:\n  - name: a\n    require: noise < 3\n    outcome: drop\n")
    with pytest.raises(ConfigError, match=r"g.yaml:6: image_rules.0.outcome: Input should be 'flag' or 'reject'"):
        parse_gate_text(bad_outcome, "g.yaml")
    two_kinds = gate_text("relative_rules:\n  - name: r\n    by: noise\n    keep_top_k: 3\n"
                          "    reject_bottom_percent: 5\n    outcome: flag\n")
    with pytest.raises(ConfigError, match=r"g.yaml:4: relative_rules.0: relative rule 'r': expected exactly one"):
        parse_gate_text(two_kinds, "g.yaml")
    bad_gate = gate_text("collection:\n  gates:\n    - type: quantile\n      column: sharpness\n      quantile: 0.5\n")
    with pytest.raises(ConfigError, match=r"g.yaml:5: collection.gates.0.quantile: .*expected min, max or both"):
        parse_gate_text(bad_gate, "g.yaml")
    bad_tag = gate_text("routing:\n  - action: tag\n    when: [reject]\n    tags: {qa: '{__class__}'}\n")
    with pytest.raises(ConfigError, match=r"g.yaml:4: .*only use the {status} and {reasons} placeholders"):
        parse_gate_text(bad_tag, "g.yaml")


def test_unknown_column_from_an_unused_scorer_says_how_to_fix() -> None:
    spec = parse_gate_text(gate_text("image_rules:\n  - name: n\n    require: niqe <= 6.5\n    outcome: flag\n"))
    with pytest.raises(ConfigError, match="comes from scorer 'niqe', which this run did not use: add it to --models"):
        prepare(spec, SCHEMA)
    optional = parse_gate_text(gate_text(
        "image_rules:\n  - name: n\n    require: niqe <= 6.5\n    outcome: flag\n    optional: true\n"))
    bound = prepare(optional, SCHEMA)
    assert bound.image_rules == [] and bound.skipped == ["image rule 'n': no column niqe"]


def test_config_rejects_a_bad_gate_file_before_scoring(tmp_path: Path) -> None:
    from iqaflow.config.run import build_config

    good = tmp_path / "g.yaml"
    good.write_text(gate_text("image_rules:\n  - name: s\n    require: sharpness >= 1\n    outcome: flag\n"))
    assert build_config({"source": str(tmp_path), "gates": str(good)}).gates == str(good)
    bad = tmp_path / "bad.yaml"
    bad.write_text(gate_text("image_rules:\n  - name: s\n    require: psnr >= 30\n    outcome: flag\n"))
    with pytest.raises(ConfigError, match=r"bad.yaml:5:14: .*unknown column 'psnr'.*scorer 'psnr'"):
        build_config({"source": str(tmp_path), "gates": str(bad)})
    with pytest.raises(ConfigError, match="not found"):
        build_config({"source": str(tmp_path), "gates": str(tmp_path / "nope.yaml")})


@pytest.mark.parametrize("name, models", [
    ("curation", ["sharpness", "exposure", "noise"]),
    ("medical_intake", ["sharpness", "exposure", "noise"]),
    ("print_audit", ["psnr", "ssim", "sharpness"]),
])
def test_examples_load_and_bind(name: str, models: list[str]) -> None:
    from iqaflow.models.registry import scorer_info

    spec = load_gate_file(EXAMPLES / f"{name}.yaml")
    outputs = [o for m in models for o in scorer_info(m).outputs]
    bound = prepare(spec, results_schema(outputs), collection=True)
    assert bound.name == name and bound.image_rules and bound.collection.gates and bound.routing


# --- decisions: per-image and relative rules ------------------------------------------------------

RULES = """image_rules:
  - name: readable
    require: error_code is null
    outcome: reject
    reason: unreadable
  - name: sharp
    require: sharpness >= 100
    outcome: flag
    reason: soft
  - name: quiet
    require: noise <= 10
    outcome: reject
    on_null: pass
"""


def test_image_rules_outcomes_reasons_and_nulls(small: pa.Table) -> None:
    spec = bind(parse_gate_text(gate_text(RULES)), SCHEMA)
    d = decide.image_decisions(small, spec.image_rules)
    assert d.status().to_pylist() == ["pass", "reject", "flag", "reject", "pass"]
    # reject wins over flag; reasons keep rule order; a null score fails unless on_null: pass
    assert d.reasons().to_pylist() == [[], ["quiet"], ["soft"], ["unreadable", "soft:missing"], []]
    out = decide.apply_image_gates(small, spec)
    assert out.schema.field(Col.GATE_REASONS).type == GATE_FIELDS[1].type
    assert out.schema.metadata[GATES_KEY] == spec.fingerprint().encode()


def _relative(rule: str, t: pa.Table) -> tuple[list[str], list[list[str]]]:
    spec = prepare(parse_gate_text(gate_text(RULES + "relative_rules:\n" + rule)), SCHEMA)
    d = decide.decide(t, spec, {"sharpness": True, "noise": False})
    return d.status().to_pylist(), d.reasons().to_pylist()


def test_relative_rules_rank_among_not_rejected() -> None:
    t = table([row(f"/c/{i}.png", s, n) for i, (s, n) in enumerate(
        [(500, 1), (400, 2), (300, 3), (200, 4), (150, 20), (100, 5)])] + [row("/c/x.png", error="EMPTY_FILE")])
    # candidates: rows 0-3 and 5 (row 4 rejected by noise, row 6 by unreadable)
    status, reasons = _relative("  - name: best2\n    by: sharpness\n    keep_top_k: 2\n    outcome: reject\n", t)
    assert status == ["pass", "pass", "reject", "reject", "reject", "reject", "reject"]
    assert reasons[2] == ["best2"] and reasons[4] == ["quiet"] and reasons[6][0] == "unreadable"
    status, _ = _relative("  - name: top\n    by: sharpness\n    keep_top_percent: 50\n    outcome: flag\n", t)
    assert status == ["pass", "pass", "pass", "flag", "reject", "flag", "reject"]  # ceil(5 * 0.5) = 3 kept
    # noise is lower-is-better (from the registry): the noisiest 40% of 5 candidates = 2 images
    status, reasons = _relative("  - name: b\n    by: noise\n    reject_bottom_percent: 40\n    outcome: flag\n", t)
    assert [i for i, r in enumerate(reasons) if "b" in r] == [3, 5]
    status, reasons = _relative("  - name: b\n    by: noise\n    reject_bottom_percent: 40\n    outcome: flag\n"
                                "    higher_is_better: true\n", t)
    assert [i for i, r in enumerate(reasons) if "b" in r] == [0, 1]


def test_relative_rule_ties_break_by_image_id_and_nulls_fail() -> None:
    rows = [row(f"/c/{i}.png", 100, 1) for i in range(4)] + [row("/c/n.png", None, 1)]
    t = table(rows)
    spec = prepare(parse_gate_text(gate_text("relative_rules:\n  - name: k\n    by: sharpness\n    keep_top_k: 2\n"
                                             "    outcome: flag\n")), SCHEMA)
    reasons = decide.decide(t, spec).reasons().to_pylist()
    kept = sorted(r[Col.IMAGE_ID] for r in rows[:4])[:2]
    assert [r[Col.IMAGE_ID] for r, why in zip(rows, reasons, strict=True) if not why] == \
        [r[Col.IMAGE_ID] for r in rows if r[Col.IMAGE_ID] in kept]
    assert reasons[4] == ["k:missing"]


def test_kept_count_edges() -> None:
    from iqaflow.schemas.gates import RelativeRule

    def rule(**kw: float) -> RelativeRule:
        return RelativeRule(name="r", by="x", outcome="flag", **kw)

    assert decide.kept_count(rule(keep_top_k=10), 3) == 3
    assert decide.kept_count(rule(keep_top_percent=80), 31) == 25
    assert decide.kept_count(rule(keep_top_percent=10), 10) == 1
    assert decide.kept_count(rule(reject_bottom_percent=10), 31) == 28
    assert decide.kept_count(rule(reject_bottom_percent=0), 0) == 0


# --- final pass over a results folder ---------------------------------------------------------

def test_final_pass_rewrites_only_changed_shards(tmp_path: Path) -> None:
    rows = [row(f"/c/{i}.png", 100.0 + i * 10, 1) for i in range(10)]
    run = locate_run(str(write_run(tmp_path / "run", rows, shards=2)))
    spec = prepare(parse_gate_text(gate_text("relative_rules:\n  - name: top\n    by: sharpness\n"
                                             "    keep_top_k: 3\n    outcome: reject\n")), SCHEMA)
    first = apply_decisions(run, spec)
    assert first.rewritten == 2 and first.counts == {"pass": 3, "flag": 0, "reject": 7}
    import pyarrow.parquet as pq

    done = pq.read_table(run.results_dir).sort_by(Col.URI)
    assert done[Col.GATE_STATUS].to_pylist().count("pass") == 3
    assert apply_decisions(run, spec).rewritten == 0  # idempotent
    assert locate_run(run.results_dir) == run


# --- GX: compile, validate, data docs; drift ---------------------------------------------------

COLLECTION = """collection:
  on_fail: fail
  gates:
    - type: reject_rate
      max: 0.25
    - type: error_rate
      max: 0.1
      on_fail: warn
    - type: flag_rate
      max: 0.5
    - type: quantile
      column: sharpness
      quantile: 0.1
      min: 125
    - type: mean
      column: sharpness
      min: 100
      max: 1000
    - type: values_between
      column: noise
      max: 10
      mostly: 0.9
    - type: drift
      column: sharpness
      max: 0.5
"""


def test_compile_suite_one_expectation_per_gx_gate() -> None:
    spec = parse_gate_text(gate_text(RULES + COLLECTION))
    exps = compile_suite(spec)
    assert [e.type for e in exps] == [
        "expect_column_values_to_not_be_in_set", "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_in_set", "expect_column_quantile_values_to_be_between",
        "expect_column_mean_to_be_between", "expect_column_values_to_be_between"]
    assert exps[0].kwargs == {"column": Col.GATE_STATUS, "value_set": ["reject"], "mostly": 0.75}
    assert exps[1].kwargs == {"column": Col.STATUS, "value_set": ["ok"], "mostly": 0.9}
    assert exps[1].meta == {"gate": "error_rate", "gate_type": "error_rate", "on_fail": "warn"}
    assert exps[3].kwargs["quantile_ranges"] == {"quantiles": [0.1], "value_ranges": [[125.0, None]]}


def test_drift_distance_against_independent_values() -> None:
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 400), rng.normal(0.5, 1, 300)
    assert drift_distance(a, a.copy()) == 0.0
    assert drift_distance(a, a + 100) == 1.0
    grid = np.sort(np.concatenate([a, b]))
    ecdf = lambda x: np.searchsorted(np.sort(x), grid, side="right") / len(x)  # noqa: E731
    assert drift_distance(a, b) == pytest.approx(np.abs(ecdf(a) - ecdf(b)).max(), abs=1e-12)
    assert drift_distance(a, a + 2.0, "wasserstein") == pytest.approx(2.0)
    assert drift_distance(a, b, "wasserstein") == pytest.approx(stats.wasserstein_distance(a, b))
    assert np.isnan(drift_distance(np.array([np.nan]), a))


def test_collection_gates_through_gx_write_validation_and_data_docs(tmp_path: Path) -> None:
    rows = [row(f"/c/{i}.png", 100.0 + 20 * i, 1 + i) for i in range(12)] + [row("/c/bad.png", error="TRUNCATED")]
    run = locate_run(str(write_run(tmp_path / "run", rows)))
    base = locate_run(str(write_run(tmp_path / "base", [row(f"/b/{i}.png", 5000.0 + i, 1) for i in range(12)])))
    spec = prepare(parse_gate_text(gate_text(RULES + COLLECTION), "c.yaml"), SCHEMA)
    apply_decisions(run, spec)
    report = validate_collection(run, spec, baseline=base.root)
    by = {c.name: c for c in report.checks}
    # 13 images: 1 unreadable + noise > 10 on 2 = 3 rejects (0.23 <= 0.25); 1 error (0.077 <= 0.1)
    assert by["reject_rate"].success is True and by["reject_rate"].observed == pytest.approx(3 / 13)
    assert by["error_rate"].success is True and by["error_rate"].severity == "warn"
    assert by["flag_rate"].success is True
    assert by["quantile_sharpness"].success is False and by["quantile_sharpness"].observed == 120.0
    assert by["mean_sharpness"].success is True and by["mean_sharpness"].observed == pytest.approx(210.0)
    assert by["values_between_noise"].success is False and by["values_between_noise"].observed == pytest.approx(10 / 12)
    assert by["drift_sharpness"].success is False and by["drift_sharpness"].observed == 1.0
    assert [c.name for c in report.failed] == ["quantile_sharpness", "values_between_noise", "drift_sharpness"]
    gates = Path(run.gates_dir)
    result = json.loads((gates / "validation.json").read_text())
    assert result["success"] is False and len(result["results"]) == 6
    index = (gates / "data_docs" / "index.html").read_text()
    assert "<html" in index.lower() and "t" in index
    pages = list((gates / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 1 and "sharpness" in pages[0].read_text() and "<html" in pages[0].read_text().lower()
    no_base = validate_collection(run, spec)
    drift = next(c for c in no_base.checks if c.type == "drift")
    assert drift.success is None and "no baseline" in drift.detail


# --- gate learning ----------------------------------------------------------------------------

def test_roc_auc_matches_mann_whitney() -> None:
    from scipy import stats

    from iqaflow.evaluation.roc import best, roc

    rng = np.random.default_rng(1)
    good, bad = rng.normal(200, 40, 60), rng.normal(120, 40, 25)
    scores = np.concatenate([good, bad])
    reject = np.array([False] * 60 + [True] * 25)
    curve = roc(scores, reject, higher_is_better=True)
    u = stats.mannwhitneyu(good, bad).statistic
    assert curve is not None and curve.auc == pytest.approx(u / (60 * 25), abs=1e-12)
    k = best(curve)
    caught = scores[reject] < curve.thresholds[k]
    assert curve.tpr[k] == pytest.approx(caught.mean())
    assert curve.precision[k] == pytest.approx(caught.sum() / (scores < curve.thresholds[k]).sum())
    flipped = roc(-scores, reject, higher_is_better=False)
    assert flipped is not None and flipped.auc == pytest.approx(curve.auc)
    assert roc(scores, np.zeros(85, bool), True) is None


def test_suggest_writes_a_loadable_gate_file(tmp_path: Path) -> None:
    from iqaflow.tasks.gates.suggest import suggest

    rows = [row(f"/data/c/img{i:02d}.png", 100.0 + 30 * i, 30.0 - i) for i in range(20)]
    run = locate_run(str(write_run(tmp_path / "run", rows, source="/data/c")))
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"img{i:02d}.png,{'reject' if i < 6 else 'accept'}\n"
                                               for i in range(0, 20, 2)))
    result = suggest(run, str(labels), target_recall=0.9)
    text = result.text
    spec = prepare(parse_gate_text(text, "suggested.yaml"), SCHEMA)
    kept = next(c for c in result.candidates if c.chosen)
    assert kept.auc == pytest.approx(1.0) and kept.fitted.recall == 1.0 and kept.fitted.precision == 1.0
    rule = spec.image_rules[1]
    assert rule.outcome == "reject" and len(spec.image_rules) == 2
    ok = gate_expr.evaluate(gate_expr.parse(rule.require), table(rows)).to_pylist()
    assert not any(ok[:5]) and all(ok[6:]), (rule.require, ok)  # img05 lies between the labelled classes
    assert "Target: recall of rejects >= 0.90" in text and "Held out (" in text
    with pytest.raises(ConfigError, match="both given"):
        suggest(run, str(labels), target_recall=0.8, target_precision=0.8)
    (tmp_path / "few.csv").write_text("path,label\nimg00.png,reject\n")
    with pytest.raises(ConfigError, match="expected at least 4"):
        suggest(run, str(tmp_path / "few.csv"))
    (tmp_path / "bad.csv").write_text("path,label\nimg00.png,maybe\n")
    with pytest.raises(ConfigError, match=r"bad.csv:2: label 'maybe'"):
        suggest(run, str(tmp_path / "bad.csv"))
