"""Files written whole or not at all."""

import errno
import os
import re

import pytest

from benchmark.files import check_folder, write_whole


def test_a_file_is_replaced_whole_and_a_failed_write_leaves_the_old_one_and_no_partial(tmp_path):
    path = tmp_path / "sub" / "results.csv"
    assert write_whole(path, lambda partial: partial.write_text("a,b\n1,2\n")) == path
    assert path.read_text() == "a,b\n1,2\n"

    def fails(partial):
        partial.write_text("a,b\n3")  # half a file, then the writer dies
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_whole(path, fails)
    assert path.read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.csv"]


def test_the_partial_file_is_named_for_its_process_so_concurrent_writers_do_not_clash(tmp_path):
    seen = []
    write_whole(tmp_path / "prior.pt", lambda partial: (seen.append(partial.name), partial.write_bytes(b"x")))
    assert seen == [f".prior.pt.{os.getpid()}.partial"]


def test_a_failed_write_names_the_file_asked_for_not_the_partial_one(tmp_path):
    folder = tmp_path / "results.csv"
    folder.mkdir()  # a folder where the file should go: the rename fails
    with pytest.raises(IsADirectoryError) as caught:
        write_whole(folder, lambda partial: partial.write_text("a\n"))
    assert caught.value.filename == str(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_a_name_too_long_for_the_partial_file_raises_that_error_and_names_the_file(tmp_path):
    path = tmp_path / ("c" * 250 + ".csv")  # a legal name; the partial one, longer, is not
    with pytest.raises(OSError, match="too long") as caught:  # not masked by the failed clean-up
        write_whole(path, lambda partial: partial.write_text("a\n"))
    assert caught.value.filename == str(path)


def test_a_full_disk_names_the_file_asked_for_and_a_failed_rename_names_it_once(tmp_path):
    def no_space(partial):
        partial.write_text("a")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() raises it: no file named

    with pytest.raises(OSError) as caught:
        write_whole(tmp_path / "results.csv", no_space)
    assert caught.value.filename == str(tmp_path / "results.csv") and list(tmp_path.iterdir()) == []
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        write_whole(tmp_path / "folder", lambda partial: partial.write_text("a"))
    assert str(caught.value) == f"[Errno {errno.EISDIR}] Is a directory: '{tmp_path / 'folder'}'"


@pytest.mark.parametrize("path", ["dangling", "dangling/sub", "loop/x"])
def test_a_folder_behind_a_broken_link_cannot_be_made(tmp_path, path):
    (tmp_path / "dangling").symlink_to(tmp_path / "unmounted")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    link = re.escape(str(tmp_path / path.split("/")[0]))
    with pytest.raises(ValueError, match=f"^--results-dir {re.escape(str(tmp_path / path))}: the folder cannot be "
                                         f"made \\({link} is a broken link\\)$"):
        check_folder("--results-dir", tmp_path / path)
    check_folder("--results-dir", tmp_path / "fine" / "sub")  # a folder that can be made
    assert not (tmp_path / "fine").exists()  # and is not
