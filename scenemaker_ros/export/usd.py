"""USD stage for Isaac Sim (usd-core): Z up, metersPerUnit 1, kilogramsPerUnit 1, a physics scene
with gravity -z, and under ``/World`` one Xform per object (translate + orient ops: its rigid pose
in the gravity-aligned world frame of ``world.py``) holding its ``visual`` mesh and its
``collision`` mesh (the convex hull, purpose guide, UsdPhysics CollisionAPI + MeshCollisionAPI
approximation convexHull; with ``collision: mesh`` the visual mesh itself collides, approximation
none). MassAPI on the Xform gives mass, centre of mass and principal inertia; dynamic exports also
apply RigidBodyAPI. A box is the support plane. Meshes are stored in the stage itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from pxr import Gf, Usd, UsdGeom, UsdPhysics, Vt

from scenemaker_ros.export.world import (
    GROUND_THICKNESS_M,
    ExportObject,
    ExportWorld,
    quaternion_wxyz,
)
from scenemaker_ros.files import atomic_path

USD_FILE = "scene.usda"
ROOT = "/World"
GRAVITY_M_S2 = 9.81


def _define_mesh(stage: Usd.Stage, path: str, mesh: trimesh.Trimesh) -> UsdGeom.Mesh:
    """A polygonal (not subdivided) triangle mesh prim with its extent."""
    prim = UsdGeom.Mesh.Define(stage, path)
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    prim.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(vertices))
    prim.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(mesh.faces), 3, np.int32)))
    prim.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(mesh.faces.astype(np.int32).ravel()))
    prim.CreateExtentAttr(Vt.Vec3fArray.FromNumpy(np.stack([vertices.min(0), vertices.max(0)])))
    prim.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    return prim


def _collide(prim: Usd.Prim, approximation: str) -> None:
    UsdPhysics.CollisionAPI.Apply(prim)
    UsdPhysics.MeshCollisionAPI.Apply(prim).CreateApproximationAttr(approximation)


def _set_pose(xform: UsdGeom.Xform, T: np.ndarray) -> None:
    """Translate + orient ops (double precision) of a rigid (4, 4) pose."""
    xform.AddTranslateOp(UsdGeom.XformOp.PrecisionDouble).Set(Gf.Vec3d(*T[:3, 3]))
    xform.AddOrientOp(UsdGeom.XformOp.PrecisionDouble).Set(Gf.Quatd(*quaternion_wxyz(T[:3, :3])))


def _set_mass(prim: Usd.Prim, obj: ExportObject) -> None:
    """MassAPI: mass, centre of mass and the inertia tensor as principal moments + axes."""
    moments, axes = np.linalg.eigh(obj.inertia)
    if np.linalg.det(axes) < 0:
        axes[:, 2] *= -1
    mass = UsdPhysics.MassAPI.Apply(prim)
    mass.CreateMassAttr(obj.mass)
    mass.CreateCenterOfMassAttr(Gf.Vec3f(*obj.center_of_mass))
    mass.CreateDiagonalInertiaAttr(Gf.Vec3f(*moments))
    mass.CreatePrincipalAxesAttr(Gf.Quatf(*quaternion_wxyz(axes)))


def _add_object(stage: Usd.Stage, obj: ExportObject, static: bool) -> None:
    xform = UsdGeom.Xform.Define(stage, f"{ROOT}/{obj.name}")
    _set_pose(xform, obj.pose)
    visual = _define_mesh(stage, f"{ROOT}/{obj.name}/visual", obj.visual)
    if obj.collision is obj.visual:
        _collide(visual.GetPrim(), UsdPhysics.Tokens.none)
    else:
        collision = _define_mesh(stage, f"{ROOT}/{obj.name}/collision", obj.collision)
        collision.CreatePurposeAttr(UsdGeom.Tokens.guide)
        _collide(collision.GetPrim(), UsdPhysics.Tokens.convexHull)
    if not static:
        UsdPhysics.RigidBodyAPI.Apply(xform.GetPrim())
    _set_mass(xform.GetPrim(), obj)


def _add_ground(stage: Usd.Stage, ground_z: float, size: float) -> None:
    """A static box whose top face is the support plane."""
    cube = UsdGeom.Cube.Define(stage, f"{ROOT}/ground_plane")
    cube.CreateSizeAttr(1.0)
    cube.AddTranslateOp().Set(Gf.Vec3d(0.0, 0.0, ground_z - GROUND_THICKNESS_M / 2))
    cube.AddScaleOp().Set(Gf.Vec3f(size, size, GROUND_THICKNESS_M))
    UsdPhysics.CollisionAPI.Apply(cube.GetPrim())


def build_stage(world: ExportWorld) -> Usd.Stage:
    """The in-memory stage (see the module docstring)."""
    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    UsdPhysics.SetStageKilogramsPerUnit(stage, 1.0)
    stage.SetDefaultPrim(UsdGeom.Xform.Define(stage, ROOT).GetPrim())
    physics = UsdPhysics.Scene.Define(stage, f"{ROOT}/physics_scene")
    physics.CreateGravityDirectionAttr(Gf.Vec3f(0.0, 0.0, -1.0))
    physics.CreateGravityMagnitudeAttr(GRAVITY_M_S2)
    if world.config.ground_plane:
        _add_ground(stage, world.frame.ground_z, world.config.ground_size_m)
    for obj in world.objects:
        _add_object(stage, obj, world.config.static)
    return stage


def export_usd(world: ExportWorld, out_dir: Path) -> Path:
    """Write ``out_dir/scene.usda`` (meshes inside); returns the path."""
    path = out_dir / USD_FILE
    stage = build_stage(world)  # kept alive: its root layer is only weakly referenced
    with atomic_path(path) as tmp:
        stage.GetRootLayer().Export(str(tmp))
    return path
