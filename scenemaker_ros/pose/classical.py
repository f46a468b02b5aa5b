"""The classical baseline: principal-axes initialisation + scale-aware ICP, no learning.

Per object, the principal axes of its observed points are matched to those of its canonical
surface (the four proper sign choices), with a uniform scale from the ratio of their longest
extents and the centroids put together; each start is refined by ``refine.refine_pose`` and the
best-scoring one kept. It sees one object at a time, so it knows nothing of the scene.
"""

from __future__ import annotations

import numpy as np

from scenemaker_ros.pose.estimator import ObjectPoser, PoseResult
from scenemaker_ros.pose.inputs import Observation
from scenemaker_ros.pose.refine import DepthView, principal_axes_starts, refine_pose


class ClassicalPoser(ObjectPoser):
    """PCA / oriented-box starts + scale-aware ICP. Its starts are always refined; run it with
    ``refine: false``, since the shared final refinement would repeat that work."""

    def _estimate_group(self, group: list[int], obs: Observation, surfaces: dict,
                        view: DepthView, rng: np.random.Generator, result: PoseResult) -> None:
        for k in group:
            with result.timer("classical"):
                observed, surface = obs.object_points[k], surfaces[k]
                best = (None, np.inf)
                for T in principal_axes_starts(observed, surface):
                    T, score, _ = refine_pose(T, surface, observed, view,
                                              self.cfg.refine_iterations, max_scale_change=1.0)
                    if score < best[1]:
                        best = (T, score)
            result.raw_poses[k], result.poses[k] = best[0], best[0]
            result.scores[k] = best[1]
