import subprocess
import sys
import time

from workflows.bench_utils import TreeRSS

# a child that touches 200 MiB and holds it long enough for several samples
HOLD_200_MIB = "import time; b = b'x' * (200 * 2**20); time.sleep(0.6)"


def test_tree_rss_counts_children_except_while_paused():
    with TreeRSS(interval=0.02) as rss:
        with rss.paused():
            subprocess.run([sys.executable, "-c", HOLD_200_MIB], check=True)
        time.sleep(0.2)  # sampled again after the pause
    assert rss.root_peak_mib > 0
    assert rss.peak_mib < rss.root_peak_mib + 150  # the paused child is not in the sum

    with TreeRSS(interval=0.02) as rss:
        subprocess.run([sys.executable, "-c", HOLD_200_MIB], check=True)
    assert rss.peak_mib > rss.root_peak_mib + 190
