"""The LLM teacher: an OpenAI-compatible client, prompts, answer parsing, shared limits,
and a local llama.cpp model. Importing this package registers `loopline.LLMTeacher.v1`."""

from loopline.processors.llm.alignment import Alignment, align_mentions
from loopline.processors.llm.breaker import CircuitBreaker
from loopline.processors.llm.budget import RateLimiter, TokenBudget
from loopline.processors.llm.cache import ResponseCache
from loopline.processors.llm.client import ChatClient, Completion, Usage
from loopline.processors.llm.prompts import Example, Prompt, build_prompt
from loopline.processors.llm.teacher import LLMAnswer, LLMTeacher, make_llm_teacher

__all__ = [
    "Alignment",
    "ChatClient",
    "CircuitBreaker",
    "Completion",
    "Example",
    "LLMAnswer",
    "LLMTeacher",
    "Prompt",
    "RateLimiter",
    "ResponseCache",
    "TokenBudget",
    "Usage",
    "align_mentions",
    "build_prompt",
    "make_llm_teacher",
]
