"""Tests of the RealSense-like depth noise model."""

import numpy as np

from scenemaker_ros.synth.noise import DepthNoise, apply_depth_noise

K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])
SHAPE = (240, 320)
AXIAL_ONLY = DepthNoise(edge_dropout=0.0, hole_rate=0.0, quantisation_m=0.0)


def noisy(depth, cfg=None, seed=0) -> np.ndarray:
    cfg = cfg or DepthNoise()
    return apply_depth_noise(np.asarray(depth, np.float32), K, cfg, np.random.default_rng(seed))


def test_axial_noise_follows_the_z_squared_law():
    near, far = (noisy(np.full(SHAPE, z), AXIAL_ONLY) for z in (0.5, 2.0))
    expected = 2.0**2 * AXIAL_ONLY.subpixel / (K[0, 0] * AXIAL_ONLY.baseline_m)
    assert np.all(np.isfinite(far)) and np.all(far > 0)
    assert 0.85 * expected < far.std() < 1.15 * expected
    assert 12.0 < far.std() / near.std() < 20.0  # (2 / 0.5)^2 = 16
    assert abs(far.mean() - 2.0) < 0.1 * expected


def test_invalid_stays_zero_and_output_is_clean():
    depth = np.full(SHAPE, 1.5, np.float32)
    depth[:, :40] = 0.0
    depth[10, 100], depth[11, 100], depth[12, 100] = np.nan, np.inf, -1.0
    out = noisy(depth)
    assert out.dtype == np.float32 and out.shape == SHAPE
    assert np.all(np.isfinite(out)) and np.all(out >= 0)
    assert np.all(out[:, :40] == 0) and np.all(out[10:13, 100] == 0)


def test_out_of_range_is_dropped():
    out = noisy(np.array([[0.05, 0.5, 7.0]] * 3), DepthNoise(edge_dropout=0.0, hole_rate=0.0))
    assert out[1, 0] == 0 and out[1, 1] > 0 and out[1, 2] == 0


def test_quantised_to_millimetres():
    out = noisy(np.full(SHAPE, 1.2345))
    valid = out[out > 0]
    millimetres = valid.astype(np.float64) * 1000
    np.testing.assert_allclose(millimetres, np.round(millimetres), atol=1e-3)
    assert len(np.unique(np.round(millimetres))) > 3  # noise spans several steps


def test_dropout_concentrates_at_depth_edges():
    depth = np.full(SHAPE, 1.0, np.float32)
    depth[:, SHAPE[1] // 2:] = 2.0  # a vertical step edge
    dropped = noisy(depth, DepthNoise(hole_rate=0.0)) == 0
    edge_columns = dropped[:, SHAPE[1] // 2 - 1:SHAPE[1] // 2 + 1]
    assert 0.3 < edge_columns.mean() < 0.7  # edge_dropout = 0.5
    assert dropped.sum() == edge_columns.sum()


def test_holes_are_small_and_rare():
    dropped = noisy(np.full(SHAPE, 1.0), DepthNoise(hole_rate=1e-3)) == 0
    assert 0.0 < dropped.mean() < 0.05


def test_deterministic_per_seed():
    depth = np.random.default_rng(3).uniform(0.3, 3.0, SHAPE).astype(np.float32)
    np.testing.assert_array_equal(noisy(depth, seed=5), noisy(depth, seed=5))
    assert not np.array_equal(noisy(depth, seed=5), noisy(depth, seed=6))


def test_input_is_not_modified():
    depth = np.full(SHAPE, 1.0, np.float32)
    noisy_depth = apply_depth_noise(depth, K, DepthNoise(), np.random.default_rng(0))
    assert np.all(depth == 1.0) and not np.array_equal(noisy_depth, depth)
