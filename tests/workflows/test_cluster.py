"""The LocalCluster terraseg starts: worker environment and Dask settings."""

from __future__ import annotations

import os

import dask.config

from terraseg.workflows.cluster import LOCAL_CLUSTER_CONFIG, WORKER_GLIBC_TUNABLES, dask_client


def _worker_settings() -> dict[str, object]:
    return {
        "tunables": os.environ.get("GLIBC_TUNABLES"),
        "gdal_cache": os.environ.get("GDAL_CACHEMAX"),
        **{key: dask.config.get(key) for key in LOCAL_CLUSTER_CONFIG},
    }


def test_local_workers_get_the_malloc_tunables_and_a_quiet_dask() -> None:
    environment = os.environ.copy()
    before = {name: os.environ.get(name) for name in ("GLIBC_TUNABLES", "GDAL_CACHEMAX")}
    with dask_client(None, workers=1, memory_limit=None) as client:
        (settings,) = client.run(_worker_settings).values()
        # the nanny writes its pre-spawn environment into this process while the cluster runs
        assert os.environ.get("OMP_NUM_THREADS") == environment.get("OMP_NUM_THREADS", "1")
    # values a user has set are kept
    assert settings["tunables"] == (before["GLIBC_TUNABLES"] or WORKER_GLIBC_TUNABLES)
    assert settings["gdal_cache"] == (before["GDAL_CACHEMAX"] or "128")
    assert settings["distributed.worker.profile.enabled"] is False
    assert settings["distributed.admin.tick.interval"] == "500ms"
    # the driver's own environment and configuration are as they were
    assert os.environ == environment
    assert dask.config.get("distributed.worker.profile.enabled") is True


def test_workers_started_without_tuning_have_no_tunables() -> None:
    with dask_client(None, workers=1, memory_limit=None, tune_malloc=False) as client:
        (settings,) = client.run(_worker_settings).values()
    assert settings["tunables"] is None
