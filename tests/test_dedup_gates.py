"""Gates and routing on the collection pass's columns: bare true/false conditions, rules deferred from the
shard task to the final pass, reasons that name the kept image, and routing that moves only the duplicates."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gatekit import OUTPUTS, gate_text, row, table

from iqaflow.errors import ConfigError
from iqaflow.models.gate_binding import prepare
from iqaflow.schemas import gate_expr
from iqaflow.schemas.gates import COLLECTION_KINDS, bind, parse_gate_text
from iqaflow.schemas.results import COLLECTION_FIELDS, Col, results_schema
from iqaflow.tasks.gates import decide
from iqaflow.tasks.gates.gate import apply_decisions, locate_run, results_schema_of
from iqaflow.tasks.gates.router import route

SHARD_SCHEMA = results_schema(OUTPUTS)  # what the shard task writes: no collection columns yet
DUP_RULES = """image_rules:
  - name: sharp
    require: sharpness >= 100
    outcome: reject
    reason: blurry
  - name: unique
    require: not is_duplicate
    outcome: reject
    reason: "duplicate_of:{duplicate_of}"
  - name: usual_size
    require: not size_outlier
    outcome: flag
    reason: size_outlier
    on_null: pass
"""


def with_collection(rows: list[dict[str, Any]]) -> pa.Table:
    """Results rows with the collection pass's columns filled in by hand (as the pass writes them)."""
    out = table(rows)
    for f in COLLECTION_FIELDS:
        out = out.append_column(f, pa.array([r.get(f.name) for r in rows], f.type))
    return out


def dup(uri: str, sharpness: float, group: int | None = None, of: str | None = None, distance: int | None = None,
        outlier: bool = False, data: bytes | None = None) -> dict[str, Any]:
    """A row; ``of`` is the kept image's URI (its image_id is derived the way gatekit.row derives ids)."""
    kept_id = hashlib.blake2b(of.encode(), digest_size=8).hexdigest() if of else None
    return row(uri, sharpness, 1, data=data, **{
        Col.DUP_GROUP: group, Col.DUPLICATE_OF: kept_id, Col.DUP_DISTANCE: distance,
        Col.IS_DUPLICATE: of is not None, Col.ASPECT_RATIO: 4.0 if outlier else 1.33,
        Col.MEGAPIXELS: 0.012, Col.SIZE_OUTLIER: outlier})


def image_id(uri: str) -> str:
    return hashlib.blake2b(uri.encode(), digest_size=8).hexdigest()


# --- grammar: a true/false column on its own ---------------------------------------------------------

def test_bare_boolean_columns_keep_three_valued_logic() -> None:
    rows = [dup("/c/kept.png", 300, 1), dup("/c/copy.png", 300, 1, "/c/kept.png", 0),
            dup("/c/near.png", 300, 1, "/c/kept.png", 9), dup("/c/odd.png", 300, outlier=True),
            dup("/c/unhashed.png", 300)]
    t = with_collection(rows)
    t = t.set_column(t.schema.get_field_index(Col.IS_DUPLICATE), Col.IS_DUPLICATE,
                     pa.array([False, True, True, False, None]))
    kinds = {f.name: gate_expr.value_kind(f.type) for f in t.schema}

    def ev(expr: str) -> list[bool | None]:
        node = gate_expr.parse(expr)
        gate_expr.check(node, kinds)
        return gate_expr.evaluate(node, t).to_pylist()

    assert ev("is_duplicate") == [False, True, True, False, None]
    assert ev("not is_duplicate") == [True, False, False, True, None]  # not unknown is unknown
    assert ev("size_outlier") == [False, False, False, True, False]
    assert ev("is_duplicate and dup_distance <= 4") == [False, True, False, False, None]
    assert ev("(is_duplicate) or size_outlier") == [False, True, True, True, None]
    assert ev("is_duplicate or sharpness > 100") == [True, True, True, True, True]  # Kleene: unknown or true
    assert str(gate_expr.parse("not is_duplicate")) == "not (is_duplicate)"
    assert gate_expr.columns(gate_expr.parse("is_duplicate and dup_distance <= 4")) == ["is_duplicate",
                                                                                          "dup_distance"]


# --- binding: collection columns are known, deferred from the shard, and a clear error without them -----

def test_rules_on_collection_columns_are_deferred_from_the_shard_task() -> None:
    spec = parse_gate_text(gate_text(DUP_RULES + "  - name: near\n    require: dup_distance <= 4 or not is_duplicate"
                                     "\n    outcome: flag\n"))
    bound = prepare(spec, SHARD_SCHEMA, collection=True)
    assert bound.deferred == ["unique", "usual_size", "near"] and [r.name for r in bound.shard_rules()] == ["sharp"]
    # the shard decides only what it can: the blurry image is rejected, nothing reads a missing column
    shard = table([row("/c/a.png", 300, 1), row("/c/b.png", 20, 1)])
    gated = decide.apply_image_gates(shard, bound)
    assert gated[Col.GATE_STATUS].to_pylist() == ["pass", "reject"]
    assert gated[Col.GATE_REASONS].to_pylist() == [[], ["blurry"]]
    # a finished run's schema has the columns: nothing is deferred there
    final = prepare(spec, pa.schema([*SHARD_SCHEMA, *COLLECTION_FIELDS]))
    assert final.deferred == [] and len(final.shard_rules()) == 4
    assert set(COLLECTION_KINDS) == {f.name for f in COLLECTION_FIELDS}


def test_collection_columns_are_type_checked_before_they_exist() -> None:
    bad = parse_gate_text(gate_text("image_rules:\n  - name: d\n    require: dup_distance <= 'near'\n"
                                    "    outcome: flag\n"), "g.yaml")
    with pytest.raises(ConfigError, match=r"g.yaml:5:14: rule 'd' .*compares a number with a string"):
        prepare(bad, SHARD_SCHEMA, collection=True)
    bare = parse_gate_text(gate_text("image_rules:\n  - name: d\n    require: dup_distance\n    outcome: flag\n"))
    with pytest.raises(ConfigError, match="'dup_distance' holds number values; only a true/false column"):
        prepare(bare, SHARD_SCHEMA, collection=True)


def test_a_run_without_the_collection_pass_says_which_column_and_how_to_fix() -> None:
    spec = parse_gate_text(gate_text(DUP_RULES), "g.yaml")
    with pytest.raises(ConfigError, match=r"g.yaml:9:18: rule 'unique' require 'not is_duplicate': unknown column "
                                          r"'is_duplicate'.*comes from the collection pass .*`duplicates: true`"):
        prepare(spec, SHARD_SCHEMA)
    optional = parse_gate_text(gate_text("image_rules:\n  - name: u\n    require: not is_duplicate\n"
                                         "    outcome: reject\n    optional: true\n"))
    assert prepare(optional, SHARD_SCHEMA).skipped == ["image rule 'u': no column is_duplicate"]


def test_a_deferred_spec_refuses_a_final_pass_over_results_without_the_columns(tmp_path: Path) -> None:
    from gatekit import write_run

    run = locate_run(str(write_run(tmp_path / "run", [row("/c/a.png", 300, 1)])))
    bound = prepare(parse_gate_text(gate_text(DUP_RULES), "g.yaml"), SHARD_SCHEMA, collection=True)
    with pytest.raises(ConfigError, match=r"rule 'unique' reads 'is_duplicate', which the results in .* do not "
                                          r"have. Fix: .*collection pass"):
        apply_decisions(run, bound)


# --- reasons with {column} placeholders -------------------------------------------------------------

def test_reason_placeholders_are_checked_at_bind_time() -> None:
    typo = parse_gate_text(gate_text("image_rules:\n  - name: u\n    require: not is_duplicate\n    outcome: reject"
                                     "\n    reason: \"duplicate_of:{duplicat_of}\"\n"), "g.yaml")
    with pytest.raises(ConfigError, match=r"g.yaml:7:14: rule 'u' reason 'duplicate_of:\{duplicat_of\}': unknown "
                                          r"column 'duplicat_of' in a \{placeholder\}; did you mean 'duplicate_of'"):
        prepare(typo, SHARD_SCHEMA, collection=True)
    for reason, msg in [("dup of {x}", "expected up to 64 letters"), ("dup:{x y}", "placeholders are column names"),
                        ("dup:{{x}}", "placeholders are column names"), ("dup:{x", "placeholders are column names")]:
        text = gate_text(f"image_rules:\n  - name: u\n    require: noise < 3\n    outcome: flag\n"
                         f"    reason: \"{reason}\"\n")
        with pytest.raises(ConfigError, match=rf"g.yaml:7: image_rules.0.reason: .*{msg}"):
            parse_gate_text(text, "g.yaml")


def test_reasons_name_the_kept_image_and_count_by_rule() -> None:
    rows = [dup("/c/kept.png", 300, 1), dup("/c/copy.png", 300, 1, "/c/kept.png", 0),
            dup("/c/near.png", 50, 1, "/c/kept.png", 3), dup("/c/solo.png", 300)]
    t = with_collection(rows)
    t = t.set_column(t.schema.get_field_index(Col.IS_DUPLICATE), Col.IS_DUPLICATE,
                     pa.array([False, True, True, None]))
    spec = bind(parse_gate_text(gate_text(DUP_RULES)), t.schema)
    d = decide.decide(t, spec)
    kept = image_id("/c/kept.png")
    assert d.status().to_pylist() == ["pass", "reject", "reject", "reject"]
    assert d.reasons().to_pylist() == [[], [f"duplicate_of:{kept}"], ["blurry", f"duplicate_of:{kept}"],
                                       ["duplicate_of:missing"]]  # unknown: the reason's fixed part + :missing
    assert d.reason_counts() == {"blurry": 1, "duplicate_of": 2, "duplicate_of:missing": 1}
    rule = spec.image_rules[1]
    assert rule.reason_columns == ["duplicate_of"] and rule.used_columns() == ["is_duplicate", "duplicate_of"]
    assert rule.render_reason({}) == "duplicate_of:null"
    many = rule.model_copy(update={"reason": "d{dup_distance}:{is_duplicate}:{aspect_ratio}"})
    assert many.render_reason({"dup_distance": 3, "is_duplicate": True, "aspect_ratio": 1.5}) == "d3:true:1.5"
    assert many.reason_key == "d"


# --- a real run folder: final pass, then routing that moves only the duplicates ---------------------

def _dup_run(tmp_path: Path) -> tuple[Path, Path]:
    """Two duplicate groups, a blurry singleton and a size outlier, as image files and two results shards."""
    src = tmp_path / "src"
    layout = {  # rel: (sharpness, kept image rel or None, group, distance, outlier)
        "a/orig.png": (300, None, 1, None, False), "a/copy.png": (300, "a/orig.png", 1, 0, False),
        "b/resized.jpg": (250, "a/orig.png", 1, 3, False), "c/x.png": (400, None, 2, None, False),
        "c/x_small.png": (380, "c/x.png", 2, 5, False), "d/solo.png": (200, None, None, None, False),
        "d/blurry.png": (20, None, None, None, False), "d/wide.png": (260, None, None, None, True),
    }
    rows = []
    for rel, (sharp, of, group, distance, outlier) in layout.items():
        data = hashlib.sha256(rel.encode()).digest() * 40
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
        rows.append(dup(str(src / rel), sharp, group, str(src / of) if of else None, distance, outlier, data))
    root = tmp_path / "out" / "runs" / "r1"
    (root / "results").mkdir(parents=True)
    for i, chunk in enumerate((rows[:4], rows[4:])):  # a group spans both shards
        pq.write_table(with_collection(chunk), root / "results" / f"part-{i:04d}.parquet")
    (root / "config.json").write_text(json.dumps({"source": str(src)}))
    return src, root


def test_routing_moves_only_the_duplicates_that_were_not_kept(tmp_path: Path) -> None:
    src, root = _dup_run(tmp_path)
    routing = ("routing:\n  - action: move\n    when: [reject]\n    reasons: [duplicate_of]\n"
               "    to: \"{run}/duplicates\"\n"
               "  - action: manifest\n    when: [reject]\n    to: \"{run}/manifests\"\n    name: rejected\n")
    run = locate_run(str(root))
    spec = prepare(parse_gate_text(gate_text(DUP_RULES + routing)), results_schema_of(run))
    summary = apply_decisions(run, spec)
    assert summary.counts == {"pass": 3, "flag": 1, "reject": 4} and summary.rewritten == 2
    assert summary.reasons == {"blurry": 1, "duplicate_of": 3, "size_outlier": 1}
    moved = {"a/copy.png", "b/resized.jpg", "c/x_small.png"}
    before = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.*"))

    dry = route(run, spec, apply=False)
    assert not dry.applied and dry.counts == {"0:move": {"todo": 3}, "1:manifest": {"todo": 1}}
    assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*.*")) == before  # a dry run moves nothing
    assert not (root / "duplicates").exists() and not (root / "manifests").exists()

    done = route(run, spec, apply=True)
    assert done.counts == {"0:move": {"done": 3}, "1:manifest": {"done": 1}}
    dest = root / "duplicates"
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*.*")} == moved
    assert {p.relative_to(src).as_posix() for p in src.rglob("*.*")} == set(before) - moved
    assert (src / "a/orig.png").exists() and (src / "c/x.png").exists()  # kept images stay
    assert (src / "d/blurry.png").exists()  # rejected, but not a duplicate: not this rule's
    kept = {"a/copy.png": "a/orig.png", "b/resized.jpg": "a/orig.png", "c/x_small.png": "c/x.png"}
    plan = [json.loads(line) for line in Path(done.plan_file).read_text().splitlines()]
    for step in (p for p in plan if p["action"] == "move"):
        rel = Path(step["uri"]).relative_to(src).as_posix()
        assert step["reasons"] == [f"duplicate_of:{image_id(str(src / kept[rel]))}"]
    manifest = pq.read_table(root / "manifests" / "rejected.parquet").to_pydict()
    by_uri = dict(zip(manifest[Col.URI], manifest[Col.GATE_REASONS], strict=True))
    assert by_uri[str(src / "b/resized.jpg")] == [f"duplicate_of:{image_id(str(src / 'a/orig.png'))}"]
    assert by_uri[str(src / "d/blurry.png")] == ["blurry"]
    assert route(run, spec, apply=True).counts == {"0:move": {"skip": 3}, "1:manifest": {"skip": 1}}
