"""Choosing a ``tf.distribute`` strategy, and who writes files in a multi-worker run.

- ``"auto"``: ``MirroredStrategy`` over all local GPUs when there is more than one, else the default strategy.
- ``"none"``: the default (no-op) strategy: one device.
- ``"mirrored"``: ``MirroredStrategy`` over the local GPUs (or the CPU when there is none).
- ``"multi-worker"``: ``MultiWorkerMirroredStrategy``; the cluster comes from the ``TF_CONFIG`` environment
  variable (see docs/TRAINING.md). Every worker runs the same command.

The global batch (the recipe's ``batch_size``) is split across all replicas of all workers.

A lost worker: the workers watch each other through TensorFlow's coordination service heartbeats
(`HEARTBEAT_TIMEOUT` seconds, or the ``TFDEHAZE_HEARTBEAT_TIMEOUT`` environment variable); when one stops answering,
the collective ops of the others fail, and `worker_lost` turns that failure into a `WorkerLostError` naming the
worker, the last checkpoint and how to continue.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # TensorFlow is imported when a strategy is made: the command line reads KINDS before it starts
    import tensorflow as tf

KINDS = ("auto", "none", "mirrored", "multi-worker")

#: Seconds without a heartbeat after which a worker counts as lost (TensorFlow's default is 10).
HEARTBEAT_TIMEOUT = 5.0


class WorkerLostError(RuntimeError):
    """A worker of a multi-worker run stopped answering; training stopped on the others.

    worker: the lost task as ``/job:worker/task:1``; address: its ``host:port`` from ``TF_CONFIG``; checkpoint: the
    latest checkpoint of the run (None when there is none yet); command: the command that continues the run (set by
    ``tfdehaze-train``; None: "the same command plus --resume"). ``str(error)`` is one line with all of them.

    Examples:
        >>> from tfdehaze.train import WorkerLostError
        >>> error = WorkerLostError("/job:worker/task:1", "10.0.0.2:2222", "runs/x/checkpoints/ckpt-4")
        >>> isinstance(error, RuntimeError), error.address
        (True, '10.0.0.2:2222')
        >>> print(error)  # doctest: +NORMALIZE_WHITESPACE
        lost worker /job:worker/task:1 (10.0.0.2:2222): it stopped answering, so training stopped. Last checkpoint:
        runs/x/checkpoints/ckpt-4. To continue, restart every worker (each with its own TF_CONFIG) with the same
        command plus --resume
        >>> error.command = "tfdehaze-train minet --out runs/x --distribute multi-worker --resume"
        >>> str(error).endswith("with: tfdehaze-train minet --out runs/x --distribute multi-worker --resume")
        True
    """

    def __init__(self, worker: str, address: str | None, checkpoint: str | None, command: str | None = None):
        super().__init__(worker, address, checkpoint)
        self.worker, self.address, self.checkpoint, self.command = worker, address, checkpoint, command

    def __str__(self) -> str:
        name = f"{self.worker} ({self.address})" if self.address else self.worker
        how = f"with: {self.command}" if self.command else "with the same command plus --resume"
        return (f"lost worker {name}: it stopped answering, so training stopped. Last checkpoint: "
                f"{self.checkpoint or 'none yet (--resume starts from step 0)'}. To continue, restart every worker "
                f"(each with its own TF_CONFIG) {how}")


def communication_errors() -> tuple[type[BaseException], ...]:
    """What the collective ops of a multi-worker run raise when a peer is gone.

    Unavailable (heartbeats stopped, or the coordination service's leader is unreachable), Cancelled / Aborted (ops
    aborted after a peer failed), DeadlineExceeded (an RPC that timed out) and Internal (some gRPC failures).

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.train.strategy import communication_errors
        >>> tf.errors.UnavailableError in communication_errors(), ValueError in communication_errors()
        (True, False)
    """
    import tensorflow as tf

    return (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError,
            tf.errors.DeadlineExceededError, tf.errors.InternalError)


def _heartbeat_timeout() -> float:
    text = os.environ.get("TFDEHAZE_HEARTBEAT_TIMEOUT")
    if text is None:
        return HEARTBEAT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"TFDEHAZE_HEARTBEAT_TIMEOUT must be a positive number of seconds, got {text!r}")
    return value


def _configure_heartbeats(resolver) -> None:
    """Start TensorFlow's coordination service as ``MultiWorkerMirroredStrategy`` would, with our heartbeat timeout.

    The strategy configures the service itself only when nobody has (TensorFlow 2.21,
    ``collective_all_reduce_strategy.py``), with the default 10 s timeout and no argument to change it.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    cluster = resolver.cluster_spec()
    if not cluster.jobs or resolver.task_type not in ("chief", "worker") or context.context().coordination_service:
        return
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster.num_tasks(job))
            for job in ("chief", "worker") if job in cluster.jobs]
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(cluster),
        coordinated_jobs=jobs, heartbeat_timeout_in_ms=int(_heartbeat_timeout() * 1000))

# One strategy object per kind and process: a second MirroredStrategy in the same process reuses collective instance
# keys and fails with "Shape mismatch in the collective instance" (TensorFlow issue 62790), and
# MultiWorkerMirroredStrategy must be created only once per process anyway.
_CREATED = {}


def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """A ``tf.distribute.Strategy`` for ``kind`` in ``KINDS`` (the same object on later calls).

    Examples:
        >>> import tensorflow as tf
        >>> from tfdehaze.train import make_strategy
        >>> strategy = make_strategy("none")
        >>> strategy is tf.distribute.get_strategy(), strategy.num_replicas_in_sync
        (True, 1)
        >>> make_strategy("tpu")
        Traceback (most recent call last):
        ...
        ValueError: unknown distribution 'tpu'; choose one of auto, none, mirrored, multi-worker
    """
    if kind not in KINDS:
        raise ValueError(f"unknown distribution {kind!r}; choose one of {', '.join(KINDS)}")
    import tensorflow as tf

    if kind == "auto":
        kind = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind not in _CREATED:
        if kind == "mirrored":
            _CREATED[kind] = tf.distribute.MirroredStrategy()
        else:
            resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
            _configure_heartbeats(resolver)
            _CREATED[kind] = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    return _CREATED[kind]


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True where this process should write the run directory (always, except on non-chief workers).

    Follows the TensorFlow multi-worker guide: the chief is task ``chief``, or ``worker`` 0 when there is no chief.

    Examples:
        >>> from types import SimpleNamespace
        >>> import tensorflow as tf
        >>> from tfdehaze.train import is_chief
        >>> is_chief(tf.distribute.get_strategy())  # a single process
        True

        What the workers of a two-worker ``MultiWorkerMirroredStrategy`` see (their ``TF_CONFIG``):

        >>> cluster = tf.train.ClusterSpec({"worker": ["host0:2222", "host1:2222"]})
        >>> def worker(task_id):
        ...     resolver = SimpleNamespace(task_type="worker", task_id=task_id, cluster_spec=lambda: cluster)
        ...     return SimpleNamespace(cluster_resolver=resolver)
        >>> is_chief(worker(0)), is_chief(worker(1))
        (True, False)
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


_TASK = r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)"
# Where TensorFlow's messages name the peer (not this task): the coordination service's list of unhealthy tasks,
# and the remote target of a failed RPC (e.g. the heartbeat to a dead leader).
_PEER_PATTERNS = (r"unhealthy[^\n]*:\s*" + _TASK, r"remote target " + _TASK, r"[Tt]ask " + _TASK)


def worker_lost(strategy: tf.distribute.Strategy, error: BaseException,
                checkpoint: str | None = None) -> WorkerLostError | None:
    """The `WorkerLostError` to raise for ``error``, or None when it is not a lost peer of a multi-worker run.

    ``error`` counts when it is one of `communication_errors` (an ``InternalError`` only when it mentions the
    collective ops, the coordination service or an RPC) and ``strategy`` spans several tasks. The lost worker is
    the task TensorFlow's message names (other than this one); with two workers, the other one.

    Examples:
        >>> from types import SimpleNamespace
        >>> import tensorflow as tf
        >>> from tfdehaze.train import worker_lost
        >>> cluster = tf.train.ClusterSpec({"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]})
        >>> resolver = SimpleNamespace(task_type="worker", task_id=0, cluster_spec=lambda: cluster)
        >>> strategy = SimpleNamespace(cluster_resolver=resolver)
        >>> message = ("Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks "
        ...            "are unhealthy (stopped sending heartbeats):\\n/job:worker/replica:0/task:1")
        >>> lost = worker_lost(strategy, tf.errors.UnavailableError(None, None, message), "ckpt-4")
        >>> lost.worker, lost.address, lost.checkpoint
        ('/job:worker/task:1', '10.0.0.2:2222', 'ckpt-4')
        >>> worker_lost(strategy, ValueError("bad value")) is None  # not a communication error
        True
        >>> worker_lost(tf.distribute.get_strategy(), tf.errors.UnavailableError(None, None, message)) is None
        True
    """
    import tensorflow as tf

    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type or not isinstance(error, communication_errors()):
        return None
    cluster = resolver.cluster_spec().as_dict()
    tasks = [(job, index) for job, addresses in cluster.items() if isinstance(addresses, list)
             for index in range(len(addresses))]
    me = (resolver.task_type, int(resolver.task_id or 0))
    others = [task for task in tasks if task != me]
    if not others:
        return None
    text = str(getattr(error, "message", "") or error)
    if isinstance(error, tf.errors.InternalError) and not re.search("collective|coordination|rpc|heartbeat", text,
                                                                    re.IGNORECASE):
        return None
    named = [(job, int(index)) for pattern in _PEER_PATTERNS for job, index in re.findall(pattern, text)]
    named = [task for task in named if task in others]
    if named:
        lost = named[0]
    elif len(others) == 1:
        lost = others[0]
    else:
        names = ", ".join(f"/job:{job}/task:{index} ({cluster[job][index]})" for job, index in others)
        return WorkerLostError(f"one of {names}", None, checkpoint)
    return WorkerLostError(f"/job:{lost[0]}/task:{lost[1]}", cluster[lost[0]][lost[1]], checkpoint)
