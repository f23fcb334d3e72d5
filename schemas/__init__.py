"""streamtune's wire contracts: messages, limits, tasks and topics.

This package depends on nothing else in the project, so producers can import it alone.
"""

from schemas.base import DecodeError, Message
from schemas.codec import dead_letter, decode
from schemas.errors import ContractError, StreamtuneError, UnknownTaskError
from schemas.messages import (
    MESSAGE_TYPES,
    AdapterChunk,
    AdapterEvent,
    AdapterManifest,
    Alert,
    DeadLetter,
    DriftEvent,
    Feedback,
    Interaction,
    JobStatus,
    LabelledExample,
    OffsetRange,
    Prediction,
    TrainJob,
)
from schemas.tasks import TaskSpec, get_task, known_tasks, register_task
from schemas.topics import TopicSpec, topic_specs

__all__ = [
    "MESSAGE_TYPES",
    "AdapterChunk",
    "AdapterEvent",
    "AdapterManifest",
    "Alert",
    "ContractError",
    "DeadLetter",
    "DecodeError",
    "DriftEvent",
    "Feedback",
    "Interaction",
    "JobStatus",
    "LabelledExample",
    "Message",
    "OffsetRange",
    "Prediction",
    "StreamtuneError",
    "TaskSpec",
    "TopicSpec",
    "TrainJob",
    "UnknownTaskError",
    "dead_letter",
    "decode",
    "get_task",
    "known_tasks",
    "register_task",
    "topic_specs",
]
