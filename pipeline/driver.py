"""What every driver of a run holds while it works: absolute paths, the run directory's lease, its Ray session.

`lfme run` (`pipeline.runner`) and `lfme tune` (`pipeline.tune`) start the
same way and end the same way: the config's paths made absolute (Ray workers
do not run in the driver's working directory), the lease taken so that a
second driver refuses at once, a Ray session opened on first use; at the end
the session closed and the lease given back, whatever happened in between.
A caller that holds a lease or a session already (the CLI takes the lease
before its heavy imports, and closes Ray after its last line) passes them in
and keeps them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from lfme import storage
from pipeline.lease import Lease
from pipeline.ray_session import RaySession
from rundir.config import Config, with_absolute_paths


def resolved(config: Config, run_dir: str | None) -> tuple[Config, str]:
    """The config with absolute paths, and the absolute run directory (`run_dir`, else the config's)."""
    return with_absolute_paths(config), storage.absolute(run_dir or config.run_dir)


@contextmanager
def holding(
    run_dir: str, config: Config, log: Callable[[str], None], lease: Lease | None = None, ray: RaySession | None = None
) -> Iterator[tuple[Lease, RaySession]]:
    """(lease, Ray session) for the run; those made here are given back on the way out, the caller's are left to it."""
    own_lease = lease is None
    if lease is None:
        lease = Lease(run_dir, log=log)
        lease.acquire()
    session = ray if ray is not None else RaySession(config.ray, log)
    try:
        yield lease, session
    finally:
        if ray is None:
            session.close()
        if own_lease:
            lease.release()
