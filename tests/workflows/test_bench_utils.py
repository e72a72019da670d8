import subprocess
import sys
import time
from contextlib import nullcontext

from terraseg.workflows.bench_utils import TreeRSS

# a child that touches 300 MiB and holds it long enough for several samples
HOLD_300_MIB = "import time; b = b'x' * (300 * 2**20); time.sleep(0.6)"


def _peak(child: bool, paused: bool) -> float:
    """Peak tree RSS (MiB) over a second, with or without the child, sampling paused or not."""
    with TreeRSS(interval=0.02) as rss:
        time.sleep(0.2)
        if child:
            with rss.paused() if paused else nullcontext():
                subprocess.run([sys.executable, "-c", HOLD_300_MIB], check=True)
        time.sleep(0.2)
    return rss.peak_mib


def test_tree_rss_counts_children_except_while_paused():
    # the test process may have other children (servers of other tests): compare with its tree
    alone = _peak(child=False, paused=False)
    assert alone > 0
    assert _peak(child=True, paused=True) < alone + 150
    assert _peak(child=True, paused=False) > alone + 250
