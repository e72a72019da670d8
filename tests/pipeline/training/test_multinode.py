"""Multi-node training on one machine: two torchrun "nodes" of one process each.

Each node is its own torchrun process (``--nnodes 2 --nproc-per-node 1``) meeting the
other through a c10d rendezvous on 127.0.0.1, as two machines of a cluster do. The
trained weights must equal those of ``--devices 2`` on one node, tensor for tensor.
"""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent
TRAIN = ["train", "--backbone", "mobilenetv2", "--width-multiplier", "0.25", "--members", "1",
         "--crop-size", "32",
         "--batch-size", "2", "--samples-per-epoch", "8", "--num-workers", "0", "--epochs", "1",
         "--accelerator", "cpu", "--threads", "1", "--no-track"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model" / "weights.pt", weights_only=True)


@pytest.mark.slow  # two torchrun launchers and the --devices 2 run: about 30 s on 2 cores
def test_two_torchrun_nodes_equal_two_local_devices(store, tmp_path):
    local = tmp_path / "local"
    subprocess.run([str(BIN / "terraseg"), "-q", *TRAIN, "--data", str(store), "--out", str(local),
                    "--devices", "2"], check=True, capture_output=True)  # fmt: skip
    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                str(BIN / "torchrun"),
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(rank),
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                "--rdzv-id",
                "terraseg-test",
                "-m",
                "terraseg.workflows.cli.main",
                "-q",
                *TRAIN,
                "--data",
                str(store),
                "--out",
                str(tmp_path / "nodes"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    for node in nodes:
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr[-2000:]
    expected, got = weights(local), weights(tmp_path / "nodes")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
