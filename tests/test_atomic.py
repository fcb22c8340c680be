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


def test_a_filled_folder_becomes_the_target_when_the_block_succeeds(tmp_path):
    from maskds.core.atomic import atomic_dir

    target = tmp_path / "out"
    with atomic_dir(target, "writing") as work:
        assert work.is_dir() and not any(work.iterdir()) and not target.exists()
        (work / "sub").mkdir()
        (work / "sub" / "a.txt").write_text("whole")
    assert (target / "sub" / "a.txt").read_text() == "whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_a_failing_block_leaves_neither_a_temporary_folder_nor_the_target(tmp_path):
    from maskds.core.atomic import atomic_dir

    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out", "writing") as work:
            (work / "half.txt").write_text("half")
            raise RuntimeError("killed")
    assert not any(tmp_path.iterdir())


def test_replace_swaps_an_existing_target_and_a_failure_keeps_it(tmp_path):
    from maskds.core.atomic import atomic_dir

    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target, "building", replace=True) as work:
            (work / "new.txt").write_text("half")
            raise RuntimeError("killed")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_dir(target, "building", replace=True) as work:
        (work / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_without_replace_a_non_empty_target_is_left_as_it_was(tmp_path):
    from maskds.core.atomic import atomic_dir

    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(OSError):
        with atomic_dir(target, "writing") as work:
            (work / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
