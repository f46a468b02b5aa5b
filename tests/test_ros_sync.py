"""Approximate-time matching of the node's three inputs (pure Python)."""

from scenemaker_ros.ros.sync import ApproximateTimeSync


def test_matches_within_slop_and_drops_what_came_before():
    sync = ApproximateTimeSync(3, slop=0.01, queue_size=5)
    assert sync.add(0, 1.000, "rgb1") is None
    assert sync.add(1, 1.004, "depth1") is None
    assert sync.add(2, 1.002, "info1") == ["rgb1", "depth1", "info1"]
    assert all(len(q) == 0 for q in sync.queues)


def test_picks_the_nearest_partner_and_refuses_far_ones():
    sync = ApproximateTimeSync(2, slop=0.02, queue_size=5)
    for t in (1.0, 1.1, 1.2):
        assert sync.add(0, t, f"rgb{t}") is None
    assert sync.add(1, 1.5, "depth1.5") is None  # nothing within 20 ms
    assert sync.add(1, 1.11, "depth1.11") == ["rgb1.1", "depth1.11"]
    assert [s for s, _ in sync.queues[0]] == [1.2]  # rgb1.0 dropped with the match
    assert [s for s, _ in sync.queues[1]] == [1.5]


def test_queue_size_bounds_memory():
    sync = ApproximateTimeSync(2, slop=0.001, queue_size=3)
    for k in range(100):
        sync.add(0, float(k), k)
    assert len(sync.queues[0]) == 3
    sync.resize(0.5, 2)
    assert len(sync.queues[0]) == 2 and sync.add(1, 99.2, "d") == [99, "d"]
    sync.clear()
    assert all(len(q) == 0 for q in sync.queues)
