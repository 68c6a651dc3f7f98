"""The report page: sections built from the task's records, plots as embedded PNGs.

One HTML file with no outside assets, so it can be mailed, archived or opened offline. A
section with nothing to show says why and what to run, instead of disappearing.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from loopline.processors.learning.monitoring import LiveAccuracy, audit_results, live_accuracy
from loopline.processors.learning.policy import effective_routing
from loopline.processors.metrics import MAIN_METRIC
from loopline.schemas import ModelEvent, TaskConfig
from loopline.schemas.task import RoutingConfig
from loopline.streams.report.gather import RedisFigures
from loopline.streams.report.series import (
    ROUTES,
    CurvePoint,
    TaskRecords,
    item_routes,
    learning_curve,
    model_events,
    queue_depth,
    route_totals,
    shares_over_time,
    token_series,
)

ROUTE_COLOURS = {"accepted": "#2a9d8f", "llm": "#e9c46a", "people": "#e76f51"}


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    png: bytes | None = None
    table: tuple[list[str], list[list[str]]] | None = None


@dataclass
class Report:
    task: str
    generated: datetime
    sections: list[Section]
    summary: dict[str, str]


def gate_figure(event: ModelEvent, routing: RoutingConfig, metric: str) -> float | None:
    """What live audits of a version are held against: the gate's accuracy of the items it
    would accept (the bands at or above its threshold), else its main score."""
    threshold = effective_routing(routing, event.policy).accept_threshold
    accepted = [b for b in event.bands if b.low >= threshold and b.n and b.accuracy is not None]
    if accepted:
        return sum(b.n * b.accuracy for b in accepted) / sum(b.n for b in accepted)
    return event.metrics.get(metric)


def build_report(
    task: TaskConfig, records: TaskRecords, redis: RedisFigures, *, price_per_1k: float
) -> Report:
    metric = MAIN_METRIC[task.kind]
    events = model_events(records.registry)
    routes = item_routes(records)
    totals = route_totals(routes)
    tokens = token_series(redis.tokens_by_minute, redis.llm_answers, routes)
    audits = live_accuracy(
        audit_results((r.message for r in records.review), _gold_messages(records)),
        {e.version: f for e in events if (f := gate_figure(e, task.routing, metric)) is not None},
    )
    production = [e.version for e in events if e.status == "production"]
    summary = {
        "items annotated": f"{len(routes):,}",
        **{f"{route}": _share(totals[route], len(routes)) for route in ROUTES},
        "gold labels": f"{len(records.gold):,}",
        "silver labels": f"{records.silver_count:,}",
        "model versions": f"{len(events)}"
        + (f" (production: {production[-1]})" if production else ""),
        "LLM tokens": f"{tokens.total:,}",
    }
    sections = [
        learning_section(task, records, events, metric),
        shares_section(task, routes),
        tokens_section(task, tokens, price_per_1k),
        audit_section(task, audits, metric),
        queue_section(task, records, redis),
    ]
    if records.undecodable:
        skipped = ", ".join(f"{n} on {role}" for role, n in records.undecodable.items())
        sections.append(
            Section("Skipped messages", [f"Not loopline messages, left out: {skipped}."])
        )
    return Report(task.name, datetime.now(UTC), sections, summary)


def learning_section(
    task: TaskConfig, records: TaskRecords, events: Sequence[ModelEvent], metric: str
) -> Section:
    section = Section("Learning curve")
    points = learning_curve(events, metric)
    if not points:
        section.paragraphs.append(
            f"No model event on <code>{task.topic('models')}</code> yet: the trainer publishes "
            "one for every candidate it evaluates (<code>loopline trainer --task ...</code>). "
            f"{len(records.gold):,} gold labels are waiting on "
            f"<code>{task.topic('corrections')}</code>."
        )
        return section
    section.paragraphs.append(
        f"{metric} of each candidate on the trainer's gold evaluation set (never trained on), "
        "against the gold labels it was trained on."
    )
    section.png = _plot(lambda ax: _curve_plot(ax, points, metric))
    header = ["version", "status", "gold", "silver", metric, "ece", "parent", "reason"]
    rows = [
        [
            e.version,
            e.status,
            str(e.data_counts.get("gold", "")),
            str(e.data_counts.get("silver", "")),
            _figure(e.metrics.get(metric)),
            _figure(e.metrics.get("ece")),
            e.parent_version or "",
            e.reason,
        ]
        for e in events
    ]
    section.table = (header, rows)
    return section


def shares_section(task: TaskConfig, routes) -> Section:
    section = Section("Who answered: accepted, LLM, people")
    if not routes:
        section.paragraphs.append(
            "No item has been annotated yet: start a worker "
            "(<code>loopline worker --task ...</code>) and write texts to "
            f"<code>{task.topic('texts')}</code>."
        )
        return section
    shares = shares_over_time(routes)
    section.paragraphs.append(
        "Share of items per time bin whose answer came from the student (accepted), from the "
        "LLM with no person asked, or from people (audit samples of accepted items count as "
        f"accepted). {len(routes):,} items."
    )
    section.png = _plot(lambda ax: _shares_plot(ax, shares))
    return section


def tokens_section(task: TaskConfig, tokens, price_per_1k: float) -> Section:
    section = Section("LLM tokens and cost")
    if tokens.tokens_per_llm_item is None:
        section.paragraphs.append(
            "The LLM has answered nothing yet (no LLM configured, "
            "<code>LOOPLINE_LLM_BASE_URL</code> unset, or no unsure item so far), so there is "
            "nothing to compare."
        )
        return section
    ratio = tokens.total / tokens.all_to_llm_total if tokens.all_to_llm_total else 0.0
    if price_per_1k:
        spent, everything = (
            t / 1000 * price_per_1k for t in (tokens.total, tokens.all_to_llm_total)
        )
        cost = f"; at {price_per_1k} per 1,000 tokens: {spent:,.2f} against {everything:,.2f}"
    else:
        cost = " (set <code>LOOPLINE_LLM_PRICE_PER_1K_TOKENS</code> for a cost)"
    section.paragraphs.append(
        f"{tokens.total:,} tokens spent, against about {tokens.all_to_llm_total:,.0f} had every "
        f"item gone to the LLM ({tokens.tokens_per_llm_item:,.0f} tokens per LLM answer, the "
        f"mean so far): {ratio:.1%}{cost}."
    )
    section.png = _plot(lambda ax: _tokens_plot(ax, tokens))
    return section


def audit_section(task: TaskConfig, audits: Sequence[LiveAccuracy], metric: str) -> Section:
    section = Section("Live accuracy from the audit sample")
    if not audits:
        why = (
            "<code>routing.audit_rate</code> is 0 in the task file: set it (e.g. 0.02) to send a "
            "sample of accepted items to people."
            if task.routing.audit_rate == 0
            else "no audit item has a human answer yet: answer them in the review service."
        )
        section.paragraphs.append(f"No live accuracy yet: {why}")
        return section
    section.paragraphs.append(
        "Accepted items sampled for review by a hash of their id, as people answered them: an "
        "unbiased estimate of each version's accuracy in production, with a 95 % Wilson "
        "interval, beside its gate figure (the accuracy on the evaluation set of the items it "
        f"would accept, or its {metric} without per-band figures). A version whose "
        "whole interval lies below its gate figure is flagged."
    )
    flagged = [a.version for a in audits if a.flagged]
    if flagged:
        section.paragraphs.append(
            f"<strong>Flagged: {', '.join(flagged)}</strong> — live accuracy below the gate "
            "figure by more than chance explains; look at what changed in the input."
        )
    section.png = _plot(lambda ax: _audit_plot(ax, audits))
    header = ["version", "audited", "correct", "accuracy", "95 % interval", "gate", "flag"]
    rows = [
        [
            a.version,
            str(a.n),
            str(a.correct),
            _figure(a.accuracy),
            f"{a.low:.3f} – {a.high:.3f}",
            _figure(a.gate),
            "below gate" if a.flagged else "",
        ]
        for a in audits
    ]
    section.table = (header, rows)
    return section


def queue_section(task: TaskConfig, records: TaskRecords, redis: RedisFigures) -> Section:
    section = Section("Review queue depth")
    times, depths = queue_depth(records)
    now = (
        f"The review service reports {redis.review_pending:,} items pending now."
        if redis.review_pending is not None
        else "No review service has built its queue in Redis (<code>loopline review serve</code>)."
    )
    if not times:
        section.paragraphs.append(f"Nothing has been routed to people yet. {now}")
        return section
    section.paragraphs.append(
        f"Items routed to people and not yet answered, from <code>{task.topic('review')}</code> "
        f"and the gold answers on <code>{task.topic('corrections')}</code>. {now}"
    )
    section.png = _plot(lambda ax: _queue_plot(ax, times, depths))
    return section


# plots --------------------------------------------------------------------------------------


def _plot(draw: Callable) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    draw(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _curve_plot(ax, points: Sequence[CurvePoint], metric: str) -> None:
    gold = [p.gold for p in points]
    scores = [p.score for p in points]
    ax.plot(gold, scores, color="#888", linewidth=1, zorder=1)
    for status, marker, colour in [
        ("production", "o", "#2a9d8f"),
        ("retired", "o", "#8ab"),
        ("rejected", "x", "#e76f51"),
        ("candidate", "s", "#999"),
    ]:
        chosen = [p for p in points if p.status == status]
        if chosen:
            ax.scatter(
                [p.gold for p in chosen],
                [p.score for p in chosen],
                marker=marker,
                color=colour,
                label=status,
                zorder=2,
            )
    for p in points:
        ax.annotate(
            p.version, (p.gold, p.score), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    ax.margins(x=0.25, y=0.1)  # room for the version names beside the outermost points
    ax.set_xlabel("gold labels trained on")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)


def _shares_plot(ax, shares) -> None:
    times = [_time(ms) for ms in shares.starts_ms]
    ax.stackplot(
        times,
        *(shares.shares[route] for route in ROUTES),
        labels=list(ROUTES),
        colors=[ROUTE_COLOURS[route] for route in ROUTES],
        step="post",
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of items")
    ax.legend(loc="upper left", fontsize=8)
    ax.figure.autofmt_xdate()


def _tokens_plot(ax, tokens) -> None:
    times = [_time(minute * 60_000) for minute in tokens.minutes]
    ax.plot(times, tokens.spent, label="spent", color="#e9c46a", drawstyle="steps-post")
    ax.plot(
        times,
        tokens.all_to_llm,
        label="every item to the LLM (estimate)",
        color="#555",
        linestyle="--",
        drawstyle="steps-post",
    )
    ax.set_ylabel("LLM tokens (cumulative)")
    ax.legend(fontsize=8)
    ax.figure.autofmt_xdate()


def _audit_plot(ax, audits: Sequence[LiveAccuracy]) -> None:
    x = range(len(audits))
    accuracy = [a.accuracy for a in audits]
    errors = [[a.accuracy - a.low for a in audits], [a.high - a.accuracy for a in audits]]
    ax.errorbar(x, accuracy, yerr=errors, fmt="o", capsize=4, label="live (95 % interval)")
    gates = [(i, a.gate) for i, a in enumerate(audits) if a.gate is not None]
    if gates:
        ax.scatter(*zip(*gates), marker="_", s=400, color="#e76f51", label="gate figure")
    ax.set_xticks(list(x), [a.version for a in audits], fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)


def _queue_plot(ax, times: Sequence[int], depths: Sequence[int]) -> None:
    ax.plot([_time(ms) for ms in times], depths, drawstyle="steps-post", color="#e76f51")
    ax.set_ylabel("items waiting for people")
    ax.figure.autofmt_xdate()


# html ---------------------------------------------------------------------------------------

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #222 }
h1 { font-size: 1.5rem }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd }
table { border-collapse: collapse; font-size: 13px }
td, th { padding: .2rem .6rem; border-bottom: 1px solid #eee; text-align: left }
img { max-width: 100%; } code { background: #f4f4f4; padding: 0 .2rem } .muted { color: #777 }
"""


def render_html(report: Report) -> str:
    """The page; texts from messages are escaped, section prose is written by loopline."""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>loopline report: {html.escape(report.task)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>loopline report: {html.escape(report.task)}</h1>",
        f"<p class=muted>generated {report.generated:%Y-%m-%d %H:%M:%S} UTC</p>",
        _table(["", ""], [[k, v] for k, v in report.summary.items()]),
    ]
    for section in report.sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{p}</p>" for p in section.paragraphs]
        if section.png:
            encoded = base64.b64encode(section.png).decode("ascii")
            parts.append(
                f'<img alt="{html.escape(section.title)}" src="data:image/png;base64,{encoded}">'
            )
        if section.table:
            parts.append(_table(*section.table))
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _gold_messages(records: TaskRecords):
    return {item_id: stamped.message for item_id, stamped in records.gold.items()}


def _share(count: int, total: int) -> str:
    return f"{count:,} ({count / total:.1%})" if total else "0"


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
