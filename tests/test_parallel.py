import math

from scenemaker_ros.parallel import map_with_progress


def test_results_in_task_order_with_and_without_workers():
    tasks = [float(k * k) for k in range(20)]
    expected = [float(k) for k in range(20)]
    assert map_with_progress(math.sqrt, tasks, 1, "test", progress=False) == expected
    assert map_with_progress(math.sqrt, tasks, 2, "test", progress=False) == expected
