"""Deep scorers on CUDA: fp16 autocast scores stay within 1e-2 (relative to the output scale) of fp32 CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iqaflow.models import weights
from iqaflow.models.deep.default_nr import IqaflowNR
from iqaflow.models.deep.torch_scorer import TorchScorer
from iqaflow.models.deep.zoo import Dbcnn, Dists, HyperIqa, Kang, LpipsAlex, LpipsVgg
from iqaflow.models.weights import WeightsStore

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _images(colour: str, n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        h, w = (256, 256) if k % 2 else (192, 320)
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([np.sin(9 * x + c + k) * np.cos(6 * y - c) for c in range(3)], axis=-1) * 0.3 + 0.5
        img = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1).astype(np.float32)
        out.append(img.mean(axis=2).astype(np.float32) if colour == "gray" else img)
    return out


def _score(scorer: TorchScorer, imgs: list[np.ndarray]) -> np.ndarray:
    if scorer.info.kind == "fr":
        noisy = [np.clip(i + np.random.default_rng(1).normal(0, 0.1, i.shape), 0, 1).astype(np.float32) for i in imgs]
        return scorer.score_pairs(noisy, imgs)
    return scorer.score(imgs)


@pytest.mark.parametrize("cls", [LpipsAlex, LpipsVgg, Dists, Kang, Dbcnn, HyperIqa, IqaflowNR],
                         ids=lambda c: c.info.name)
def test_amp_on_cuda_matches_fp32_cpu(cls: type[TorchScorer], tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "_store", WeightsStore(str(tmp_path)))
    cls.make_test_weights(weights.get_store(), seed=0)
    imgs = _images(cls.info.colour)
    cpu, gpu = cls(), cls()
    cpu.setup("cpu")
    gpu.setup("cuda")
    cpu.cpu_bf16 = False  # the fp32 reference
    ref, got = _score(cpu, imgs), _score(gpu, imgs)
    assert got.shape == ref.shape and np.isfinite(got).all()
    scale = np.abs(ref).max()
    print(f"{cls.info.name}: max |amp - fp32| / max |fp32| = {np.abs(got - ref).max() / scale:.2e}")
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-2 * scale)
