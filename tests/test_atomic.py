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


def test_a_temporary_folder_gets_the_mode_a_plain_mkdir_would_not_mkdtemps_private_one(tmp_path):
    import os
    import stat

    from maskds.core.atomic import temp_dir

    old = os.umask(0o022)
    try:
        work = temp_dir(tmp_path / "deep" / "out", "writing")
    finally:
        os.umask(old)
    assert work.parent == tmp_path / "deep" and work.name.startswith(".out.writing-") and not any(work.iterdir())
    assert stat.S_IMODE(work.stat().st_mode) == 0o755  # mkdtemp alone: 0o700, kept by the rename to OUT
