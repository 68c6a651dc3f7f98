"""loopline's exceptions. Expected errors carry a message that says what to do next.

Hierarchy::

    LooplineError
    ├── ConfigError         a task file, setting or argument is wrong
    ├── DataError           a line of a JSONL/CSV data file cannot be used
    ├── InputError          a Kafka message cannot be accepted (it goes to deadletter)
    ├── ModelError          a model directory is missing, incomplete or for another task
    ├── StudentError        the student raised on one text (the item goes to review)
    ├── ReviewError         a review request cannot be done (the API answers 4xx)
    │   ├── InvalidAnswer       the answer does not fit the task (422)
    │   └── LeaseNotHeld        the lease expired, was released, or is someone else's (409)
    └── ServiceError        Kafka, Redis, the LLM server or a tool they need is not there
        └── LLMError        an LLM call gave no usable answer
            ├── LLMUnavailable    down, timing out, rate-limited, or circuit open
            ├── LLMBadAnswer      answered, but not with the requested structure
            ├── BudgetExhausted   the shared daily token budget is spent
            └── LLMLimitsUnavailable  the shared budget or rate limit cannot be checked (Redis)

Expected errors in a stream (InputError, LLMError) route the item to `deadletter` or
`review`; anything else is a bug and crashes the worker loudly.
"""


class LooplineError(Exception):
    """Base class: catch this to handle every error loopline raises on purpose."""


class ConfigError(LooplineError):
    """A task file, setting or command-line argument is wrong."""


class DataError(LooplineError):
    """A line of a data file cannot be used; the message names the file and line."""


class InputError(LooplineError):
    """A message cannot be accepted. `code` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ModelError(LooplineError):
    """A model directory is missing, incomplete or made for another task."""


class StudentError(LooplineError):
    """The student raised on this one text (its batch was retried text by text to find it)."""

    code = "student_error"


class ReviewError(LooplineError):
    """A review request cannot be done; the message says why and what to do instead."""


class InvalidAnswer(ReviewError):
    """An answer does not fit the task (labels, spans, decision): nothing was written."""


class LeaseNotHeld(ReviewError):
    """The lease expired, was released, or belongs to another reviewer or item."""


class ServiceError(LooplineError):
    """A service or tool loopline needs is not reachable or not installed."""


class LLMError(ServiceError):
    """An LLM call gave no usable answer. `code` is the machine-readable reason."""

    code = "llm_error"


class LLMUnavailable(LLMError):
    """The LLM is down, too slow, rate-limited, or its circuit breaker is open."""

    code = "llm_unavailable"


class LLMBadAnswer(LLMError):
    """The LLM answered, but not with the structure that was asked for."""

    code = "llm_bad_answer"


class BudgetExhausted(LLMError):
    """The shared daily token budget for the LLM is spent."""

    code = "llm_budget_exhausted"


class LLMLimitsUnavailable(LLMError):
    """The shared token budget or rate limit cannot be checked (Redis is unreachable): no call
    is made rather than spending blindly; calls resume once Redis answers."""

    code = "llm_limits_unavailable"
