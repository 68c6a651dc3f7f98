"""All runtime settings in one place, read from `LOOPLINE_*` environment variables.

Only the app wiring (CLI, worker start-up) reads settings; factories below it take
explicit arguments, so they can be built and tested without an environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from loopline.processors.weights import DEFAULT_CACHE_DIR

LOCAL_KAFKA_PORT = 39092
LOCAL_REDIS_PORT = 36379
LOCAL_LLM_PORT = 38080


class Settings(BaseSettings):
    """Environment variables are the field names in upper case, prefixed `LOOPLINE_`."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", extra="ignore")

    kafka_bootstrap: str = Field(
        default=f"127.0.0.1:{LOCAL_KAFKA_PORT}",
        description="Kafka bootstrap servers, host:port[,host:port]. "
        "Default: the broker `loopline infra up` starts.",
    )
    redis_url: str = Field(
        default=f"redis://127.0.0.1:{LOCAL_REDIS_PORT}/0",
        description="Redis URL. Default: the server `loopline infra up` starts.",
    )
    state_dir: Path = Field(
        default=Path(".loopline"),
        description="Where the local launcher keeps service data, logs and pid files.",
    )
    cache_dir: Path = Field(
        default=DEFAULT_CACHE_DIR,
        description="Where verified weights (LLM, sentence encoder) and the encoder's "
        "embedding cache are kept.",
    )
    artifacts: Path | None = Field(
        default=None,
        description="The artifact store: a directory every trainer and worker of a task can "
        "reach (a shared mount on several machines). Default: STATE_DIR/artifacts.",
    )
    encoder_threads: int = Field(
        default=0,
        ge=0,
        description="ONNX Runtime threads of an encoder student (0: one per core).",
    )

    llm_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:38080/v1. "
        "Unset: no LLM, unsure items go straight to review.",
    )
    llm_model: str = Field(default="qwen2.5-coder-1.5b", description="Model name sent to the LLM.")
    llm_api_key: SecretStr | None = Field(default=None, description="Bearer token, if needed.")
    llm_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Per-request timeout. A local server's first answer computes the whole "
        "prompt prefix, which takes about a minute for 77 labels on 2 cores.",
    )
    llm_max_concurrency: int = Field(
        default=1,
        ge=1,
        description="Requests in flight per worker; raise it for servers with parallel slots.",
    )
    llm_retries: int = Field(default=3, ge=0, description="Retries on 429/5xx/timeouts.")
    llm_rate_limit_per_s: float | None = Field(
        default=None, gt=0, description="Requests per second shared by all workers."
    )
    llm_daily_token_budget: int | None = Field(
        default=None, gt=0, description="Tokens per day shared by all workers."
    )
    llm_cache_ttl_s: int = Field(
        default=7 * 24 * 3600, gt=0, description="How long LLM answers stay in the Redis cache."
    )
    llm_price_per_1k_tokens: float = Field(
        default=0.0, ge=0, description="For cost estimates in evaluate and bench."
    )

    llm_batch_size: int = Field(
        default=8, ge=1, description="Most unsure items the teach agent sends the LLM at once."
    )
    llm_batch_window_s: float = Field(
        default=0.2, gt=0, description="Longest wait to fill an LLM batch."
    )

    review_tokens_topic: str = Field(
        default="loopline.review.tokens",
        description="Compacted topic with the hashes of reviewers' API tokens, shared by "
        "every review service.",
    )
    review_write_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long the review service waits for Kafka to acknowledge an answer "
        "before it answers 503.",
    )

    trainer_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a trainer's lease on its task lasts unless renewed; another "
        "trainer takes over this long after one dies.",
    )

    batch_size: int = Field(default=256, ge=1, description="Most items the student sees at once.")
    batch_window_s: float = Field(
        default=0.02, gt=0, description="Longest wait to fill a batch (bounds latency)."
    )

    @property
    def artifacts_dir(self) -> Path:
        return self.artifacts if self.artifacts is not None else self.state_dir / "artifacts"
