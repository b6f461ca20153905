"""`--cluster ADDRESS` and `--worker-cpus N`: where the work runs, and running it on Ray's workers.

ADDRESS is `local` (this process, no Ray: the default), `auto` (the cluster that `ray start` runs on
this machine, or $RAY_ADDRESS), `HOST:PORT` (a cluster's head, from a machine that is one of its
nodes) or `ray://HOST:PORT` (Ray Client: from any machine that reaches the head's client port,
10001 by default). Ray comes with the extra humwatch[cluster]; without it any address but `local`
is refused with the install command. Ray is imported only when a cluster is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

import click

from edge.core.options import TextRule, click_options, setting

LOCAL = "local"
FORMS = "local, auto, HOST:PORT or ray://HOST:PORT"
INSTALL = "pip install 'humwatch[cluster]' (in a clone: uv sync)"
RESTARTS = 3  # a worker that dies is started again, with the task it held, this many times


class ClusterError(RuntimeError):
    """A cluster that cannot be used or that lost a worker for good; the message says what to do."""


def check_address(text: str) -> str:
    """The address as given; ValueError for another form, or when Ray is not installed."""
    if text != LOCAL:
        host, _, port = text.removeprefix("ray://").rpartition(":")
        if text != "auto" and not (host and "/" not in host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{text!r}: expected {FORMS}, e.g. ray://192.168.1.20:10001")
        if importlib.util.find_spec("ray") is None:
            raise ValueError(f"{text}: Ray is not installed here; install it with {INSTALL}, or leave --cluster out")
    return text


def cluster_setting() -> Any:
    """--cluster, a field of a command's options record."""
    return setting(LOCAL, "Run on a Ray cluster (extra humwatch[cluster]; see docs/cluster.md).",
                   TextRule("address", check_address), metavar="local|auto|HOST:PORT|ray://HOST:PORT", show_default=True)


def worker_cpus_setting() -> Any:
    """--worker-cpus, a field of a command's options record."""
    return setting(1, "With --cluster: CPUs (and threads) of each Ray worker; each worker loads the model once.",
                   click.IntRange(min=1), show_default=True)


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    """Where a command's work runs."""

    cluster: str = cluster_setting()
    worker_cpus: int = worker_cpus_setting()


cluster_options = click_options(ClusterOptions)  # the --cluster and --worker-cpus options of a command


@contextlib.contextmanager
def connected(address: str) -> Iterator[ModuleType]:
    """Ray, connected to the cluster at `address` for the duration; ClusterError when none answers there."""
    import ray

    if address != "auto":  # Ray itself would wait minutes for an address where nothing listens
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as error:
            raise ClusterError(f"--cluster {address}: nothing answers at {host}:{port} ({error.strerror or error}); is "
                               "'ray start --head' running there, and the port open to this machine?") from error
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError as error:
        raise ClusterError(f"--cluster {address}: no Ray cluster answers there ({error}); start one with "
                           "'ray start --head' (docs/cluster.md)") from error
    try:
        yield ray
    finally:
        ray.shutdown()


def worker_count(ray: ModuleType, cpus: int, items: int) -> int:
    """One worker per `cpus` CPUs of the cluster, and no more than there are items."""
    total = int(ray.cluster_resources().get("CPU", 0))
    if total < cpus:
        raise ClusterError(f"--worker-cpus {cpus}: the cluster has {total} CPUs; give at most {total} or add nodes")
    return max(1, min(items, total // cpus))


@contextlib.contextmanager
def actor_pool(ray: ModuleType, worker: type, args: tuple, cpus: int, count: int):
    """Ray's ActorPool of `count` actors of class `worker` (built from `args`, each holding `cpus`
    CPUs) for the duration. A worker that dies is started again with the task it held (RESTARTS
    times); the actors end with the block."""
    from ray.util import ActorPool

    remote = ray.remote(worker).options(num_cpus=cpus, max_restarts=RESTARTS, max_task_retries=RESTARTS)
    actors = [remote.remote(*args) for _ in range(count)]
    try:
        yield ActorPool(actors)
    finally:
        for actor in actors:
            ray.kill(actor)


def finished(ray: ModuleType, pool, submit: Callable[[object, object], object], items: list) -> Iterator:
    """Each item through `submit(actor, item)` (one remote call), results as they finish. The pool
    hands an item to a worker when that worker is free, so one item per worker is out at a time. An
    error raised in a task is raised here as itself; a worker lost for good is a ClusterError."""
    try:
        yield from pool.map_unordered(submit, items)
    except ray.exceptions.RayTaskError as error:
        raise error.cause from error
    except ray.exceptions.RayActorError as error:
        raise ClusterError(f"a Ray worker died {RESTARTS + 1} times ({error}); what was finished is kept: "
                           "check the workers' memory and logs, then run again to go on") from error


def in_order(results: Iterable[tuple[int, object]]) -> Iterator:
    """(index, value) pairs in any order -> the values by index, each as soon as those before it are out."""
    waiting: dict[int, object] = {}
    following = 0
    for index, value in results:
        waiting[index] = value
        while following in waiting:
            yield waiting.pop(following)
            following += 1
