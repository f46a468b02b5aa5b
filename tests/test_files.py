import pytest

from scenemaker_ros.files import atomic_path, write_json_atomic


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"x": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind


def test_atomic_path_keeps_suffix(tmp_path):
    with atomic_path(tmp_path / "sub" / "x.npz") as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path / "sub"
        tmp.write_bytes(b"1")
    assert (tmp_path / "sub" / "x.npz").read_bytes() == b"1"
