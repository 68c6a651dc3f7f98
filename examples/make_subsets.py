"""Regenerate the example data subsets from the public datasets, seeded so it is reproducible.

    python examples/make_subsets.py [--datasets ../shared/datasets] [--seed 0]
    python examples/make_subsets.py --full DIR   # whole banking77 and SNIPS, for benchmarks

Writes Prodigy-style JSONL next to each `task.yml` (with --full: into DIR/<task>/, the whole
train and test sets of the intent datasets, for `loopline bench students`): `{"text",
"label"}` for intents and `{"text", "spans": [{"start", "end", "label"}]}` for entities
(CoNLL tokens joined by single spaces). Every label written must be one the task declares,
so the data and the task file cannot drift apart. Attribution for each dataset is in
`examples/<task>/README.md`.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

EXAMPLES = Path(__file__).resolve().parent
DEFAULT_DATASETS = EXAMPLES.parent.parent / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", type=Path, help="write whole intent datasets here instead")
    args = parser.parse_args()
    if args.full:
        make_full(args.datasets, args.full, random.Random(args.seed))
        return
    make_banking77(args.datasets / "banking77", random.Random(args.seed))
    make_wnut17(args.datasets / "wnut17", random.Random(args.seed))
    make_snips(args.datasets / "snips", random.Random(args.seed))


# banking77 ---------------------------------------------------------------------------------


def make_banking77(source: Path, rng: random.Random) -> None:
    """Per intent: 10 dev and up to 40 train (disjoint) from train.csv, 13 test from test.csv.

    Two intents have fewer than 50 training texts (contactless_not_working has 35); they get
    the rest after dev.
    """
    train_by_label = _group_by_label(_read_banking_csv(source / "train.csv"))
    test_by_label = _group_by_label(_read_banking_csv(source / "test.csv"))
    train, dev, test = [], [], []
    for label in sorted(train_by_label):
        texts = rng.sample(train_by_label[label], min(50, len(train_by_label[label])))
        dev += [{"text": text, "label": label} for text in texts[:10]]
        train += [{"text": text, "label": label} for text in texts[10:]]
        test += [{"text": text, "label": label} for text in rng.sample(test_by_label[label], 13)]
    _write_task_data("banking77", rng, train=train, dev=dev, test=test)


def _read_banking_csv(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return [(row["text"], row["category"]) for row in csv.DictReader(file)]


# wnut17 ------------------------------------------------------------------------------------


def make_wnut17(source: Path, rng: random.Random) -> None:
    """All of train, and 500 sentences each of dev and test (kept in their original order)."""
    train = list(_conll_to_prodigy(source / "wnut17train.conll"))
    dev = _sample_in_order(list(_conll_to_prodigy(source / "emerging.dev.conll")), 500, rng)
    test = _sample_in_order(list(_conll_to_prodigy(source / "emerging.test.annotated")), 500, rng)
    _write_task_data("wnut17", None, train=train, dev=dev, test=test)


def _conll_to_prodigy(path: Path) -> Iterator[dict]:
    """CoNLL `token<TAB>tag` sentences (blank-line separated, BIO tags) as text + char spans."""
    for sentence in _conll_sentences(path):
        yield _bio_to_spans(sentence)


def _conll_sentences(path: Path) -> Iterator[list[tuple[str, str]]]:
    sentence: list[tuple[str, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if sentence:
                yield sentence
            sentence = []
            continue
        token, tag = line.split("\t")
        sentence.append((token, tag))
    if sentence:
        yield sentence


def _bio_to_spans(sentence: list[tuple[str, str]]) -> dict:
    """An `I-` tag that does not continue an entity of its type starts a new one (lenient BIO)."""
    text_parts: list[str] = []
    spans: list[dict] = []
    offset = 0
    for token, tag in sentence:
        start, end = offset, offset + len(token)
        prefix, _, label = tag.partition("-")
        continues = prefix == "I" and spans and spans[-1]["label"] == label
        if continues and spans[-1]["end"] == start - 1:
            spans[-1]["end"] = end
        elif prefix in ("B", "I"):
            spans.append({"start": start, "end": end, "label": label})
        text_parts.append(token)
        offset = end + 1
    return {"text": " ".join(text_parts), "spans": spans}


def _sample_in_order(items: list[dict], n: int, rng: random.Random) -> list[dict]:
    return [items[i] for i in sorted(rng.sample(range(len(items)), n))]


# snips -------------------------------------------------------------------------------------


def make_snips(source: Path, rng: random.Random) -> None:
    """100 train utterances per intent from train_*_full.json; all 700 validate ones as test."""
    train, test = [], []
    for path in sorted(source.glob("train_*_full.json")):
        intent, utterances = _read_snips(path)
        train += [{"text": text, "label": intent} for text in rng.sample(utterances, 100)]
    for path in sorted(source.glob("validate_*.json")):
        intent, utterances = _read_snips(path)
        test += [{"text": text, "label": intent} for text in utterances]
    _write_task_data("snips", rng, train=train, test=test)


def _read_snips(path: Path) -> tuple[str, list[str]]:
    """One file holds one intent; an utterance is its text chunks joined.

    `surrogatepass` because train_PlayMusic_full.json writes one emoji as two UTF-8-encoded
    surrogate halves (CESU-8); the UTF-16 round trip joins them back into one character.
    """
    raw = path.read_bytes().decode("utf-8", "surrogatepass")
    raw = raw.encode("utf-16", "surrogatepass").decode("utf-16")
    ((intent, records),) = json.loads(raw).items()
    return intent, ["".join(chunk["text"] for chunk in record["data"]) for record in records]


# whole datasets ----------------------------------------------------------------------------


def make_full(datasets: Path, out: Path, rng: random.Random) -> None:
    """banking77 train.csv / test.csv and SNIPS train_*_full / validate_*, whole."""
    banking = {
        split: [{"text": t, "label": c} for t, c in _read_banking_csv(datasets / "banking77" / f)]
        for split, f in (("train", "train.csv"), ("test", "test.csv"))
    }
    _write_task_data("banking77", rng, out / "banking77", **banking)
    snips = {}
    for split, pattern in (("train", "train_*_full.json"), ("test", "validate_*.json")):
        snips[split] = [
            {"text": text, "label": intent}
            for path in sorted((datasets / "snips").glob(pattern))
            for intent, utterances in [_read_snips(path)]
            for text in utterances
        ]
    _write_task_data("snips", rng, out / "snips", **snips)


# shared ------------------------------------------------------------------------------------


def _group_by_label(rows: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for text, label in rows:
        grouped[label].append(text)
    return grouped


def _write_task_data(
    task: str, rng: random.Random | None, folder: Path | None = None, **splits: list[dict]
) -> None:
    """Check labels against the task file, shuffle label-sorted splits, write JSONL (into
    `folder`, by default the task's own)."""
    folder = folder or EXAMPLES / task
    folder.mkdir(parents=True, exist_ok=True)
    labels = set(yaml.safe_load((EXAMPLES / task / "task.yml").read_text())["labels"])
    for split, records in splits.items():
        used = {r["label"] for r in records if "label" in r}
        used |= {s["label"] for r in records for s in r.get("spans", [])}
        if used - labels:
            raise SystemExit(f"{task}/{split}: labels missing from task.yml: {used - labels}")
        if rng is not None:
            rng.shuffle(records)
        path = folder / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as file:
            file.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        print(f"{path}: {len(records)} items")


if __name__ == "__main__":
    main()
