"""terraseg orchestration: the Click CLI, Dask graph builders, cluster and tracking set-up."""
