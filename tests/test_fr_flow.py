"""The FR path end to end: reference pairing in discover, config checks, and the real flow on Dask.

Expected PSNR/SSIM come from scikit-image on the files as decoded from disk (PIL), so the flow's
decode, pairing and batching are all inside the comparison. Tolerances as in test_classical_fr:
PSNR 1e-3 dB after piq's 1e-8 MSE offset; SSIM 1e-4 (float32; 192 px images are not downsampled).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from iqaflow.config.run import build_config
from iqaflow.errors import ConfigError
from iqaflow.evaluation import synth
from iqaflow.models.classical.matlab_compat import gray255
from iqaflow.schemas.results import Col, ErrorCode, Status
from iqaflow.tasks.io.discover import write_manifest

EXTS = [".png", ".jpg", ".tif"]


def _save(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@pytest.fixture(scope="module")
def fr_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """images/ and refs/ with: exact-path pairs (PNG), a stem match (JPEG image, TIFF reference),
    an image without reference, a reference of another size, and refs/ nested inside the source too."""
    root = tmp_path_factory.mktemp("fr")
    crops = synth.random_crops(synth.skimage_images(), 6, 192, seed=2)
    for i, (name, ref) in enumerate(crops[:4]):
        sub = "a" if i < 2 else "b/c"
        _save(root / "refs" / sub / f"{name}.png", ref)
        dist = synth.blur(ref, 1.0 + i) if i % 2 else synth.noise(ref, 6.0 + 6 * i, seed=i)
        _save(root / "images" / sub / f"{name}.png", dist)
    name, ref = crops[4]
    _save(root / "refs" / "a" / f"{name}.tif", ref)
    (root / "images" / "a" / f"{name}.jpg").write_bytes(synth.jpeg_bytes(ref, 30))
    _save(root / "images" / "a" / "orphan.png", crops[5][1])
    _save(root / "images" / "b" / "small.png", crops[5][1][:100, :120])
    _save(root / "refs" / "b" / "small.png", crops[5][1])
    return root


def _manifest(tmp_path: Path, source: Path, reference_root: Path | None, need: bool = True) -> dict[str, list]:
    out = tmp_path / "m.parquet"
    write_manifest(str(source), str(out), 100, EXTS, True, reference_root=str(reference_root) if reference_root
                   else None, need_references=need)
    return pq.read_table(out).to_pydict()


def test_discover_pairs_by_relative_path_then_stem(fr_collection: Path, tmp_path: Path) -> None:
    m = _manifest(tmp_path, fr_collection / "images", fr_collection / "refs")
    pairs = {Path(u).relative_to(fr_collection / "images").as_posix(): r for u, r in
             zip(m[Col.URI], m[Col.REFERENCE_URI], strict=True)}
    assert len(pairs) == 7
    for rel, ref in pairs.items():
        if rel.endswith("orphan.png"):
            assert ref is None
        elif rel.endswith(".jpg"):
            assert ref == str(fr_collection / "refs" / rel).removesuffix(".jpg") + ".tif"  # stem fallback
        else:
            assert ref == str(fr_collection / "refs" / rel)


def test_reference_folder_inside_the_source_is_not_scored(fr_collection: Path, tmp_path: Path) -> None:
    m = _manifest(tmp_path, fr_collection, fr_collection / "refs")
    assert not any("/refs/" in u for u in m[Col.URI]) and len(m[Col.URI]) == 7
    # paths relative to the source now start with images/, which refs/ does not have
    assert all(r is None for r in m[Col.REFERENCE_URI])


def test_manifest_references_relative_to_reference_root(fr_collection: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "list.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([Col.URI, Col.REFERENCE_URI])
        w.writerow([str(fr_collection / "images/a/orphan.png"), "a/x.png"])
        w.writerow([str(fr_collection / "images/b/small.png"), str(fr_collection / "refs/b/small.png")])
        w.writerow([str(fr_collection / "images/a/orphan.png"), ""])
    m = _manifest(tmp_path, csv_path, fr_collection / "refs")
    assert m[Col.REFERENCE_URI][:2] == [f"{fr_collection / 'refs'}/a/x.png", str(fr_collection / "refs/b/small.png")]
    assert m[Col.REFERENCE_URI][2] is None  # an empty CSV cell means no reference


def test_manifest_without_reference_column_is_a_config_error(fr_collection: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(f"{Col.URI}\n{fr_collection / 'images/a/orphan.png'}\n")
    with pytest.raises(ConfigError, match=r"no 'reference_uri' column.*Fix: add a 'reference_uri' column"):
        _manifest(tmp_path, csv_path, None)
    assert len(_manifest(tmp_path, csv_path, None, need=False)[Col.URI]) == 1  # NR-only runs do not care


def test_fr_models_without_reference_root_fail_at_the_entry_point(fr_collection: Path) -> None:
    with pytest.raises(ConfigError, match=r"models psnr, ssim are full-reference.*reference_root is not set.*Fix"):
        build_config({"source": str(fr_collection / "images"), "models": ["psnr", "ssim", "sharpness"]})
    build_config({"source": str(fr_collection / "list.csv"), "models": ["psnr"]})  # checked after discover


def test_cli_flag_reaches_the_config(fr_collection: Path) -> None:
    from typer.testing import CliRunner

    from iqaflow.cli import app

    result = CliRunner().invoke(app, ["score", str(fr_collection / "images"), "--models", "psnr"])
    assert isinstance(result.exception, ConfigError) and "--reference-root" in str(result.exception)
    assert "--reference-root" in CliRunner().invoke(app, ["score", "--help"]).output


def test_fingerprint_includes_reference_root_only_when_set(fr_collection: Path) -> None:
    base = {"source": str(fr_collection / "images"), "models": ["sharpness"]}
    plain = build_config(base).fingerprint()
    with_refs = build_config({**base, "reference_root": str(fr_collection / "refs")}).fingerprint()
    other = build_config({**base, "reference_root": str(fr_collection)}).fingerprint()
    assert len({plain, with_refs, other}) == 3


def _load(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255


@pytest.mark.slow
def test_flow_scores_pairs_like_skimage(prefect_api: None, fr_collection: Path, tmp_path: Path) -> None:
    from iqaflow.flows.score import run_score

    cfg = build_config({
        "source": str(fr_collection / "images"), "reference_root": str(fr_collection / "refs"),
        "out": str(tmp_path / "out"), "models": ["psnr", "ssim", "sharpness"], "workers": 1, "shard_size": 4,
        "batch_size": 3,
    })
    summary = run_score(cfg)
    rows = {Path(r[Col.URI]).name: r for r in pq.read_table(summary.results_dir).to_pylist()}
    assert len(rows) == 7 and summary.shards == 2
    assert all(r["sharpness"] is not None for r in rows.values())  # NR scores survive FR failures

    orphan, small = rows.pop("orphan.png"), rows.pop("small.png")
    assert orphan[Col.ERROR_CODE] == ErrorCode.REFERENCE_MISSING.value and orphan[Col.STATUS] == Status.ERROR.value
    assert small[Col.ERROR_CODE] == ErrorCode.SIZE_MISMATCH.value and "120x100" in small[Col.ERROR_MESSAGE]
    for r in (orphan, small):
        assert r["psnr"] is None and r["ssim"] is None
    assert summary.errors_by_code == {ErrorCode.REFERENCE_MISSING.value: 1, ErrorCode.SIZE_MISMATCH.value: 1}

    assert len(rows) == 5
    for r in rows.values():
        assert r[Col.STATUS] == Status.OK.value
        img, ref = _load(r[Col.URI]), _load(r[Col.REFERENCE_URI])
        sk_psnr = peak_signal_noise_ratio(ref, img, data_range=1.0)
        assert r["psnr"] == pytest.approx(-10 * np.log10(10 ** (-sk_psnr / 10) + 1e-8), abs=1e-3)
        # ssim is Wang's ssim.m: luminance as MATLAB's rgb2gray of the 8-bit image, 0-255, full resolution.
        sk_ssim = structural_similarity(gray255(ref), gray255(img), gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=255)
        assert r["ssim"] == pytest.approx(sk_ssim, abs=1e-4)


@pytest.mark.slow
def test_flow_fails_fast_on_a_manifest_without_references(prefect_api: None, fr_collection: Path,
                                                          tmp_path: Path) -> None:
    """The manifest case is only known after discover: a ConfigError, not retried, not a shard failure."""
    from iqaflow.flows.score import run_score

    csv_path = tmp_path / "list.csv"
    csv_path.write_text(f"{Col.URI}\n{fr_collection / 'images/a/orphan.png'}\n")
    cfg = build_config({"source": str(csv_path), "out": str(tmp_path / "out"), "models": ["psnr"], "workers": 1})
    with pytest.raises(ConfigError, match="no 'reference_uri' column"):
        run_score(cfg)
