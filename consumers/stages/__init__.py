"""The pipeline's worker stages, each on its own threads, linked by queues.

``prepare`` (fetch, then decode) -> ``infer`` (micro-batches through the fleet) -> ``write``
(store, then publish); ``dead_letters`` beside them. Every item that enters a stage leaves it
through exactly one of: the next stage's queue, ``Outlets.fail`` (a permanent error:
dead-letter it) or ``Outlets.finish`` (stored, removed, dead-lettered or abandoned at
shutdown). Transient faults are retried inside the stage (fetch and decode within a per-item
budget), never dead-lettered while nothing succeeds.
"""

from consumers.retry import RetryPolicy
from consumers.stages.base import Fail, Finish, Outlets, Stage
from consumers.stages.dead_letters import DeadLetterer
from consumers.stages.infer import Inferencer
from consumers.stages.prepare import Preparer
from consumers.stages.write import Storer

__all__ = [
    "DeadLetterer",
    "Fail",
    "Finish",
    "Inferencer",
    "Outlets",
    "Preparer",
    "RetryPolicy",
    "Stage",
    "Storer",
]
