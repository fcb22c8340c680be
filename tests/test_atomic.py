"""Atomic writes: the target appears whole or not at all."""
import pytest

from maskds.core.atomic import atomic_path


def test_the_target_appears_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
        assert not target.exists()
    assert target.read_text() == "whole"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_the_suffix_is_kept_for_format_sniffing_writers(tmp_path):
    with atomic_path(tmp_path / "c.png", suffix=".png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "c.png").exists()
