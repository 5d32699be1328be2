"""Kang's CNN on the published CNNIQA-LIVE weights gives the reference code's scores.

The weights file has no licence, so it is not shipped: the test adds it from ../shared/official with
`iqaflow weights add`, as a user would, and compares with the official demo's outputs
(../shared/official/cnniqa/official_outputs.csv, computed by lidq92/CNNIQA's own procedure).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqaflow.models.colour import convert
from iqaflow.models.deep.zoo import KANG_WEIGHTS
from iqaflow.models.registry import create_scorer
from iqaflow.models.weights import configure_store

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "official"
CNNIQA = OFFICIAL / "cnniqa"
# The reference prints 6 decimals; the issue asks for 1e-4. Measured: 9e-6 at most.
TOLERANCE = 1e-4

pytestmark = pytest.mark.skipif(not (CNNIQA / KANG_WEIGHTS).is_file(), reason="official CNNIQA files absent")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "iqaflow", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kang-weights")
    res = _cli("weights", "add", str(CNNIQA / KANG_WEIGHTS), "--weights", str(root))
    assert res.returncode == 0, res.stderr
    yield root
    configure_store(None)


def test_models_says_kang_is_ready_once_the_file_is_added(store: Path, tmp_path: Path) -> None:
    def kang_row(weights: Path) -> list[str]:
        res = _cli("models", "--weights", str(weights))
        assert res.returncode == 0, res.stderr
        return next(line.split() for line in res.stdout.splitlines() if line.startswith("kang "))

    assert kang_row(tmp_path)[3:] == ["missing:", KANG_WEIGHTS]
    assert kang_row(store)[3:] == ["yes"]
    detail = _cli("models", "kang", "--weights", str(tmp_path)).stdout
    assert f"{KANG_WEIGHTS}: missing — add the CNNIQA-LIVE file published with" in " ".join(detail.split())


def test_scores_equal_the_official_demo(store: Path) -> None:
    configure_store(str(store))
    scorer = create_scorer("kang")
    scorer.setup("cpu")
    with open(CNNIQA / "official_outputs.csv") as fh:
        rows = list(csv.DictReader(fh))
    images = [convert(np.asarray(Image.open(OFFICIAL / r["image"]).convert("RGB")), "rgb") for r in rows]
    expected = np.array([float(r["cnniqa_live_official"]) for r in rows])
    # One batch of all eleven and each alone: the same numbers either way.
    together = scorer.score(images)[:, 0]
    np.testing.assert_allclose(together, expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(scorer.score(images[:1])[:, 0], together[:1], rtol=0, atol=1e-6)
    # The reference reads 165 tiles of a 512x384 image: range(0, h - 32, 32) x range(0, w - 32, 32).
    import torch

    x = torch.from_numpy(images[1]).permute(2, 0, 1)[None]
    assert [int(r["patches"]) for r in rows][1] == scorer.prepare(x).shape[0] == 165
