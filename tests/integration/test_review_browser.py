"""The review web UI in a real headless Chromium (Debian's), driven by Playwright: keyboard
and mouse paths for textcat, multilabel and NER, undo, the 401 screen, a 77-label filter,
and the answers arriving on Kafka. Screenshots are saved beside the test's files."""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.integration.reviewing import review_items

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def open_page(browser: Browser, url: str, token: str) -> Page:
    page = browser.new_page(viewport={"width": 1200, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(url)
    expect(page.locator("#login")).to_be_visible()
    page.locator("#token-input").fill(token)
    page.keyboard.press("Enter")
    expect(page.locator("#review")).to_be_visible()
    return page


def current_id(page: Page) -> str:
    return page.locator("#card").get_attribute("data-id")


def next_item(page: Page, before: str) -> str:
    page.wait_for_function(
        "before => document.querySelector('#card').dataset.id !== before "
        "|| !document.querySelector('#review').checkVisibility()",
        arg=before,
    )
    return current_id(page)


def choose_by_keys(page: Page, label: str) -> None:
    """Type to filter the label list, then the digit of the label."""
    page.keyboard.type(label.replace("_", " "))
    names = page.locator("#label-list li .name").all_inner_texts()
    assert label in names[:9], names
    page.keyboard.press(str(names.index(label) + 1))


def wait_saved(page: Page, count: int) -> None:
    expect(page.locator("#answered")).to_have_text(str(count), timeout=20_000)
    expect(page.locator("#history li.failed")).to_have_count(0)


def test_twenty_items_by_keyboard_alone_with_undo(review, browser, tmp_path):
    r = review(22)
    gold = {item.id: item.item.meta["gold"] for item in review_items(r.task, 22)}
    page = open_page(browser, r.service.url, r.token)
    page.screenshot(path=tmp_path / "textcat-first.png")
    expected: dict[str, tuple[str, list[str]]] = {}
    item = current_id(page)
    for n in range(20):
        shown = page.locator("#label-list li.on .name").all_inner_texts()
        if n == 5:
            page.keyboard.press("x")
            expected[item] = ("reject", [])
        elif n == 6:
            page.keyboard.press(" ")
            expected[item] = ("ignore", [])
        else:
            if shown != [gold[item]]:
                choose_by_keys(page, gold[item])
                if n == 3:
                    page.screenshot(path=tmp_path / "textcat-filtered.png")
            page.keyboard.press("Enter")
            expected[item] = ("accept", [gold[item]])
        item = next_item(page, item)
        if n == 9:  # undo: the last answer comes back, is changed, and saved again
            page.keyboard.press("Backspace")
            undone = current_id(page)
            expect(page.locator("#editing")).to_be_visible()
            changed = next(label for label in r.task.labels if label != gold[undone])
            choose_by_keys(page, changed)
            page.keyboard.press("Enter")
            expected[undone] = ("accept", [changed])
            assert next_item(page, undone) == item
    wait_saved(page, 20)
    page.screenshot(path=tmp_path / "textcat-done.png")
    assert page.errors == []

    timings = page.evaluate("window.looplineTimings")
    print(
        f"\nbrowser: answer key to next item painted, median {statistics.median(timings):.1f} ms "
        f"over {len(timings)} answers (p90 {sorted(timings)[int(len(timings) * 0.9)]:.1f} ms)"
    )
    latest = {}
    for key, value in r.topic("corrections"):
        latest[key] = (value["decision"], value["labels"], value["source"])
    assert latest == {k: (*v, "human") for k, v in expected.items()}
    human = {v["id"]: v for _, v in r.topic("predictions")}
    assert all(p["source"] == "human" and p["revision"] == 2 for p in human.values())
    assert set(human) == {k for k, (decision, _) in expected.items() if decision != "ignore"}
    edits = [v for _, v in r.topic("answers") if v["edit"] == 1]
    assert len(edits) == 1 and len(r.topic("answers")) == 21


def test_a_bad_token_gets_the_401_screen_then_textcat_by_mouse(review, browser, tmp_path):
    r = review(2)
    page = browser.new_page()
    page.goto(r.service.url)
    page.locator("#token-input").fill("llr_not-a-real-token")
    page.keyboard.press("Enter")
    expect(page.locator("#login-reason")).to_contain_text("not accepted")
    expect(page.locator("#review")).to_be_hidden()
    page.screenshot(path=tmp_path / "401.png")
    page.locator("#token-input").fill(r.token)
    page.locator("#login button").click()
    expect(page.locator("#review")).to_be_visible()
    # the help overlay lists the keys
    page.keyboard.press("?")
    expect(page.locator("#help")).to_contain_text("Backspace")
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()
    # the mouse alone: pick a label, accept; then reject the next one
    item = current_id(page)
    page.locator("#label-list li").nth(3).click()
    chosen = page.locator("#label-list li.on .name").all_inner_texts()
    page.locator("#accept").click()
    second = next_item(page, item)
    page.locator("#reject").click()
    wait_saved(page, 2)
    answers = {v["id"]: (v["decision"], v["labels"]) for _, v in r.topic("answers")}
    assert answers == {item: ("accept", chosen), second: ("reject", [])}


def test_multilabel_toggles_by_key_and_mouse(review, browser, tmp_path):
    r = review(2, example="snips", kind="textcat_multilabel")
    page = open_page(browser, r.service.url, r.token)
    item = current_id(page)
    preselected = page.locator("#label-list li.on .name").all_inner_texts()
    names = page.locator("#label-list li .name").all_inner_texts()
    extra = next(name for name in names if name not in preselected)
    page.keyboard.press(str(names.index(extra) + 1))  # toggle on by key
    page.locator("#label-list li", has_text=preselected[0]).click()  # toggle off by mouse
    expect(page.locator("#label-list li.on")).to_have_count(1)
    page.screenshot(path=tmp_path / "multilabel.png")
    page.locator("#accept").click()
    next_item(page, item)
    wait_saved(page, 1)
    answers = [v for _, v in r.topic("answers")]
    assert [(a["id"], a["labels"]) for a in answers] == [(item, [extra])]


def test_ner_spans_by_mouse(review, browser, tmp_path):
    r = review(2, example="wnut17")
    page = open_page(browser, r.service.url, r.token)
    item = current_id(page)
    text = review_items(r.task, 2, "wnut17")[0].item.text
    assert item == "item-0"
    entities = page.locator("#text mark.ent")
    expect(entities).to_have_count(1)  # the LLM's span, pre-selected
    entities.first.click()  # clicking an entity removes it
    expect(entities).to_have_count(0)
    tokens = page.locator("#text .tok")
    first, last = tokens.nth(4).bounding_box(), tokens.nth(5).bounding_box()
    page.mouse.move(first["x"] + 3, first["y"] + first["height"] / 2)
    page.mouse.down()
    page.mouse.move(last["x"] + last["width"] - 3, last["y"] + last["height"] / 2, steps=5)
    page.mouse.up()
    expect(page.locator("#text .tok.pending")).to_have_count(2)
    names = page.locator("#label-list li .name").all_inner_texts()
    page.keyboard.press(str(names.index("person") + 1))
    expect(entities).to_have_count(1)
    page.screenshot(path=tmp_path / "ner.png")
    page.keyboard.press("Enter")
    next_item(page, item)
    wait_saved(page, 1)
    (answer,) = [v for _, v in r.topic("answers")]
    (span,) = answer["spans"]
    starts = [t for t in text.split(" ") if t]
    assert span["label"] == "person"
    assert text[span["start"] : span["end"]] == " ".join(starts[4:6])
    assert uuid.UUID(answer["lease_id"])
