"""d2im_tf.io: the run-folder lock (one process per folder; a killed holder's lock is taken over)."""

import os

import pytest

from d2im_tf import io


def test_one_process_per_folder_and_a_stale_lock_is_taken_over(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "run"
    with io.folder_lock(folder, "run folder"):
        assert (folder / io.LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert not (folder / io.LOCK_FILE).exists()  # released
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / io.LOCK_FILE).write_text(f"{holder.pid}\n")
        with pytest.raises(io.OutputError, match=f"run: the run folder is in use by process {holder.pid} "):
            with io.folder_lock(folder, "run folder"):
                pass
        with pytest.raises(io.OutputError, match=f"in use by process {holder.pid}"):
            io.check_unlocked(folder, "run folder")
    finally:
        holder.kill()
        holder.wait()
    io.check_unlocked(folder, "run folder")  # the holder was killed: its lock is stale
    with io.folder_lock(folder, "run folder"):  # and is taken over
        assert (folder / io.LOCK_FILE).read_text() == f"{os.getpid()}\n"
