"""The driver's Ray: where it connects, that something is there, what it can hold, and when it stops.

- **Where.** `ray.address: null` starts a local Ray of this process's own,
  except where `RAY_ADDRESS` is set: inside a Ray Job the job supervisor sets
  it to the job's cluster, whose workers hold the job's `working_dir`
  package (a Ray of the driver's own has no such package, and its first task
  fails to download it). Like `ray.init()` itself, the driver then joins that
  cluster. `auto`, `host:port` and `ray://host:port` join a cluster.
- **Something is there.** `ray.init` on an address where nothing listens
  waits for minutes without a word. Before the first stage that needs Ray,
  an address with a port is probed over TCP for up to `ray.connect_timeout_s`
  seconds (a cluster that is just starting gets that long); then one line
  names the address (`RayUnreachableError`).
- **What it can hold.** Before each stage, what one task or worker of the
  stage asks for (`stage_request`) is set against the alive nodes. A local
  Ray never grows, so a request none of its nodes can hold fails at once,
  naming the stage, the request and the node (`InsufficientResourcesError`);
  Ray itself would wait forever. A cluster may grow (the autoscaler adds
  nodes): the driver says what it waits for, the autoscaler's messages come
  to the console (`stages.ray_compat.route_worker_output`), and after
  `ray.resource_wait_s` seconds without such a node it gives up the same way.
- **When it stops.** `RaySession.close` shuts down a Ray this driver started
  and disconnects from a cluster it joined (the cluster runs on). The CLI
  closes it after its last line, so that a failure's line is on the console
  before Ray's teardown, which runs native code that can still end the
  process (Ray's SIGTERM handler in a driver that started a local Ray exits
  with status 1).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

from rundir.config import Config
from rundir.sections import RayConfig, Resources

ADDRESS_ENV = "RAY_ADDRESS"
POLL_S = 5.0  # between two looks at the cluster's nodes while waiting for resources


class RayUnreachableError(ConnectionError):
    """Nothing answers at the Ray address the config (or RAY_ADDRESS) names."""


class InsufficientResourcesError(RuntimeError):
    """A stage asks for more than any node of the cluster has (and, on a cluster, none came in time)."""


def address_to_join(cfg: RayConfig) -> str | None:
    """The cluster address the driver joins, or None to start a local Ray (see the module docstring)."""
    return cfg.address if cfg.address is not None else os.environ.get(ADDRESS_ENV) or None


def host_and_port(address: str) -> tuple[str, int] | None:
    """(host, port) of `host:port` or `ray://host:port`; None for `auto` and other forms Ray resolves itself."""
    text = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float, log: Callable[[str], None] = print) -> None:
    """Raise RayUnreachableError unless a TCP connection to `address` opens within `timeout_s` seconds."""
    target = host_and_port(address)
    if target is None:
        return
    deadline = time.monotonic() + timeout_s
    said = False
    while True:
        try:
            with socket.create_connection(target, timeout=min(5.0, max(timeout_s, 0.1))):
                return
        except OSError as err:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RayUnreachableError(
                    f"ray.address: nothing answers at {address} ({err.strerror or err}) after {timeout_s:.0f} s; "
                    f"start the cluster or fix the address (ray.connect_timeout_s sets how long to try)"
                ) from None
            if not said:
                log(f"ray: nothing answers at {address} yet ({err.strerror or err}); trying for {timeout_s:.0f} s")
                said = True
            time.sleep(min(1.0, left))


def init_ray(cfg: RayConfig, log: Callable[[str], None] = print) -> bool:
    """Connect to Ray; returns True when this call connected (and so must call `ray.shutdown`, which
    stops a local Ray and only disconnects from a cluster); False when Ray was connected already.

    Where the CLI asked for it (`stages.ray_compat.send_ray_output`), what Ray
    forwards from its workers is then routed: our progress lines to the
    console, the rest to the run's log file. Either way the "(task pid=N)"
    prefixes come without colour codes on a stream that is not a terminal.
    """
    import ray

    from stages import ray_compat

    if ray.is_initialized():
        return False
    address = address_to_join(cfg)
    try:
        if address is None:
            # "local": a new Ray of our own. Without an address Ray would join the
            # last cluster `ray start` left on this machine (someone else's run).
            # The dashboard serves the state API Ray Train uses to clean up after a
            # killed driver; bind it to loopback.
            ray.init(
                address="local", num_cpus=cfg.num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                logging_level=logging.WARNING,
                # Ray annotates an int, but passes it on as the node's "GPU" resource, a float like every resource.
                num_gpus=cfg.num_gpus,  # type: ignore[arg-type]
            )
        else:
            if cfg.address is None:
                log(f"ray: joining the cluster at {address} ({ADDRESS_ENV} is set, as inside a Ray Job)")
            ray.init(address=address, logging_level=logging.WARNING)
    except BaseException:  # Ctrl-C while Ray starts: stop what it started so far
        ray.shutdown()
        raise
    ray_compat.route_worker_output()
    return True


# ------------------------------------------------------------------ resources


def _bundle(resources: Resources) -> dict[str, float]:
    bundle = {"CPU": float(resources.cpus_per_worker)}
    if resources.gpus_per_worker:
        bundle["GPU"] = float(resources.gpus_per_worker)
    return bundle


def stage_request(config: Config, stage: str) -> tuple[dict[str, float], int]:
    """What a stage asks Ray for: (one task's or worker's bundle, how many must run at once); count 0: no Ray.

    The experts, cache and evaluate stages run independent tasks (one is
    enough to make progress); the student's Ray Train workers, and a sweep
    trial's, start together or not at all.
    """
    if stage in ("experts", "cache", "evaluate"):
        return _bundle(getattr(config, stage).resources), 1
    if stage in ("distill", "tune"):
        return _bundle(config.distill.resources), config.distill.resources.num_workers
    return {}, 0


def _fits(bundle: dict[str, float], have: dict[str, float]) -> bool:
    return all(have.get(key, 0.0) + 1e-9 >= amount for key, amount in bundle.items())


def shortfall(bundle: dict[str, float], count: int, nodes: list[dict[str, float]]) -> str | None:
    """Why the alive `nodes` (each its total resources) cannot run `count` x `bundle` at once, or None when they can.

    Each bundle must fit one node, and all of them the nodes together (Ray
    Train packs its workers' bundles onto as few nodes as it can).
    """
    if count == 0:
        return None
    if not nodes:
        return "the cluster has no alive node"
    if not any(_fits(bundle, node) for node in nodes):
        return f"no node has that (the nodes have {', '.join(_describe(n) for n in nodes)})"
    total = {key: amount * count for key, amount in bundle.items()}
    have = {key: sum(node.get(key, 0.0) for node in nodes) for key in bundle}
    if not _fits(total, have):
        return f"together they need {_describe(total)} and the cluster has {_describe(have)}"
    return None


def _describe(resources: dict[str, float]) -> str:
    shown = {"CPU": resources.get("CPU", 0.0), **({"GPU": resources["GPU"]} if resources.get("GPU") else {})}
    return "{" + ", ".join(f"{key}: {value:g}" for key, value in shown.items()) + "}"


def alive_nodes() -> list[dict[str, float]]:
    """The total resources of each alive node of the connected cluster."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def wait_for_resources(
    config: Config,
    stage: str,
    local: bool,
    log: Callable[[str], None] = print,
    nodes: Callable[[], list[dict[str, float]]] = alive_nodes,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once the cluster can run `stage` (see the module docstring); raise InsufficientResourcesError otherwise."""
    bundle, count = stage_request(config, stage)
    why = shortfall(bundle, count, nodes())
    if why is None:
        return
    who = f"each of its {count} workers" if count > 1 else "each task"
    asks = f"{stage}: {who} asks for {_describe(bundle)}"
    if local:
        raise InsufficientResourcesError(
            f"{asks}, but {why}, and no node can join this local Ray; lower {_setting(stage)} "
            f"or give Ray more (ray.num_cpus, ray.num_gpus)"
        )
    limit = config.ray.resource_wait_s
    log(f"== {asks}, but {why}: waiting up to {limit:.0f} s for the cluster to grow (ray.resource_wait_s)")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        why = shortfall(bundle, count, nodes())
        if why is None:
            log(f"== {stage}: the cluster can run it now")
            return
    raise InsufficientResourcesError(f"{asks}, but after {limit:.0f} s of waiting {why}; lower {_setting(stage)} or add nodes")


def _setting(stage: str) -> str:
    section = "distill" if stage == "tune" else stage
    return f"{section}.resources"


class RaySession:
    """Ray for one driver: connected on first use (`connect`); `close` lets go of what `connect` took (nothing if Ray was connected already)."""

    def __init__(self, cfg: RayConfig, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.log = log
        self.connected = False
        self.owned = False  # this session connected Ray (started a local one or joined a cluster): close() lets go of it

    def check_reachable(self) -> None:
        """Before any work: the cluster to join answers (nothing to check for a local Ray)."""
        address = address_to_join(self.cfg)
        if address is not None:
            check_reachable(address, self.cfg.connect_timeout_s, self.log)

    def connect(self) -> None:
        if not self.connected:
            self.owned = init_ray(self.cfg, self.log)
            self.connected = True

    def wait_for(self, config: Config, stage: str) -> None:
        """Connect, then wait until the cluster can run `stage` (`wait_for_resources`)."""
        self.connect()
        wait_for_resources(config, stage, local=address_to_join(self.cfg) is None, log=self.log)

    def close(self) -> None:
        """Stop the local Ray this session started, or disconnect from the cluster it joined."""
        if self.owned:
            import ray

            ray.shutdown()
        self.connected = self.owned = False

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
