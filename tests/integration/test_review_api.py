"""The review service's REST API on real Kafka and Redis, run as `loopline review serve`."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.reviewing import Api, gold_label, review_items, send_review_items
from tests.integration.streaming import run_cli

pytestmark = pytest.mark.integration


def test_answers_are_on_kafka_when_the_response_comes(review):
    r = review(6)
    api = r.api()
    first, second = api.next(n=2)
    assert first["item"]["id"] != second["item"]["id"]
    assert first["item"]["suggestions"] and first["expires_at"]

    status, written = api.answer(first, labels=[gold_label(first)])
    assert status == 201, written
    item_id = first["item"]["id"]
    assert written["correction"]["source"] == "human"
    assert written["correction"]["labels"] == [gold_label(first)]
    # acknowledged by Kafka before the response: readable right away
    answers, corrections = r.topic("answers"), r.topic("corrections")
    predictions = [v for _, v in r.topic("predictions")]
    assert [(k, v["reviewer"], v["lease_id"]) for k, v in answers] == [
        (item_id, r.name, first["lease_id"])
    ]
    assert answers[0][1]["suggestions"] == first["item"]["suggestions"]
    assert [(k, v["source"], v["decision"]) for k, v in corrections] == [
        (item_id, "human", "accept")
    ]
    assert [(p["id"], p["source"], p["revision"], p["model_version"]) for p in predictions] == [
        (item_id, "human", 2, f"human:{r.name}")
    ]
    assert predictions[0]["meta"] == first["item"]["item"]["meta"]

    # a retry writes nothing and gets the same response
    assert api.answer(first, labels=[gold_label(first)]) == (201, written)
    assert len(r.topic("answers")) == 1 and len(r.topic("corrections")) == 1

    # a different answer under the same lease is an edit (undo in the UI)
    other = next(label for label in r.task.labels if label != gold_label(first))
    status, edited = api.answer(first, labels=[other])
    assert status == 201 and edited["answer"]["edit"] == 1
    assert [v["labels"] for _, v in r.topic("corrections")] == [[gold_label(first)], [other]]

    # invalid: 422 and nothing written
    status, body = api.answer(second, labels=["no_such_label"])
    assert status == 422 and "unknown label 'no_such_label'" in body["detail"]
    status, body = api.answer({**second, "lease_id": first["lease_id"]}, labels=[other])
    assert status == 409, body
    assert len(r.topic("answers")) == 2

    # released: back in the queue, first in line again (it is the oldest)
    assert api.post(f"leases/{second['lease_id']}/release")[0] == 204
    assert api.post(f"leases/{second['lease_id']}/release")[0] == 409
    assert api.next()[0]["item"]["id"] == second["item"]["id"]
    stats = api.get("stats")[1]
    assert (stats["answered"], stats["decided"], stats["leased"], stats["pending"]) == (1, 1, 1, 4)
    assert stats["reviewers"][r.name]["answers"] == 1
    assert stats["oldest_age_s"] >= 0


def test_bad_requests_get_clean_errors_and_the_service_keeps_going(review):
    r = review(3)
    url = r.service.url
    status, body = r.api(token=None).get("queue/next")
    assert status == 401 and "Bearer" in body["detail"]
    assert r.api(token="llr_wrong").get("stats")[0] == 401
    assert Api(url, r.token, "other-task").get("queue/next")[0] == 404
    headers = {"Authorization": f"Bearer {r.token}", "Content-Type": "application/json"}
    answers = f"{url}/api/v1/tasks/{r.task.name}/answers"
    response = httpx.post(answers, content=b"{not json", headers=headers)
    assert response.status_code == 422 and "invalid request" in response.json()["detail"]
    response = httpx.post(answers, content=b'{"x": "' + b"y" * 400_000 + b'"}', headers=headers)
    assert response.status_code == 413
    status, body = r.api().post(
        "answers", {"lease_id": "nope", "id": "item-0", "decision": "reject"}
    )
    assert status == 409 and "not held" in body["detail"]
    assert r.api().get("queue/next", n=0)[0] == 422
    assert r.api().post("leases/unknown/release")[0] == 409

    # roles: a reviewer may not release someone else's lease, an admin may
    _, bob = r.reviewer()
    _, admin = r.reviewer("admin")
    leased = r.api().next()[0]
    assert bob.post(f"leases/{leased['lease_id']}/release")[0] == 403
    assert admin.post(f"leases/{leased['lease_id']}/release")[0] == 204

    # a revoked token stops working on the running service
    name, carl = r.reviewer()
    assert carl.get("stats")[0] == 200
    assert run_cli("review", "token", "revoke", name, env=r.env).returncode == 0
    deadline = time.monotonic() + 15
    while carl.get("stats")[0] != 401:
        assert time.monotonic() < deadline, "revoked token still accepted"
        time.sleep(0.2)

    assert httpx.get(f"{url}/healthz").json() == {
        "status": "ok",
        "task": r.task.name,
        "ready": True,
    }
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert "/api/v1/tasks/{task}/queue/next" in paths and "/api/v1/tasks/{task}/answers" in paths
    metrics = httpx.get(f"{url}/metrics").text
    assert "loopline_review_request_seconds_count" in metrics
    assert "loopline_review_queue_items" in metrics
    assert r.api().next()  # still serving


def test_routed_twice_is_one_entry_and_answered_items_are_not_served_again(review):
    r = review(1)
    original = review_items(r.task, 1)[0]
    # teach routes the same id again with the LLM's suggestion too
    again = original.model_copy(update={"suggestions": original.suggestions[:1], "priority": 0.9})
    send_review_items(r.bootstrap, r.task, [again])
    time.sleep(1.0)
    api = r.api()
    leased = api.next(n=5)
    assert len(leased) == 1
    assert [s["source"] for s in leased[0]["item"]["suggestions"]] == ["student", "llm"]
    assert api.answer(leased[0], "reject")[0] == 201
    send_review_items(r.bootstrap, r.task, [again])  # routed once more after it was decided
    time.sleep(1.0)
    assert api.next(n=5) == []
    corrections = r.topic("corrections")
    assert [v["decision"] for _, v in corrections] == ["reject"]
    assert [v["labels"] for _, v in r.topic("predictions")] == [[]]


def test_overlap_takes_distinct_reviewers_and_the_majority_decides(review):
    r = review(2, review={"overlap": 2})
    ana = r.api()
    bob_name, bob = r.reviewer()
    cy_name, cy = r.reviewer()
    labels = list(r.task.labels)

    def take(api: Api, item_id: str) -> dict:
        leased = api.next(n=5)
        mine = next(x for x in leased if x["item"]["id"] == item_id)
        for other in leased:
            if other is not mine:
                assert api.post(f"leases/{other['lease_id']}/release")[0] == 204
        return mine

    # item-0: ana and bob agree -> decided after two answers
    assert ana.answer(take(ana, "item-0"), labels=[labels[0]])[1]["correction"] is None
    assert bob.answer(take(bob, "item-0"), labels=[labels[0]])[1]["correction"]["labels"] == [
        labels[0]
    ]
    # item-1: they disagree -> a third reviewer; the majority decides
    assert ana.answer(take(ana, "item-1"), labels=[labels[1]])[1]["correction"] is None
    assert ana.next(n=5) == []  # ana never gets an item she answered
    assert bob.answer(take(bob, "item-1"), labels=[labels[2]])[1]["correction"] is None
    decided = cy.answer(take(cy, "item-1"), labels=[labels[2]])[1]["correction"]
    assert decided["labels"] == [labels[2]]
    assert decided["reviewer"] == ",".join(sorted([bob_name, cy_name]))
    assert cy.next(n=5) == [] and bob.next(n=5) == []

    predictions = {v["id"]: v for _, v in r.topic("predictions")}
    assert predictions["item-1"]["confidence"] == pytest.approx(2 / 3)
    stats = ana.get("stats")[1]
    assert stats["decided"] == 2 and stats["answered"] == 5
    pairs = {tuple(p["reviewers"]): p for p in stats["agreement"]["pairs"]}
    ana_bob = pairs[tuple(sorted([r.name, bob_name]))]
    assert ana_bob["items"] == 2 and ana_bob["percent_agreement"] == 0.5
    assert ana_bob["cohen_kappa"] is not None
    assert stats["agreement"]["percent_agreement"] == pytest.approx(2 / 4)
