"""A small TF lookup for the node's world frame (tf2_ros has no pip wheel).

Keeps the newest transform of every parent -> child edge seen on /tf and /tf_static and chains
them; no interpolation in time (the scene is static between frames, and exports only need where
the camera is now). Pure numpy: the node feeds it the messages' fields.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
from scipy.spatial.transform import Rotation

from scenemaker_ros.geometry import compose_pose


def transform_matrix(translation, quaternion_xyzw) -> np.ndarray:
    """(4, 4) from a translation (3,) and a unit quaternion (x, y, z, w)."""
    return compose_pose(Rotation.from_quat(quaternion_xyzw).as_matrix(), translation, 1.0)


class TransformGraph:
    """``lookup(target, source)`` gives T_target_source: points in ``source`` -> ``target``."""

    def __init__(self) -> None:
        self.edges: dict[tuple[str, str], np.ndarray] = {}  # (parent, child) -> T_parent_child
        self.lock = threading.Lock()

    def add(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:
        with self.lock:
            self.edges[(parent.lstrip("/"), child.lstrip("/"))] = T_parent_child

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        """The chained transform, or None when the frames are not connected."""
        target, source = target.lstrip("/"), source.lstrip("/")
        with self.lock:
            neighbours: dict[str, list[tuple[str, np.ndarray]]] = {}
            for (parent, child), T in self.edges.items():
                neighbours.setdefault(child, []).append((parent, T))  # child -> parent
                neighbours.setdefault(parent, []).append((child, np.linalg.inv(T)))
        found = {source: np.eye(4)}  # frame -> T_frame_source
        queue = deque([source])
        while queue:
            frame = queue.popleft()
            if frame == target:
                return found[frame]
            for other, T_other_frame in neighbours.get(frame, []):
                if other not in found:
                    found[other] = T_other_frame @ found[frame]
                    queue.append(other)
        return None
