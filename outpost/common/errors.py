"""Error codes shared by the service (JSON error bodies) and the clients."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_REQUEST = "BAD_REQUEST"
    UNPROCESSABLE = "UNPROCESSABLE_ENTITY"
    SEMANTICALLY_INVALID = "SEMANTICALLY_INVALID"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    FUNCTION_NOT_ALLOWED = "FUNCTION_NOT_ALLOWED"
    NOT_FOUND = "NOT_FOUND"
    TASK_PAYLOAD_TOO_LARGE = "TASK_PAYLOAD_TOO_LARGE"
    LOCKED = "ENDPOINT_LOCKED"
    RATE_LIMITED = "RATE_LIMITED"
    INTERNAL = "INTERNAL_ERROR"
    USER_CONFIG_INVALID = "USER_ENDPOINT_CONFIG_INVALID"
    USER_ENDPOINT_REFUSED = "USER_ENDPOINT_START_REFUSED"
    UNAVAILABLE = "SERVICE_UNAVAILABLE"


class TaskErrorCode(StrEnum):
    """``error_details.code`` of a failed task."""

    EXECUTION = "TaskExecutionFailed"
    SERIALIZATION = "SerializationError"
    RESULT_TOO_LARGE = "MaxResultSizeExceeded"
    WORKER_LOST = "WorkerLost"
    ENDPOINT_LOST = "EndpointLostTask"
    FUNCTION_NOT_ALLOWED = "FunctionNotAllowed"
    WALLTIME = "WalltimeExceeded"
    USER_ENDPOINT_FAILED = "UserEndpointStartFailed"
    ENDPOINT_DELETED = "EndpointDeleted"
    BLOCK_FAILED = "BlockFailed"  # the batch scheduler refused or ended a block's job
    NOT_QUEUED = "TaskNotQueued"  # the broker was unreachable; the submit got a 503


class SerializationError(Exception):
    """A value could not be serialized or deserialized; the message says which and why."""
