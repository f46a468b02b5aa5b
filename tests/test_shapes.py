"""Tests for the procedural shape library (scenemaker_ros.synth.shapes)."""

import numpy as np
import open3d as o3d
import pytest
import trimesh

from scenemaker_ros.synth.shapes import (
    COMPOSITE_FAMILIES,
    FAMILIES,
    Shape,
    make_shape,
    sample_shape,
    save_shape_grid,
)

SEEDS = range(4)
SYMMETRY_TOL = 5e-3  # max surface distance of g(p); lathes use 48 segments vs 36-step groups
ASYMMETRY_MIN = 0.02  # a "none" shape turned by 90° or 180° must move at least this far


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _max_surface_distance(shape: Shape, rotations: np.ndarray, n_points: int = 300) -> np.ndarray:
    """(M,) max over sampled surface points p of the distance from g p to the mesh, per g."""
    points, _ = trimesh.sample.sample_surface(shape.to_trimesh(), n_points, seed=0)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(shape.vertices.astype(np.float32)),
        o3d.core.Tensor(shape.faces.astype(np.uint32)),
    )
    moved = np.einsum("mij,nj->mni", rotations, points).reshape(-1, 3).astype(np.float32)
    distance = scene.compute_distance(o3d.core.Tensor(moved)).numpy()
    return distance.reshape(len(rotations), n_points).max(axis=1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_meshes_are_clean_canonical_solids(family: str) -> None:
    for seed in SEEDS:
        shape = make_shape(family, seed)
        v, f = shape.vertices, shape.faces
        assert shape.family == family and shape.seed == seed
        assert v.dtype == np.float64 and v.ndim == 2 and v.shape[1] == 3
        assert f.dtype == np.int64 and f.ndim == 2 and f.shape[1] == 3
        assert not v.flags.writeable and not f.flags.writeable
        lo, hi = v.min(axis=0), v.max(axis=0)
        np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-9)
        assert abs((hi - lo).max() - 1.0) < 1e-6
        np.testing.assert_array_equal(np.unique(f), np.arange(len(v)))  # no unreferenced vertex
        mesh = shape.to_trimesh()
        assert mesh.area_faces.min() > 1e-8, "degenerate face"
        assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
        if family not in COMPOSITE_FAMILIES:
            assert mesh.body_count == 1
        assert 8 <= len(f) <= 4000


@pytest.mark.parametrize("family", list(FAMILIES))
def test_symmetry_annotation_holds(family: str) -> None:
    for seed in SEEDS:
        shape = make_shape(family, seed)
        rotations = shape.symmetry_rotations
        assert rotations.dtype == np.float64 and rotations.shape[1:] == (3, 3)
        np.testing.assert_allclose(rotations[0], np.eye(3))
        np.testing.assert_allclose(
            rotations @ rotations.transpose(0, 2, 1),
            np.eye(3)[None].repeat(len(rotations), 0),
            atol=1e-12,
        )
        np.testing.assert_allclose(np.linalg.det(rotations), 1.0)
        assert shape.symmetry in ("none", "discrete", "continuous")
        assert (len(rotations) == 1) == (shape.symmetry == "none")
        assert _max_surface_distance(shape, rotations).max() < SYMMETRY_TOL
        if shape.symmetry == "none":
            turns = np.stack([_rot_z(np.pi / 2), _rot_z(np.pi)])
            assert _max_surface_distance(shape, turns).min() > ASYMMETRY_MIN


def test_all_symmetry_kinds_occur() -> None:
    kinds = {make_shape(family, seed).symmetry for family in FAMILIES for seed in SEEDS}
    assert kinds == {"none", "discrete", "continuous"}
    assert make_shape("mug", 0).symmetry == "none"


def test_deterministic_by_seed() -> None:
    for family in FAMILIES:
        a, b = make_shape(family, 7), make_shape(family, 7)
        np.testing.assert_array_equal(a.vertices, b.vertices)
        np.testing.assert_array_equal(a.faces, b.faces)
        np.testing.assert_array_equal(a.symmetry_rotations, b.symmetry_rotations)
        assert a.symmetry == b.symmetry
    assert not np.array_equal(make_shape("vase", 1).vertices, make_shape("vase", 2).vertices)
    a, b = sample_shape(11), sample_shape(11)
    assert a.family == b.family and np.array_equal(a.vertices, b.vertices)


def test_sample_shape_covers_and_respects_families() -> None:
    assert {sample_shape(seed).family for seed in range(300)} == set(FAMILIES)
    subset = ["mug", "bowl"]
    assert {sample_shape(seed, subset).family for seed in range(20)} == set(subset)


def test_unknown_family_raises() -> None:
    with pytest.raises(ValueError, match="valid: .*mug"):
        make_shape("teapot", 0)


def test_save_shape_grid_writes_png(tmp_path) -> None:
    path = tmp_path / "grid.png"
    save_shape_grid([make_shape("mug", 0), make_shape("box", 0), make_shape("torus", 0)], path, 2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
