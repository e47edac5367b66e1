"""A fix we carry for kafka-python 3.0.12: a JoinGroup/SyncGroup that completes while the
application is outside ``poll()`` is discarded (see ``docs/reliability.md``, "The join race",
for the upstream report).

``BaseCoordinator.join_group_async`` keeps its JoinGroup -> SyncGroup task across polls, so a
short ``poll()`` that gives up does not send a second JoinGroup. But it starts a new task when
the previous one is *done*, whatever its outcome: when the task succeeded on the client's I/O
thread between two polls, the next poll throws the assignment away and joins again (no
``on_partitions_assigned``, heartbeats off meanwhile; a leader rejoining forces the whole group
to rebalance again). The fix is one condition: start a new task only when there is none, or the
previous one failed or belongs to a generation reset since, so a finished join is consumed by
the next poll (as the Java client's ``joinFuture`` is).

The method below is kafka-python's own (Apache-2.0) with that one line changed. It is only
installed over the exact source it was written for: :func:`install_join_fix` raises
:class:`UnsupportedKafkaClient` on any other kafka-python version, or on a 3.0.12 whose method
differs, and the service refuses to start.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from importlib import metadata
from typing import Any

from kafka import errors as Errors  # noqa: N812 - the name of the code it patches
from kafka.coordinator.base import BaseCoordinator
from kafka.structs import MemberState
from kafka.util import Timer

log = logging.getLogger(__name__)

KAFKA_PYTHON_VERSION = "3.0.12"
# sha256 of ``inspect.getsource(BaseCoordinator.join_group_async)`` in that release
_JOIN_SOURCE_SHA256 = "f9b7d8038dabf04d5e43becb43a0c5e24627431d2395c06e12c6c2a805fdf8b5"

ORIGINAL_JOIN_GROUP_ASYNC = BaseCoordinator.join_group_async


class UnsupportedKafkaClient(RuntimeError):
    """The installed kafka-python is not the one our fixes were written for."""


async def _join_group_async(self: Any, timeout_ms: int | None = None) -> bool:  # noqa: C901
    """kafka-python 3.0.12's ``BaseCoordinator.join_group_async`` with the join race fixed:
    the only change is the condition marked FIX."""
    if not self._use_group_apis:
        raise Errors.UnsupportedVersionError("Group Coordinator APIs require 0.9+ broker")
    timer = Timer(timeout_ms)
    while self.need_rejoin():
        if not await self.ensure_coordinator_ready_async(timeout_ms=timer.timeout_ms):
            return False

        # FIX: was `self._join_task is None or self._join_task.is_done`, which discarded a
        # join that succeeded while the application was outside poll(); a finished join is
        # still dropped when it failed or the generation was reset since (not REBALANCING)
        task = self._join_task
        if task is None or (
            task.is_done and (task.failed() or self.state is not MemberState.REBALANCING)
        ):
            if not self.rejoining:
                await self._on_join_prepare_async(
                    self._generation.generation_id,
                    self._generation.member_id,
                    timeout_ms=timer.timeout_ms,
                )
                self.rejoining = True
                self._disable_heartbeat()

            self._join_task = self._manager.call_soon(self._do_join_and_sync_async)

        try:
            assignment_bytes = await self._manager.wait_for(self._join_task, timer.timeout_ms)
        except Errors.KafkaTimeoutError:
            return False
        except (
            Errors.UnknownMemberIdError,
            Errors.RebalanceInProgressError,
            Errors.IllegalGenerationError,
            Errors.MemberIdRequiredError,
        ):
            self._join_task = None
            continue
        except Errors.RetriableError:
            self._join_task = None
            if timer.expired:
                return False
            backoff_ms = self.config["retry_backoff_ms"]
            if timer.timeout_ms is not None:
                backoff_ms = min(backoff_ms, timer.timeout_ms)
            if backoff_ms > 0:
                await self._manager._net.sleep(backoff_ms / 1000)
            continue
        except Errors.KafkaError:
            self._join_task = None
            raise

        self._join_task = None

        with self._lock:
            self.rejoining = False
            self.rejoin_needed = False
            self.state = MemberState.STABLE
            self._enable_heartbeat()
        await self._on_join_complete_async(
            self._generation.generation_id,
            self._generation.member_id,
            self._generation.protocol,
            assignment_bytes,
        )
        return True
    return True


def check_kafka_client() -> None:
    """Raise :class:`UnsupportedKafkaClient` unless kafka-python is the exact release (and
    ``join_group_async`` the exact source) the fix was written for."""
    version = metadata.version("kafka-python")
    if version != KAFKA_PYTHON_VERSION:
        raise UnsupportedKafkaClient(
            f"kafka-python {version} is installed; tagfleet carries a fix for"
            f" kafka-python {KAFKA_PYTHON_VERSION} only (consumers/kafka_fixes.py):"
            f" install kafka-python=={KAFKA_PYTHON_VERSION}"
        )
    source = inspect.getsource(ORIGINAL_JOIN_GROUP_ASYNC)
    if hashlib.sha256(source.encode()).hexdigest() != _JOIN_SOURCE_SHA256:
        raise UnsupportedKafkaClient(
            "kafka-python's BaseCoordinator.join_group_async is not the code"
            " consumers/kafka_fixes.py was written for (a modified install?):"
            f" reinstall kafka-python=={KAFKA_PYTHON_VERSION}"
        )


def install_join_fix() -> None:
    """Install the fixed ``join_group_async`` (idempotent). Raises
    :class:`UnsupportedKafkaClient` when the installed kafka-python is not the one it fixes."""
    if BaseCoordinator.join_group_async is _join_group_async:
        return
    check_kafka_client()
    BaseCoordinator.join_group_async = _join_group_async  # type: ignore[method-assign]
    log.debug("kafka-python join_group_async fix installed")
