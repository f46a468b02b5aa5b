"""Export to SDF, USD, URDF and GLB: validity, world poses, masses, atomic writes, errors."""

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from scenemaker_ros.cli import build_parser, main
from scenemaker_ros.config import ExportConfig
from scenemaker_ros.errors import SceneMakerError
from scenemaker_ros.export import FORMATS, export_scene, sdf_string
from scenemaker_ros.export.glb import Z_UP_TO_Y_UP
from scenemaker_ros.export.world import prepare_world
from scenemaker_ros.geometry import compose_pose, decompose_pose
from tests.test_relations import CAMERA_TO_WORLD, FIRST_ID, box_pose, save_box_scene

DENSITY = 500.0
SIZES = np.array([[0.2, 0.15, 0.1], [0.08, 0.06, 0.1], [0.05, 0.05, 0.2]])
POSES = [box_pose(SIZES[0], [0.0, 0.0, 0.05], Rotation.from_euler("z", 0.3).as_matrix()),
         box_pose(SIZES[1], [0.02, 0.01, 0.15], Rotation.from_euler("z", -0.5).as_matrix()),
         box_pose(SIZES[2], [0.1, 0.25, 0.025], Rotation.from_euler("yz", [np.pi / 2, 0.2])
                  .as_matrix())]  # lying on its side: pitch 90 deg, the roll-pitch-yaw singularity
NAMES = [f"object_{FIRST_ID + i:03d}_box" for i in range(len(POSES))]


def rigid(pose: np.ndarray) -> np.ndarray:
    """The rotation + translation (4, 4) of a pose with scale."""
    R, t, _ = decompose_pose(pose)
    return compose_pose(R, t, 1.0)


def pose_from_text(xyz: str, rpy: str) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [float(v) for v in rpy.split()]).as_matrix()
    T[:3, 3] = [float(v) for v in xyz.split()]
    return T


def box_inertia(size, mass) -> np.ndarray:
    a, b, c = np.square(size)
    return mass / 12 * np.diag([b + c, a + c, a + b])


@pytest.fixture
def scene_dir(tmp_path):
    save_box_scene(tmp_path / "scene", POSES)
    return tmp_path / "scene"


def test_sdf_validates_and_poses_match(scene_dir, tmp_path):
    path = export_scene(scene_dir, "sdf", tmp_path / "out", ExportConfig())
    world = ET.parse(path).getroot().find("world")
    models = {m.get("name"): m for m in world.findall("model")}
    assert set(models) == {"ground_plane", *NAMES}
    ground = [float(v) for v in models["ground_plane"].findtext("pose").split()]
    assert ground[2] == pytest.approx(0.0, abs=1e-9)  # the boxes rest on z = 0
    for name, pose, size in zip(NAMES, POSES, SIZES):
        model = models[name]
        values = model.findtext("pose").split()
        np.testing.assert_allclose(pose_from_text(" ".join(values[:3]), " ".join(values[3:])),
                                   rigid(pose), atol=1e-7)
        assert model.findtext("static") == "false"
        mass = DENSITY * np.prod(size)
        assert float(model.findtext("link/inertial/mass")) == pytest.approx(mass, rel=1e-6)
        inertia = model.find("link/inertial/inertia")
        np.testing.assert_allclose([float(inertia.findtext(k)) for k in ("ixx", "iyy", "izz")],
                                   np.diag(box_inertia(size, mass)), rtol=1e-6)
        for tag in ("visual", "collision"):
            mesh = trimesh.load(path.parent / model.findtext(f"link/{tag}/geometry/mesh/uri"))
            np.testing.assert_allclose(mesh.extents, size, atol=1e-6)
    if shutil.which("ign"):
        result = subprocess.run(["ign", "sdf", "-k", str(path)], capture_output=True, text=True)
        assert result.returncode == 0 and "Valid" in result.stdout, result.stdout + result.stderr
    assert not [p for p in path.parent.rglob(".*")]  # no temp files left behind


def test_sdf_string_is_one_spawnable_model(scene_dir, tmp_path):
    text = sdf_string(scene_dir, tmp_path / "spawn", ExportConfig(static=True))
    root = ET.fromstring(text)
    assert [child.tag for child in root] == ["model"]  # ros_gz_sim create spawns the first
    nested = root.find("model").findall("model")
    assert [m.get("name") for m in nested] == ["ground_plane", *NAMES]
    for model in nested[1:]:
        assert model.findtext("static") == "true"
        uri = model.findtext("link/visual/geometry/mesh/uri")
        assert uri.startswith("file:///") and os.path.isfile(uri[len("file://"):])
    if shutil.which("ign"):
        (tmp_path / "spawn.sdf").write_text(text)
        result = subprocess.run(["ign", "sdf", "-k", str(tmp_path / "spawn.sdf")],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_usd_round_trips_transforms(scene_dir, tmp_path):
    from pxr import Usd, UsdGeom, UsdPhysics

    path = export_scene(scene_dir, "usd", tmp_path / "out")
    stage = Usd.Stage.Open(str(path))
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.z
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    assert stage.GetDefaultPrim().GetPath().pathString == "/World"
    for name, pose, size in zip(NAMES, POSES, SIZES):
        prim = stage.GetPrimAtPath(f"/World/{name}")
        to_world = np.array(UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(
            Usd.TimeCode.Default())).T  # USD matrices act on row vectors
        np.testing.assert_allclose(to_world, rigid(pose), atol=1e-9)
        points = np.array(UsdGeom.Mesh(stage.GetPrimAtPath(f"/World/{name}/visual"))
                          .GetPointsAttr().Get())
        corners = trimesh.creation.box().vertices
        world_points = points @ to_world[:3, :3].T + to_world[:3, 3]
        expected = corners @ pose[:3, :3].T + pose[:3, 3]
        assert np.abs(world_points[:, None] - expected[None]).sum(-1).min(1).max() < 1e-6
        collision = stage.GetPrimAtPath(f"/World/{name}/collision")
        assert collision.HasAPI(UsdPhysics.CollisionAPI)
        assert (UsdPhysics.MeshCollisionAPI(collision).GetApproximationAttr().Get()
                == UsdPhysics.Tokens.convexHull)
        assert prim.HasAPI(UsdPhysics.RigidBodyAPI)
        mass = UsdPhysics.MassAPI(prim)
        assert mass.GetMassAttr().Get() == pytest.approx(DENSITY * np.prod(size), rel=1e-6)
        assert sorted(mass.GetDiagonalInertiaAttr().Get()) == pytest.approx(
            sorted(np.diag(box_inertia(size, DENSITY * np.prod(size)))), rel=1e-5)


def test_urdf_parses_with_the_right_links(scene_dir, tmp_path):
    path = export_scene(scene_dir, "urdf", tmp_path / "out", ExportConfig(static=True))
    robot = ET.parse(path).getroot()
    assert [link.get("name") for link in robot.findall("link")] == \
        ["world", "ground_plane", *NAMES]
    joints = {j.find("child").get("link"): j for j in robot.findall("joint")}
    for name, pose in zip(NAMES, POSES):
        joint = joints[name]
        assert joint.get("type") == "fixed" and joint.find("parent").get("link") == "world"
        origin = joint.find("origin")
        np.testing.assert_allclose(pose_from_text(origin.get("xyz"), origin.get("rpy")),
                                   rigid(pose), atol=1e-7)
        link = robot.find(f"link[@name='{name}']")
        for tag in ("visual", "collision"):
            assert (path.parent / link.find(f"{tag}/geometry/mesh").get("filename")).is_file()
        assert float(link.find("inertial/mass").get("value")) > 0
    dynamic = ET.parse(export_scene(scene_dir, "urdf", tmp_path / "dyn")).getroot()
    assert {j.get("type") for j in dynamic.findall("joint")} == {"fixed", "floating"}


def test_mesh_collision_absolute_uris_and_no_ground(scene_dir, tmp_path):
    from pxr import Usd, UsdPhysics

    cfg = ExportConfig(collision="mesh", absolute_uris=True, ground_plane=False)
    robot = ET.parse(export_scene(scene_dir, "urdf", tmp_path / "out", cfg)).getroot()
    assert [link.get("name") for link in robot.findall("link")] == ["world", *NAMES]
    link = robot.find(f"link[@name='{NAMES[0]}']")
    visual, collision = (link.find(f"{tag}/geometry/mesh").get("filename")
                         for tag in ("visual", "collision"))
    assert visual == collision and visual.startswith("file:///")
    stage = Usd.Stage.Open(str(export_scene(scene_dir, "usd", tmp_path / "out", cfg)))
    mesh = stage.GetPrimAtPath(f"/World/{NAMES[0]}/visual")
    assert mesh.HasAPI(UsdPhysics.CollisionAPI)
    assert UsdPhysics.MeshCollisionAPI(mesh).GetApproximationAttr().Get() == UsdPhysics.Tokens.none
    assert not stage.GetPrimAtPath(f"/World/{NAMES[0]}/collision")
    assert not stage.GetPrimAtPath("/World/ground_plane")


def test_glb_has_one_node_per_object_with_its_transform(scene_dir, tmp_path):
    path = export_scene(scene_dir, "glb", tmp_path / "out")
    loaded = trimesh.load(path)
    assert sorted(loaded.graph.nodes_geometry) == sorted(NAMES)
    for name, pose in zip(NAMES, POSES):
        transform, geometry = loaded.graph.get(name)
        np.testing.assert_allclose(transform, Z_UP_TO_Y_UP @ rigid(pose), atol=1e-6)
        np.testing.assert_allclose(loaded.geometry[geometry].extents, SIZES[NAMES.index(name)],
                                   atol=1e-6)


def test_gravity_estimated_without_camera_to_world(tmp_path):
    save_box_scene(tmp_path, POSES, camera_to_world=None)
    world = prepare_world(tmp_path, ExportConfig())
    assert world.frame.source == "estimated" and world.frame.ground_z == 0.0
    up_in_camera = world.frame.camera_to_world[2, :3]
    np.testing.assert_allclose(up_in_camera, CAMERA_TO_WORLD[2, :3], atol=1e-6)
    lowest = min((obj.visual.vertices @ obj.pose[:3, :3].T + obj.pose[:3, 3])[:, 2].min()
                 for obj in world.objects)
    assert lowest == pytest.approx(0.0, abs=1e-9)
    relative = np.linalg.inv(world.objects[0].pose) @ world.objects[1].pose
    np.testing.assert_allclose(relative, np.linalg.inv(rigid(POSES[0])) @ rigid(POSES[1]),
                               atol=1e-9)


def test_support_plane_from_metadata(tmp_path):
    up = CAMERA_TO_WORLD[2, :3]  # world z in camera coordinates; plane z = 0.05 in the world
    plane = [*(2 * up), 2 * (CAMERA_TO_WORLD[2, 3] - 0.05)]
    save_box_scene(tmp_path, POSES, camera_to_world=None, metadata={"support_plane": plane})
    world = prepare_world(tmp_path, ExportConfig())
    assert world.frame.source == "metadata"
    z = [obj.pose[2, 3] for obj in world.objects]
    np.testing.assert_allclose(z, [p[2, 3] - 0.05 for p in POSES], atol=1e-9)
    save_box_scene(tmp_path, POSES, camera_to_world=None, metadata={"support_plane": [0, 0, 0]})
    with pytest.raises(SceneMakerError, match="support_plane"):
        prepare_world(tmp_path, ExportConfig())


def test_mesh_repair_and_mass_fallback(tmp_path):
    cube = trimesh.creation.box()
    cylinder = trimesh.creation.cylinder(radius=0.5, height=1.0, sections=16)
    open_top = cylinder.faces[cylinder.triangles_center[:, 2] < 0.49]  # a cup: not repairable
    flat = (np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]]),
            np.array([[0, 1, 2], [0, 2, 3]]))
    size = [0.1, 0.1, 0.1]
    save_box_scene(tmp_path, [box_pose(size, [0, 0, 0.05]), box_pose(size, [0.3, 0, 0.05]),
                              box_pose(size, [-0.3, 0, 0.0])],
                   meshes={0: (cube.vertices, cube.faces[1:]),  # one triangle missing
                           1: (cylinder.vertices, open_top), 2: flat})
    repaired, cup, sheet = prepare_world(tmp_path, ExportConfig(min_thickness_m=0.004)).objects
    assert repaired.watertight and repaired.mass_from == "mesh"
    assert repaired.mass == pytest.approx(DENSITY * 0.001, rel=1e-6)
    assert not cup.watertight and cup.mass_from == "convex_hull"
    assert cup.mass == pytest.approx(DENSITY * cup.collision.volume, rel=1e-6)
    assert cup.collision.is_convex and cup.collision.is_watertight
    np.testing.assert_allclose(sorted(sheet.collision.extents), [0.004, 0.1, 0.1], atol=1e-9)
    assert sheet.mass == pytest.approx(DENSITY * 0.004 * 0.01, rel=1e-6)


def test_writes_are_atomic_meshes_before_the_scene_file(scene_dir, tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace",
                        lambda src, dst: (replaced.append(str(dst)), real_replace(src, dst)))
    path = export_scene(scene_dir, "sdf", tmp_path / "out")
    assert replaced[-1] == str(path) and len(replaced) == 1 + 2 * len(POSES)
    assert all("/meshes/" in p for p in replaced[:-1])


def test_cli_export_static_and_density(scene_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["export", str(scene_dir), "--format", "sdf", "--out", str(out), "--static",
                 "--density", "800"]) == 0
    assert "world.sdf" in capsys.readouterr().out
    model = ET.parse(out / "world.sdf").getroot().find(f"world/model[@name='{NAMES[0]}']")
    assert model.findtext("static") == "true"
    assert float(model.findtext("link/inertial/mass")) == pytest.approx(800 * np.prod(SIZES[0]))
    choices = next(a.choices for a in build_parser()._subparsers._group_actions[0]
                   .choices["export"]._actions if a.dest == "format")
    assert sorted(choices) == sorted(FORMATS)


@pytest.mark.parametrize("break_scene, message", [
    (lambda d: (d / "scene.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "scene.json").write_text(json.dumps({"version": 1})), "invalid scene"),
    (lambda d: (d / "meshes" / "box_1.ply").unlink(), "mesh 'meshes/box_1.ply' not found"),
    (lambda d: (d / "meshes" / "box_1.ply").write_bytes(b"ply\ngarbage"), "cannot read mesh"),
])
def test_bad_scenes_are_one_line_errors(scene_dir, tmp_path, capsys, break_scene, message):
    break_scene(scene_dir)
    with pytest.raises(SceneMakerError, match=message) as error:
        export_scene(scene_dir, "urdf", tmp_path / "out")
    assert "\n" not in str(error.value)
    assert main(["export", str(scene_dir), "--format", "glb", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_unknown_format_and_empty_scene(tmp_path):
    save_box_scene(tmp_path, POSES)
    with pytest.raises(SceneMakerError, match="unknown format 'obj'"):
        export_scene(tmp_path, "obj", tmp_path / "out")
    save_box_scene(tmp_path / "empty", [])
    with pytest.raises(SceneMakerError, match="no objects"):
        export_scene(tmp_path / "empty", "sdf", tmp_path / "out")
