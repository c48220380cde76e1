"""Files written whole or not at all."""

import os

import pytest

from benchmark.files import write_whole


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
