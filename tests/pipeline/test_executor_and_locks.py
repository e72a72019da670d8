import json
import os
import socket
import subprocess
import sys

import pytest
from dask.distributed import Client, LocalCluster

from terraseg.pipeline.errors import LockedError
from terraseg.pipeline.executor import InProcessExecutor, ordered_map
from terraseg.pipeline.locks import lock_path, output_lock
from terraseg.workflows.executor import DaskExecutor


def add(a, b):
    return a + b


def fail(_):
    raise ValueError("bad block")


def test_in_process_handles_pass_results_and_errors_on():
    executor = InProcessExecutor()
    one = executor.submit(add, 1, 2, key="one")
    two = executor.submit(add, one, 10, key="two")
    assert two.result() == 13
    broken = executor.submit(fail, 0, key="broken")
    after = executor.submit(add, broken, 1, key="after")  # a failed input fails its users
    assert isinstance(executor.error(after), ValueError)
    with pytest.raises(ValueError, match="bad block"):
        after.result()


def test_ordered_map_is_ordered_and_bounded_on_both_executors():
    items = list(range(20))
    expected = [i + 1 for i in items]
    local = list(ordered_map(InProcessExecutor(), add, items, 1, key=str, ahead=3))
    assert local == expected
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        executor = DaskExecutor(client)
        assert executor.threads == 2
        remote = list(ordered_map(executor, add, items, 1, key=lambda i: f"add-{i}", ahead=3))
        assert remote == expected
        broken = executor.submit(fail, 0, key="broken")
        done = executor.wait_first([broken])
        assert broken in done and isinstance(executor.error(broken), ValueError)


def test_second_holder_is_refused_with_one_line_naming_the_first(tmp_path):
    out = tmp_path / "map.tif"
    with output_lock(out, "run-one"):
        with pytest.raises(LockedError) as refused, output_lock(out):
            pass
        message = str(refused.value)
        assert "\n" not in message and str(out) in message
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert lock_path(out).exists()
    assert not lock_path(out).exists()  # released


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "map.tif"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    holder = {"host": socket.gethostname(), "pid": int(gone.stdout), "started": 0.0, "run_id": "x"}
    lock_path(out).write_text(json.dumps(holder))
    with output_lock(out) as mine:
        assert json.loads(lock_path(out).read_text())["pid"] == mine.pid == os.getpid()


def test_lock_held_on_another_host_is_not_taken_over(tmp_path):
    out = tmp_path / "map.tif"
    holder = {"host": "elsewhere.invalid", "pid": 1, "started": 0.0, "run_id": "x"}
    lock_path(out).write_text(json.dumps(holder))
    with pytest.raises(LockedError, match=r"pid 1 on elsewhere\.invalid"), output_lock(out):
        pass
