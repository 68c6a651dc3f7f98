"""The encoder student on the real all-MiniLM-L6-v2 files (fetched from PyPI once per machine):
fidelity of the ONNX export, verified model directories, calibration, the embedding cache."""

from __future__ import annotations

import asyncio
import os
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from loopline.processors.calibration import expected_calibration_error
from loopline.processors.data import LabelledText, read_examples
from loopline.processors.encoder.models import ENCODERS, fetch_encoder
from loopline.processors.encoder.reference import FIDELITY_TEXTS, ReferenceBert, check_fidelity
from loopline.processors.encoder.runtime import SentenceEncoder
from loopline.processors.encoder.student import EncoderStudent
from loopline.processors.isolated import InChildProcess
from loopline.processors.metrics import correct_items
from loopline.processors.registry import make
from loopline.processors.student import RAW
from loopline.processors.students import load_student
from loopline.processors.training import train
from loopline.schemas import ModelError, load_task
from loopline.streams.cli import app
from tests.fixtures.models import EXAMPLES, quick_task

SPEC = ENCODERS["all-minilm-l6-v2"]


@pytest.fixture(scope="module")
def reference_files(weights_cache):
    return fetch_encoder(SPEC, weights_cache, reference=True)


def snips(split: str) -> list[LabelledText]:
    return read_examples(EXAMPLES / "snips" / f"{split}.jsonl", load_task(EXAMPLES / "snips"))


def test_the_verify_command_passes_the_fidelity_check(reference_files):
    result = CliRunner().invoke(app, ["encoder", "verify"])
    assert result.exit_code == 0, result.output
    assert "fidelity check passed" in result.output
    assert SPEC.onnx.sha256 in result.output and SPEC.reference.sha256 in result.output


def test_the_fidelity_check_catches_a_model_that_differs(reference_files):
    encoder = SentenceEncoder(
        reference_files.onnx, reference_files.tokenizer, max_length=SPEC.max_length
    )
    reference = ReferenceBert(
        reference_files.reference,
        attention_heads=SPEC.attention_heads,
        layer_norm_eps=SPEC.layer_norm_eps,
    )
    # One wrong layer (as a wrong export would have) must fail the check; the passing run
    # on all the texts is the verify command's test.
    name = "encoder.layer.5.output.dense.weight"
    reference.weights[name] = reference.weights[name][::-1].copy()
    damaged = check_fidelity(encoder, reference, FIDELITY_TEXTS[:8])
    assert not damaged.passed and damaged.min_cosine < 0.99
    assert "FAILED" in damaged.summary()


def test_a_model_directory_with_a_damaged_encoder_is_refused(snips_encoder_student, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(snips_encoder_student, copy)  # copies, not the cache's hard links
    onnx = copy / "encoder" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model\.onnx has sha256 .*; the model directory is dam"):
        load_student(copy)
    shutil.copyfile(snips_encoder_student / "encoder" / "model.onnx", onnx)
    (copy / "head.npz").unlink()
    with pytest.raises(ModelError, match=r"head\.npz: unreadable"):
        load_student(copy)


def test_any_model_directory_loads_by_its_architecture(snips_encoder_student, tmp_path):
    task = load_task(EXAMPLES / "snips")
    student = load_student(snips_encoder_student, task, threads=1)
    assert isinstance(student, EncoderStudent)
    assert student.meta.architecture == "encoder" and student.meta.encoder == SPEC.name
    by_name = make("loopline.Student.v2", path=snips_encoder_student, task=task)
    assert isinstance(by_name, EncoderStudent) and by_name.version == student.version
    other = task.model_copy(update={"name": "other"})
    with pytest.raises(ModelError, match="made for task 'snips'"):
        load_student(snips_encoder_student, other)


def test_calibration_lowers_the_error_on_unseen_test_data(snips_encoder_student):
    """Raw logistic-regression probabilities are under-confident; the fitted temperature,
    measured on 700 test items the model never saw, brings confidence close to accuracy."""
    student = load_student(snips_encoder_student)
    meta = student.meta.metrics
    assert meta["ece_calibrated"] < meta["ece_raw"]
    test = snips("test")
    vectors = student.encoder.embed([eg.text for eg in test])
    raw = student.raw_scores(vectors)
    errors = {}
    for name, calibration in (("raw", RAW), ("calibrated", student.calibration)):
        answers = student.decode(vectors, raw, calibration)
        confidence = np.array([a.confidence for a in answers])
        correct = correct_items("textcat", test, answers)
        errors[name] = expected_calibration_error(confidence, correct)
    assert errors["calibrated"] < errors["raw"] / 2, errors
    accuracy = correct_items("textcat", test, student.decode(vectors, raw, RAW)).mean()
    assert accuracy > 0.9


def test_the_child_process_answers_like_the_student_in_process(snips_encoder_student):
    task = load_task(EXAMPLES / "snips")
    texts = [eg.text for eg in snips("test")[:64]]
    in_process = load_student(snips_encoder_student, task, threads=1)
    isolated = InChildProcess.start(partial(load_student, snips_encoder_student, task, threads=1))
    assert isolated.version == in_process.version
    ours, theirs = asyncio.run(isolated.annotate(texts)), in_process.predict(texts)
    assert [a.labels for a in ours] == [a.labels for a in theirs]
    assert np.allclose([a.confidence for a in ours], [a.confidence for a in theirs], atol=1e-5)


@pytest.fixture
def fresh_cache(weights_cache, tmp_path) -> Path:
    """A cache dir holding the verified encoder files (linked) but no embeddings yet."""
    folder = tmp_path / "cache" / "models" / "all-minilm-l6-v2"
    folder.mkdir(parents=True)
    fetch_encoder(SPEC, weights_cache)
    for file in (weights_cache / "models" / "all-minilm-l6-v2").iterdir():
        if file.name.split(".")[0] in ("model", "tokenizer") and "safetensors" not in file.name:
            os.link(file, folder / file.name)
    return tmp_path / "cache"


def test_retraining_embeds_only_texts_it_has_not_seen(fresh_cache, tmp_path, monkeypatch):
    embedded: list[str] = []
    real_embed = SentenceEncoder.embed

    def counting_embed(self, texts, **options):
        embedded.extend(texts)
        return real_embed(self, texts, **options)

    monkeypatch.setattr(SentenceEncoder, "embed", counting_embed)
    task = quick_task("snips", architecture="encoder")
    pool = snips("train")
    first, heldout, later = pool[:140], pool[140:200], pool[200:210]

    def retrain(examples, name):
        embedded.clear()
        report = train(task, examples, heldout, out_dir=tmp_path / name, cache_dir=fresh_cache)
        return report, set(embedded)

    report, texts = retrain(first, "first")
    assert {eg.text for eg in first} <= texts
    assert report.meta.data_counts["texts_embedded"] == len({eg.text for eg in first + heldout})

    report, texts = retrain(first, "again")
    assert not texts & {eg.text for eg in first}, "training texts were embedded again"
    assert report.meta.data_counts["texts_embedded"] == 0

    report, texts = retrain(first + later, "more")
    new = {eg.text for eg in later}
    assert texts - {eg.text for eg in heldout} == new  # only the new labels' texts
    assert report.meta.data_counts["texts_embedded"] == len(new)
    assert (fresh_cache / "embeddings").is_dir()
