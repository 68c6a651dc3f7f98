"""`loopline report`: one self-contained HTML page on how a task's loop is doing."""

from __future__ import annotations

from pathlib import Path

from loopline.schemas import TaskConfig
from loopline.streams.report.gather import read_records, read_redis
from loopline.streams.report.page import build_report, render_html
from loopline.streams.settings import Settings


def write_report(settings: Settings, task: TaskConfig, out: Path) -> tuple[Path, dict[str, str]]:
    """Read the task's topics and Redis, write `out/report-<task>.html`; the page's path and
    its summary lines."""
    records = read_records(settings, task)
    figures = read_redis(settings, task)
    page = build_report(task, records, figures, price_per_1k=settings.llm_price_per_1k_tokens)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"report-{task.name}.html"
    path.write_text(render_html(page), encoding="utf-8")
    return path, page.summary
