"""Routing: dry run vs apply, idempotence, traversal refusal, verified moves, manifests, S3 copy/move/tags."""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from gatekit import gate_text, row, write_run

from iqaflow.errors import RoutingError
from iqaflow.models.gate_binding import prepare
from iqaflow.schemas.gates import RouteRule, parse_gate_text
from iqaflow.schemas.results import results_schema
from iqaflow.tasks.gates import route as route_mod
from iqaflow.tasks.gates.gate import apply_decisions, locate_run
from iqaflow.tasks.gates.route import Item, RouteContext, expand, registered_actions, relative_name, safe_join
from iqaflow.tasks.gates.router import route

RULES = """image_rules:
  - name: sharp
    require: sharpness >= 100
    outcome: reject
    reason: blurry
  - name: quiet
    require: noise <= 10
    outcome: flag
    reason: noisy
"""


def _collection(tmp_path: Path) -> tuple[Path, list[dict]]:
    src = tmp_path / "src"
    specs = {"a/good.png": (300, 1), "a/blurry.png": (20, 1), "b/noisy.png": (200, 30), "b/soft.jpg": (50, 2),
             "c/deep/good2.png": (500, 2)}
    rows = []
    for rel, (sharp, noise) in specs.items():
        data = hashlib.sha256(rel.encode()).digest() * 50
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
        rows.append(row(str(src / rel), sharp, noise, data=data))
    return src, rows


def _gated_run(tmp_path: Path, rows: list[dict], routing: str, source: str) -> tuple[object, object]:
    run = locate_run(str(write_run(tmp_path / "out" / "runs" / "r1", rows, source=source)))
    spec = prepare(parse_gate_text(gate_text(RULES + "routing:\n" + routing)), results_schema(["sharpness", "noise"]))
    apply_decisions(run, spec)
    return run, spec


def test_names_that_leave_the_destination_are_refused() -> None:
    assert relative_name("/data/in/a/b.png", "/data/in") == "a/b.png"
    assert relative_name("s3://bkt/in/x.png", "s3://bkt/in/") == "x.png"
    for uri in ["/data/in/../etc/passwd", "/data/in/a/../../x", "/data/in//abs.png", "/data/in/./a.png",
                "/data/in/a\\..\\b.png", "/data/in/a\x00.png", "/data/in/C:/x.png", "/data/out/x.png", "/data/in/"]:
        with pytest.raises(RoutingError):
            relative_name(uri, "/data/in")
    assert safe_join("/q", "a/b.png") == "/q/a/b.png" and safe_join("s3://b/q", "x.png") == "s3://b/q/x.png"
    with pytest.raises(RoutingError, match="outside"):
        safe_join("/q", "../x.png")
    assert expand("{run}/quarantine/", "/out/runs/r1") == "/out/runs/r1/quarantine"
    with pytest.raises(RoutingError, match="only the {run} placeholder"):
        expand("{home}/q", "/out")


def test_every_routing_action_is_registered_and_plans_nothing_for_no_images(tmp_path: Path) -> None:
    union = typing.get_args(typing.get_args(RouteRule)[0])
    names = {typing.get_args(m.model_fields["action"].annotation)[0] for m in union}
    assert names == set(registered_actions())
    ctx = RouteContext(str(tmp_path), str(tmp_path))
    for model in union:
        name = typing.get_args(model.model_fields["action"].annotation)[0]
        extra = {"tags": {"k": "v"}} if name == "tag" else {"to": str(tmp_path / "d"),
                                                             **({"name": "m"} if name == "manifest" else {})}
        rule = model(action=name, when=["reject"], **extra)
        steps = route_mod.get_action(name).plan(0, rule, [], ctx)
        assert steps == [] or (name == "manifest" and steps[0].state == "todo" and "0 URIs" in steps[0].note)


def test_dry_run_then_apply_then_rerun_is_idempotent(tmp_path: Path) -> None:
    src, rows = _collection(tmp_path)
    quarantine = tmp_path / "quarantine"
    routing = (f"  - action: move\n    when: [reject]\n    to: {quarantine}\n"
               "  - action: copy\n    when: [flag]\n    to: \"{run}/review\"\n"
               "  - action: manifest\n    when: [pass, flag]\n    to: \"{run}/manifests\"\n    name: accepted\n")
    run, spec = _gated_run(tmp_path, rows, routing, str(src))

    dry = route(run, spec, apply=False)
    assert not dry.applied and dry.counts == {"0:move": {"todo": 2}, "1:copy": {"todo": 1}, "2:manifest": {"todo": 1}}
    assert not quarantine.exists() and not (Path(run.root) / "review").exists()
    assert (src / "a/blurry.png").exists() and len(list(src.rglob("*.*"))) == 5
    plan = [json.loads(line) for line in Path(dry.plan_file).read_text().splitlines()]
    assert {p["dest"] for p in plan if p["action"] == "move"} == {str(quarantine / "a/blurry.png"),
                                                                  str(quarantine / "b/soft.jpg")}

    done = route(run, spec, apply=True)
    assert done.counts == {"0:move": {"done": 2}, "1:copy": {"done": 1}, "2:manifest": {"done": 1}}
    assert sorted(p.relative_to(quarantine).as_posix() for p in quarantine.rglob("*.*")) == ["a/blurry.png",
                                                                                             "b/soft.jpg"]
    assert not (src / "a/blurry.png").exists() and not (src / "b/soft.jpg").exists()  # moved
    assert (Path(run.root) / "review/b/noisy.png").read_bytes() == (src / "b/noisy.png").read_bytes()  # copied
    manifests = Path(run.root) / "manifests"
    listed = (manifests / "accepted.txt").read_text().split()
    assert sorted(listed) == sorted(str(src / p) for p in ("a/good.png", "b/noisy.png", "c/deep/good2.png"))
    table = pq.read_table(manifests / "accepted.parquet")
    assert sorted(table["uri"].to_pylist()) == sorted(listed) and set(table["gate_status"].to_pylist()) == {"pass",
                                                                                                          "flag"}
    before = {p: p.stat().st_mtime_ns for p in [*quarantine.rglob("*.*"), *manifests.iterdir()]}

    again = route(run, spec, apply=True)
    assert again.counts == {"0:move": {"skip": 2}, "1:copy": {"skip": 1}, "2:manifest": {"skip": 1}}
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing written twice


def test_traversal_in_results_is_refused_and_nothing_written(tmp_path: Path) -> None:
    src, rows = _collection(tmp_path)
    evil = tmp_path / "outside.png"
    evil.write_bytes(b"secret")
    rows.append(row(f"{src}/a/../../outside.png", 1, 1, data=b"secret"))
    run, spec = _gated_run(tmp_path, rows, f"  - action: copy\n    when: [reject]\n    to: {tmp_path / 'q'}\n",
                           str(src))
    report = route(run, spec, apply=True)
    assert report.counts == {"0:copy": {"done": 2, "refused": 1}}
    refused = [s for s in report.sample if s.state == "refused"]
    assert "path traversal" in refused[0].note and refused[0].dest is None
    assert not (tmp_path / "outside.png.copy").exists() and sorted(
        p.name for p in (tmp_path / "q").rglob("*.*")) == ["blurry.png", "soft.jpg"]


def test_move_keeps_the_source_when_the_copy_does_not_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, rows = _collection(tmp_path)
    routing = f"  - action: move\n    when: [reject]\n    to: {tmp_path / 'q'}\n"
    run, spec = _gated_run(tmp_path, rows, routing, str(src))
    real_write = route_mod.atomic_write
    monkeypatch.setattr(route_mod, "atomic_write", lambda fs, path, data: real_write(fs, path, data[:-1] + b"X"))
    report = route(run, spec, apply=True)
    assert report.counts == {"0:move": {"error": 2}}
    assert all("could not be verified; source kept" in s.note for s in report.sample)
    assert (src / "a/blurry.png").exists() and (src / "b/soft.jpg").exists()
    monkeypatch.undo()
    # the corrupt copies are now "different content": refused, never overwritten, sources still kept
    assert route(run, spec, apply=True).counts == {"0:move": {"refused": 2}}
    assert (src / "a/blurry.png").exists()


def test_changed_source_and_local_tags_are_not_routed(tmp_path: Path) -> None:
    src, rows = _collection(tmp_path)
    routing = (f"  - action: copy\n    when: [reject]\n    to: {tmp_path / 'q'}\n"
               "  - action: tag\n    when: [reject]\n    tags: {qa: \"{status}\"}\n")
    run, spec = _gated_run(tmp_path, rows, routing, str(src))
    (src / "a/blurry.png").write_bytes(b"edited after scoring")
    report = route(run, spec, apply=True)
    assert report.counts == {"0:copy": {"error": 1, "done": 1}, "1:tag": {"refused": 2}}
    error = next(s for s in report.sample if s.state == "error")
    assert "changed since it was scored" in error.note and not (tmp_path / "q/a/blurry.png").exists()
    assert all("need S3" in s.note for s in report.sample if s.action == "tag")


def test_tag_values_are_sanitised() -> None:
    from iqaflow.schemas.gates import TagRoute

    rule = TagRoute(action="tag", when=["reject"], tags={"qa": "{status}", "why": "{reasons}!", "team": "x"})
    item = Item("s3://b/k", "id", None, "reject", ("blurry", "noisy:missing"))
    assert route_mod.TagAction.tags_for(rule, item) == {"qa": "reject", "why": "blurry+noisy:missing_", "team": "x"}


@pytest.mark.slow
def test_s3_copy_move_and_tags(s3_server: str, tmp_path: Path) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="intake")
    rows = []
    for rel, sharp, noise in [("in/a/ok.png", 300, 1), ("in/a/blur.png", 10, 1), ("in/b/noisy.png", 200, 40),
                              ("in/b/blur2.png", 5, 1)]:
        data = rel.encode() * 100
        s3.put_object(Bucket="intake", Key=rel, Body=data)
        rows.append(row(f"s3://intake/{rel}", sharp, noise, data=data))
    routing = ("  - action: tag\n    when: [reject, flag]\n    tags: {qa: \"{status}\", why: \"{reasons}\"}\n"
               "  - action: copy\n    when: [reject]\n    to: s3://intake/quarantine\n"
               "  - action: move\n    when: [flag]\n    to: s3://intake/review/\n")
    run, spec = _gated_run(tmp_path, rows, routing, "s3://intake/in")

    def keys() -> set[str]:
        return {o["Key"] for o in s3.list_objects_v2(Bucket="intake").get("Contents", [])}

    before = keys()
    dry = route(run, spec, apply=False)
    assert dry.counts == {"0:tag": {"todo": 3}, "1:copy": {"todo": 2}, "2:move": {"todo": 1}} and keys() == before
    done = route(run, spec, apply=True)
    assert done.counts == {"0:tag": {"done": 3}, "1:copy": {"done": 2}, "2:move": {"done": 1}}
    assert keys() == {"in/a/ok.png", "in/a/blur.png", "in/b/blur2.png", "quarantine/a/blur.png",
                      "quarantine/b/blur2.png", "review/b/noisy.png"}
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket="intake", Key="in/a/blur.png")["TagSet"]}
    assert tags == {"qa": "reject", "why": "blurry"}
    body = s3.get_object(Bucket="intake", Key="quarantine/a/blur.png")["Body"].read()
    assert body == b"in/a/blur.png" * 100
    moved = s3.get_object(Bucket="intake", Key="review/b/noisy.png")["Body"].read()
    assert moved == b"in/b/noisy.png" * 100
    again = route(run, spec, apply=True)
    assert again.counts == {"0:tag": {"skip": 3}, "1:copy": {"skip": 2}, "2:move": {"skip": 1}}
    assert "no longer exists" in next(s.note for s in again.sample if s.uri.endswith("noisy.png"))  # moved


@pytest.mark.slow
def test_gate_pass_on_results_in_s3(s3_server: str, tmp_path: Path) -> None:
    """Decisions, GX validation and data docs read and write an S3 run folder."""
    import boto3
    import s3fs

    from iqaflow.tasks.gates.gate import validate_collection

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="qa-out")
    local = write_run(tmp_path / "r", [row(f"s3://in/{i}.png", 50.0 * i, 1) for i in range(6)], source="s3://in")
    fs = s3fs.S3FileSystem()
    fs.put(str(local) + "/", "qa-out/runs/r1/", recursive=True)
    run = locate_run("s3://qa-out/runs/r1")
    assert run.results_dir == "s3://qa-out/runs/r1/results"
    spec = prepare(parse_gate_text(gate_text(RULES + "collection:\n  gates:\n    - type: reject_rate\n"
                                             "      max: 0.5\n")), results_schema(["sharpness", "noise"]))
    assert apply_decisions(run, spec).counts == {"pass": 4, "flag": 0, "reject": 2}
    report = validate_collection(run, spec)
    assert report.checks[0].success is True and report.data_docs == "s3://qa-out/runs/r1/gates/data_docs/index.html"
    fs.invalidate_cache()
    assert b"<html" in fs.cat("qa-out/runs/r1/gates/data_docs/index.html").lower()
    assert json.loads(fs.cat("qa-out/runs/r1/gates/validation.json"))["success"] is True
    statuses = pq.read_table("qa-out/runs/r1/results", filesystem=fs)["gate_status"].to_pylist()
    assert sorted(statuses) == ["pass"] * 4 + ["reject"] * 2
