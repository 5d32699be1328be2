"""Golden values for the classical FR scorers: the authors' published values, scikit-image, known values.

``ssim``, ``ms_ssim``, ``gmsd`` and ``vif`` are held to the values of their authors' MATLAB code on
five TID2013 pairs (``/work/shared/official/tid2013-calibra``; skipped where absent), and the CUDA
(torch) path to the CPU path. The skimage reference is Wang et al.'s SSIM: ``gaussian_weights=True,
sigma=1.5, use_sample_covariance=False``: the official ``ssim`` is exactly that on ``rgb2gray``
luminance with data_range 255; piq's ``ssim_rgb`` is that averaged over RGB once two differences are
taken out: piq's ``downsample`` (average pooling by round(short side / 256), as in Wang's ssim.m) and
piq's float32 arithmetic. PSNR differs from skimage only by piq's 1e-8 added to the MSE, which caps
identical images at 80 dB.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from iqaflow.evaluation import synth
from iqaflow.models.classical import fast_fr as fr_fast
from iqaflow.models.classical import fr, official_fr, vif_wavelet
from iqaflow.models.registry import all_scorers, create_scorer

FR_NAMES = ("psnr", "ssim", "ssim_rgb", "ms_ssim", "ms_ssim_rgb", "gmsd", "vif", "vifp", "fsim", "vsi", "haarpsi",
            "ssim_worst")
WANG = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 1.0}


def _unit(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / np.float32(255)


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


@pytest.fixture(scope="module")
def sources() -> dict[str, np.ndarray]:
    return synth.skimage_images()


@pytest.fixture(scope="module")
def crops(sources: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Three 192x192 uint8 RGB crops from different sources (MS-SSIM needs >= 161 px)."""
    return [img for _, img in synth.random_crops(sources, 3, 192, seed=1)]


@pytest.fixture(scope="module")
def pairs(crops: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(distorted, reference) float32 pairs over blur, noise and JPEG at moderate levels."""
    out = []
    for i, ref in enumerate(crops):
        for dist in (synth.blur(ref, 1.5), synth.noise(ref, 12.0, seed=i), synth.jpeg(ref, 20)):
            out.append((_unit(dist), _unit(ref)))
    return out


def test_registered_metadata() -> None:
    scorers = all_scorers()
    for name in FR_NAMES:
        info = scorers[name].info
        assert info.kind == "fr" and info.name == name
        assert info.colour == ("gray" if name == "ssim_worst" else "rgb")
        assert info.higher_is_better is (name != "gmsd")
    assert scorers["ssim_worst"].info.outputs == (
        "ssim_worst", "ssim_worst_x0", "ssim_worst_y0", "ssim_worst_x1", "ssim_worst_y1"
    )


def test_psnr_matches_skimage(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Tolerance 1e-3 dB after adding piq's 1e-8 to skimage's MSE; float32 MSE accounts for the rest."""
    got = create_scorer("psnr").score_pairs([d for d, _ in pairs], [r for _, r in pairs])[:, 0]
    for value, (d, r) in zip(got, pairs, strict=True):
        sk = peak_signal_noise_ratio(r.astype(np.float64), d.astype(np.float64), data_range=1.0)
        assert 15 < sk < 45
        expected = -10 * np.log10(10 ** (-sk / 10) + 1e-8)
        assert value == pytest.approx(expected, abs=1e-3)
        assert value == pytest.approx(sk, abs=5e-3)  # the eps shifts < 0.005 dB below 45 dB


def test_ssim_maths_equals_skimage_exactly(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Without downsampling and in float64 piq's RGB SSIM is skimage's SSIM to 1e-10."""
    for d, r in pairs:
        d64, r64 = d.astype(np.float64), r.astype(np.float64)
        sk = structural_similarity(r64, d64, channel_axis=2, **WANG)
        got = fr.ssim_rgb(fr.to_tensor([d]).double(), fr.to_tensor([r]).double(), downsample=False).item()
        assert got == pytest.approx(sk, abs=1e-10)


def test_official_ssim_is_skimage_on_rgb2gray(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """``ssim`` is skimage's SSIM of MATLAB's rgb2gray (8-bit integers, data_range 255) on both paths."""
    got = create_scorer("ssim").score_pairs([d for d, _ in pairs], [r for _, r in pairs])[:, 0]
    for value, (d, r) in zip(got, pairs, strict=True):
        gd, gr = official_fr.gray255(d), official_fr.gray255(r)
        sk = structural_similarity(gr, gd, **{**WANG, "data_range": 255.0})
        assert value == pytest.approx(sk, abs=1e-10)
        torch_value = official_fr.ssim_torch(fr.to_tensor([d]), fr.to_tensor([r])).item()
        assert torch_value == pytest.approx(sk, abs=1e-10)


def test_gray255_is_matlab_rgb2gray_of_uint8(crops: list[np.ndarray]) -> None:
    """round(0.2989 R + 0.5870 G + 0.1140 B) of the 8-bit values, half away from zero; torch the same."""
    img8 = crops[0]
    expected = np.floor(img8.astype(np.float64) @ np.array(official_fr.RGB2GRAY) + 0.5)
    got = official_fr.gray255(_unit(img8))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(official_fr.gray255_torch(fr.to_tensor([_unit(img8)]))[0, 0].numpy(), expected)
    np.testing.assert_array_equal(official_fr.gray255(_unit(img8[:, :, 1])), img8[:, :, 1])  # gray: as is


def test_ssim_rgb_scorer_float32_close_to_skimage(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """The scorer's float32 path: 192 px images are not downsampled (f = 1); tolerance 1e-4 for float32."""
    got = create_scorer("ssim_rgb").score_pairs([d for d, _ in pairs], [r for _, r in pairs])[:, 0]
    for value, (d, r) in zip(got, pairs, strict=True):
        sk = structural_similarity(r.astype(np.float64), d.astype(np.float64), channel_axis=2, **WANG)
        assert value == pytest.approx(sk, abs=1e-4)


def test_ssim_downsampling_is_average_pooling(sources: dict[str, np.ndarray]) -> None:
    """At 512 px piq pools 2x2 first (Wang's ssim.m): equal to skimage on 2x2-mean-pooled images."""
    ref = sources["astronaut"]  # 512x512
    dist = synth.noise(synth.blur(ref, 1.0), 10.0)
    d, r = _unit(dist), _unit(ref)
    got = create_scorer("ssim_rgb").score_pairs([d], [r])[0, 0]

    def pool(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float64).reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))

    sk_pooled = structural_similarity(pool(r), pool(d), channel_axis=2, **WANG)
    sk_full = structural_similarity(r.astype(np.float64), d.astype(np.float64), channel_axis=2, **WANG)
    assert got == pytest.approx(sk_pooled, abs=1e-4)
    assert abs(got - sk_full) > 1e-2  # the pooling matters: not the full-resolution value


def test_ssim_map_equals_skimage_full_map(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for d, r in pairs[:3]:
        g_d, g_r = (_gray(a).astype(np.float64) for a in (d, r))
        sk_value, sk_map = structural_similarity(g_r, g_d, full=True, **WANG)
        smap = fr.ssim_map(g_d, g_r)
        assert smap.shape == g_d.shape
        np.testing.assert_allclose(smap, sk_map, atol=1e-9)
        assert smap[5:-5, 5:-5].mean() == pytest.approx(sk_value, abs=1e-12)


def test_identical_images_give_the_known_values(crops: list[np.ndarray]) -> None:
    ref = _unit(crops[0])
    expected = {"psnr": fr.PSNR_MAX_DB, "ssim": 1.0, "ssim_rgb": 1.0, "ms_ssim": 1.0, "ms_ssim_rgb": 1.0,
                "gmsd": 0.0, "vif": 1.0, "vifp": 1.0, "fsim": 1.0, "vsi": 1.0, "haarpsi": 1.0}
    for name, value in expected.items():
        assert create_scorer(name).score_pairs([ref], [ref.copy()])[0, 0] == pytest.approx(value, abs=1e-5), name
    worst = create_scorer("ssim_worst").score_pairs([_gray(ref)], [_gray(ref)])[0]
    assert worst[0] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize(
    ("distortion", "apply", "levels"),
    [
        ("blur", synth.blur, (1.0, 2.5, 5.0)),
        ("noise", lambda img, s: synth.noise(img, s, seed=3), (8.0, 20.0, 40.0)),
        ("jpeg", synth.jpeg, (40, 15, 5)),
    ],
)
def test_every_scorer_is_monotonic_in_distortion_level(crops: list[np.ndarray], distortion, apply, levels) -> None:
    for ref8 in crops[:2]:
        ref = _unit(ref8)
        dists = [_unit(apply(ref8, level)) for level in levels]
        for name in FR_NAMES:
            scorer = create_scorer(name)
            if scorer.info.colour == "gray":
                values = scorer.score_pairs([_gray(d) for d in dists], [_gray(ref)] * len(dists))[:, 0]
            else:
                values = scorer.score_pairs(dists, [ref] * len(dists))[:, 0]
            steps = np.diff(values) * (1 if scorer.info.higher_is_better else -1)
            assert (steps < 0).all(), f"{name} not monotonic in {distortion}: {values}"


def test_vif_takes_the_distorted_image_first(crops: list[np.ndarray]) -> None:
    """VIF > 1 for a contrast-enhanced image (Sheikh & Bovik): proves the argument order.

    The reference is a low-contrast copy, so the "enhanced" image is the unclipped original.
    """
    enhanced = _unit(crops[0])
    ref = (0.5 + (enhanced - 0.5) * 0.6).astype(np.float32)
    for name in ("vif", "vifp"):
        vif = create_scorer(name)
        assert vif.score_pairs([enhanced], [ref])[0, 0] > 1.0, name
        assert vif.score_pairs([ref], [enhanced])[0, 0] < 1.0, name


def test_batches_of_mixed_sizes_equal_one_by_one(sources: dict[str, np.ndarray]) -> None:
    """Grouping by size and cutting groups (tiny max_elements) must not change values or their order."""
    ref8 = sources["chelsea"]
    refs = [ref8[:200, :300], ref8[:180, :180], ref8[50:250, 10:310], ref8[:180, 1:181], ref8[:200, 5:305]]
    images = [_unit(synth.noise(r, 5.0 + 5 * i, seed=i)) for i, r in enumerate(refs)]
    references = [_unit(r) for r in refs]
    assert fr.size_groups([i.shape for i in images]) == [[0, 2, 4], [1, 3]]
    assert fr.size_groups([i.shape for i in images], max_elements=2 * 200 * 300 * 3) == [[0, 2], [4], [1, 3]]
    for metric in (fr.ssim_rgb, vif_wavelet.vif_torch):
        batched = fr.score_pairs_batched(metric, images, references, max_elements=200 * 300 * 3)
        single = [fr.score_pairs_batched(metric, [i], [r])[0] for i, r in zip(images, references, strict=True)]
        np.testing.assert_allclose(batched, single, atol=1e-6)
    out = create_scorer("psnr").score_pairs(images, references)
    assert out.shape == (5, 1) and out.dtype == np.float64


def test_ms_ssim_small_image_is_a_clear_error() -> None:
    """msssim.m needs 11 px at the 5th scale (176 a side); piq's product form 161."""
    for name, side in (("ms_ssim", 176), ("ms_ssim_rgb", 161)):
        small = np.zeros((side - 1, 400, 3), np.float32)
        with pytest.raises(ValueError, match=rf"at least {side}x{side} px.*got 400x{side - 1}.*use ssim"):
            create_scorer(name).score_pairs([small], [small])
        ok = np.full((side, side, 3), 0.5, np.float32)
        assert create_scorer(name).score_pairs([ok], [ok])[0, 0] == pytest.approx(1.0)


def test_size_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"image is 64x48 but its reference is 48x64"):
        create_scorer("ssim").score_pairs([np.zeros((48, 64, 3), np.float32)], [np.zeros((64, 48, 3), np.float32)])


def test_worst_region_on_a_known_map() -> None:
    smap = np.ones((100, 120))
    smap[30:50, 70:90] = 0.2
    mean, x0, y0, x1, y1 = fr.worst_region(smap, 20)
    assert (x0, y0, x1, y1) == (70.0, 30.0, 90.0, 50.0)
    assert mean == pytest.approx(0.2)
    assert fr.region_size(100, 120) == 16 and fr.region_size(800, 1000) == 100 and fr.region_size(10, 50) == 10


def test_ssim_worst_locates_a_local_defect(crops: list[np.ndarray]) -> None:
    """A blurred 40x40 patch at x 130-170, y 60-100 must be where the worst 24x24 region is."""
    ref8 = crops[1]
    dist8 = ref8.copy()
    dist8[60:100, 130:170] = synth.blur(ref8, 4.0)[60:100, 130:170]
    out = create_scorer("ssim_worst").score_pairs([_gray(_unit(dist8))], [_gray(_unit(ref8))])[0]
    score, x0, y0, x1, y1 = out
    assert (x1 - x0, y1 - y0) == (24.0, 24.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert 130 <= cx <= 170 and 60 <= cy <= 100
    whole = create_scorer("ssim").score_pairs([_unit(dist8)], [_unit(ref8)])[0, 0]
    assert score < whole < 1.0


def test_runs_on_cpu_without_grad() -> None:
    x = np.random.default_rng(0).random((64, 64, 3), dtype=np.float32)
    t = fr.to_tensor([x, x])
    assert t.shape == (2, 3, 64, 64) and t.dtype == torch.float32 and not t.requires_grad
    np.testing.assert_array_equal(t[0].permute(1, 2, 0).numpy(), x)


# ---- the CPU fast paths (fast_fr) against piq's torch functions ----
#
# Reference: the torch functions above (piq with the same settings) on the same float32 images, in
# float32 (what CUDA workers compute) and in float64 (piq's maths without rounding noise). Tolerances:
# 1e-4 against piq float32, because piq's own float32 result is up to ~6e-5 from its float64 result
# (measured over 72 pairs: VIF 5.5e-5, from variances of 0-255 values; SSIM 2.7e-5, from 121-tap
# sums); against piq float64, 1e-5 for SSIM and MS-SSIM (fast path measured <= 1.8e-6) and 5e-5
# for VIF (measured <= 1.9e-5: float32 variances in flat regions far from the mean luminance).

# PSNR (dB): float64 sums of float32 values; 1e-5 against piq float64.
FAST = {"ssim_rgb": (fr_fast.ssim_rgb, fr.ssim_rgb), "ms_ssim_rgb": (fr_fast.ms_ssim_rgb, fr.ms_ssim_rgb),
        "vifp": (fr_fast.vifp, fr.vifp), "psnr": (fr_fast.psnr, fr.psnr)}
TOL64 = {"ssim_rgb": 1e-5, "ms_ssim_rgb": 1e-5, "vifp": 5e-5, "psnr": 1e-5}
# (height, width): odd/even mixes for MS-SSIM's replicate padding, SSIM pooling f = 1, 2 (round(385/256)
# = 2, with a floor crop of the odd side) and 3 (1024x768), MS-SSIM's minimum 161 px.
FAST_SIZES = [(161, 161), (200, 333), (301, 257), (385, 390)]


def _fast_pairs(sources: dict[str, np.ndarray], height: int, width: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """Blur, noise and JPEG of a natural crop resized to ``height`` x ``width``, as float32 in [0, 1]."""
    (_, crop), = synth.random_crops(sources, 1, 10_000, seed=seed)
    ref = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
    dists = (synth.blur(ref, 2.0), synth.noise(ref, 10.0, seed=seed), synth.jpeg(ref, 15))
    return [(_unit(d), _unit(ref)) for d in dists]


def _piq(fn, d: np.ndarray, r: np.ndarray, dtype: torch.dtype) -> float:
    with torch.inference_mode():
        return fn(fr.to_tensor([d]).to(dtype), fr.to_tensor([r]).to(dtype)).item()


@pytest.mark.parametrize(("height", "width"), FAST_SIZES)
def test_fast_paths_equal_piq(sources: dict[str, np.ndarray], height: int, width: int) -> None:
    for d, r in _fast_pairs(sources, height, width, seed=height + width):
        for name, (fast, reference) in FAST.items():
            got = fast(d, r)
            assert got == pytest.approx(_piq(reference, d, r, torch.float32), abs=1e-4), name
            assert got == pytest.approx(_piq(reference, d, r, torch.float64), abs=TOL64[name]), name


def test_fast_paths_equal_piq_at_1024x768(sources: dict[str, np.ndarray]) -> None:
    """The benchmark's size (SSIM pools by 3); against piq float32 only, as piq float64 takes seconds here."""
    d, r = _fast_pairs(sources, 768, 1024, seed=5)[1]
    for name, (fast, reference) in FAST.items():
        assert fast(d, r) == pytest.approx(_piq(reference, d, r, torch.float32), abs=1e-4), name


def test_fast_paths_take_gray_and_match_piq(sources: dict[str, np.ndarray]) -> None:
    """One-channel images: SSIM/MS-SSIM of that channel, VIFp without the luminance conversion (as piq)."""
    d, r = (_gray(a) for a in _fast_pairs(sources, 200, 240, seed=7)[2])
    for name, (fast, reference) in FAST.items():
        expected = _piq(reference, d, r, torch.float64)
        assert fast(d, r) == pytest.approx(expected, abs=TOL64[name]), name
        assert fast(d[:, :, None], r[:, :, None]) == pytest.approx(expected, abs=TOL64[name]), name


def test_fast_paths_clip_like_to_tensor() -> None:
    """Out-of-range inputs are clipped to [0, 1] first, as the torch path's ``to_tensor`` does."""
    rng = np.random.default_rng(4)
    d = rng.normal(0.5, 0.4, (170, 180, 3)).astype(np.float32)
    r = rng.normal(0.5, 0.3, (170, 180, 3)).astype(np.float32)
    for name, (fast, reference) in FAST.items():
        assert fast(d, r) == pytest.approx(_piq(reference, d, r, torch.float64), abs=TOL64[name]), name


def test_cpu_scorers_use_the_fast_paths(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for name, (fast, _) in FAST.items():
        got = create_scorer(name).score_pairs([d for d, _ in pairs], [r for _, r in pairs])
        assert got.shape == (len(pairs), 1) and got.dtype == np.float64
        np.testing.assert_array_equal(got[:, 0], [fast(d, r) for d, r in pairs])


def test_fast_paths_reject_what_piq_rejects() -> None:
    small = np.zeros((40, 60, 3), np.float32)
    with pytest.raises(ValueError, match=r"at least 41x41 px, got 60x40"):
        fr_fast.vifp(small, small)
    with pytest.raises(ValueError, match=r"at least 11x11 px .* got 60x10"):
        fr_fast.ssim_rgb(small[:10], small[:10])
    with pytest.raises(ValueError, match=r"same shape"):
        fr_fast.ssim_rgb(small, small[:, :50])
    with pytest.raises(ValueError, match=r"vif needs images of at least 72x72 px .* got 60x40"):
        vif_wavelet.vif(small, small)
    with pytest.raises(ValueError, match=r"same shape"):
        official_fr.gmsd(small, small[:, :50])


# ---- the authors' maths (official_fr, vif_wavelet): published values, CPU against torch ----

OFFICIAL = {  # name -> (CPU function of one pair, torch function of a batch)
    "ssim": (official_fr.ssim, official_fr.ssim_torch), "ms_ssim": (official_fr.ms_ssim, official_fr.ms_ssim_torch),
    "gmsd": (official_fr.gmsd, official_fr.gmsd_torch), "vif": (vif_wavelet.vif, vif_wavelet.vif_torch),
}
CALIBRA = Path(__file__).resolve().parents[2] / "shared" / "official" / "tid2013-calibra"


def _load_rgb(path: Path) -> np.ndarray:
    return _unit(np.asarray(Image.open(path).convert("RGB")))


@pytest.mark.skipif(not (CALIBRA / "official_values.csv").exists(), reason=f"no official values at {CALIBRA}")
def test_official_metrics_match_the_authors_values() -> None:
    """Values of the authors' MATLAB code (ssim.m, msssim.m, GMSD.m, vifvec.m on rgb2gray) on five TID2013
    pairs, as published with 4 decimals (GMSD with 15 digits): within 1e-3 relative or 5e-5 absolute.
    Measured: SSIM <= 4.7e-5, MS-SSIM <= 3.4e-5, VIF <= 3.8e-5 (the published rounding), GMSD 1e-14."""
    with open(CALIBRA / "official_values.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    names = rows[0][1:]
    official = {row[0]: dict(zip(names, map(float, row[1:]), strict=True)) for row in rows[1:]}
    dists = [_load_rgb(CALIBRA / "dist" / n) for n in names]
    refs = [_load_rgb(CALIBRA / "ref" / n) for n in names]
    for metric in OFFICIAL:
        got = create_scorer(metric).score_pairs(dists, refs)[:, 0]
        for value, name in zip(got, names, strict=True):
            expected = official[metric][name]
            assert value == pytest.approx(expected, rel=1e-3, abs=5e-5), f"{metric} {name}"
        assert got.tolist() == pytest.approx([OFFICIAL[metric][0](d, r) for d, r in zip(dists, refs, strict=True)])
        batched = fr.score_pairs_batched(OFFICIAL[metric][1], dists, refs)
        np.testing.assert_allclose(batched, got, rtol=0, atol=1e-5, err_msg=metric)


@pytest.mark.parametrize(("height", "width"), [(176, 176), (201, 333), (385, 390)])
def test_official_torch_path_equals_cpu_path(sources: dict[str, np.ndarray], height: int, width: int) -> None:
    """Odd and even sides (MS-SSIM's symmetric halving, GMSD's zero padding, VIF's crops to multiples of 3):
    the batched torch functions (what CUDA runs) equal the CPU scorers within 1e-5 (measured <= 1e-6)."""
    pairs = _fast_pairs(sources, height, width, seed=height * width)
    images, references = [d for d, _ in pairs], [r for _, r in pairs]
    for name, (cpu_fn, torch_fn) in OFFICIAL.items():
        cpu = create_scorer(name).score_pairs(images, references)[:, 0]
        # the scorer runs cpu_fn (to the last bits: OpenCV's SIMD sums depend on buffer alignment)
        np.testing.assert_allclose(cpu, [cpu_fn(d, r) for d, r in pairs], rtol=0, atol=1e-12)
        np.testing.assert_allclose(fr.score_pairs_batched(torch_fn, images, references), cpu, rtol=0, atol=1e-5,
                                   err_msg=name)
        gray = [official_fr.gray255(a) / 255 for a in (*images, *references)]  # gray input: rgb2gray skipped
        got = create_scorer(name).score_pairs(gray[: len(images)], gray[len(images) :])[:, 0]
        np.testing.assert_allclose(got, cpu, rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.gpu
def test_cuda_scorers_agree_with_the_cpu(pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """CUDA runs the batched torch functions (TF32 off): piq's maths within 1e-4 of the CPU fast path
    (float32 both), the authors' maths within 1e-5 (float64 statistics both)."""
    images, references = [d for d, _ in pairs], [r for _, r in pairs]
    for name in (*FAST, *OFFICIAL):
        cpu = create_scorer(name).score_pairs(images, references)
        scorer = create_scorer(name, device="cuda")
        tol = 1e-5 if name in OFFICIAL else 1e-4
        np.testing.assert_allclose(scorer.score_pairs(images, references), cpu, rtol=0, atol=tol, err_msg=name)


def test_loading_the_registry_leaves_piq_to_first_use() -> None:
    """Every worker loads the registry at start; piq imports torchvision and torch._dynamo (~1.2 s)."""
    import json
    import subprocess
    import sys

    code = """if 1:
        import json, sys, torch
        from iqaflow.models.registry import all_scorers
        all_scorers()
        loaded = sorted(m for m in ("piq", "torchvision", "torch._dynamo") if m in sys.modules)
        from iqaflow.models.classical.fr import psnr
        db = float(psnr(torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.5)))
        print(json.dumps([loaded, "piq" in sys.modules, db]))
    """
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    loaded, piq_after, db = json.loads(res.stdout.strip().splitlines()[-1])
    assert loaded == [] and piq_after
    assert db == pytest.approx(10 * np.log10(1 / 0.5**2), abs=1e-4)  # the first use imports and runs piq
