"""Headlines from Yahoo Finance (through yfinance) and a VADER sentiment score per headline.

Offline, fetching fails fast to an empty list with a note: a worker must never wait on a dead network.
"""

from __future__ import annotations

import logging
import socket
import threading
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from agent.state import NewsItem, ScoredNews
from ml.features.store import FROZEN_SOURCES

log = logging.getLogger(__name__)

NEWS_HOST = "query2.finance.yahoo.com"


def parse_article(article: dict[str, Any]) -> NewsItem | None:
    """yfinance >= 0.2.50 nests each article under `content`; older releases used flat keys."""
    content = article.get("content") or article
    title = content.get("title")
    if not title:
        return None
    provider = content.get("provider") or {}
    link = content.get("canonicalUrl") or content.get("clickThroughUrl") or {}
    url = link.get("url") or content.get("link")
    published = content.get("pubDate")
    if published is None and content.get("providerPublishTime"):
        published = datetime.fromtimestamp(content["providerPublishTime"], tz=UTC).isoformat()
    return {
        "title": str(title).strip(),
        "publisher": provider.get("displayName") or content.get("publisher"),
        "url": url,
        "published": published,
    }


def _reachable(host: str, timeout_s: float) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def fetch_news(
    ticker: str, *, data_source: str | None, limit: int, timeout_s: float, cache_dir: Path
) -> tuple[list[NewsItem], str | None]:
    """(items, note): the note says why there are no items, when there are none."""
    if data_source in FROZEN_SOURCES:
        # Today's headlines say nothing about a frozen history's last day.
        return [], f"no news available: the data is a frozen {data_source} history"
    if not _reachable(NEWS_HOST, min(timeout_s, 2.0)):
        return [], "no news available: Yahoo Finance is unreachable (offline)"

    import yfinance as yf

    yf.set_tz_cache_location(str(cache_dir))
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["articles"] = yf.Ticker(ticker).get_news(count=limit)
        except Exception as exc:  # yfinance raises anything from curl errors to JSON errors
            box["error"] = exc

    # A daemon thread: a stalled Yahoo response is abandoned at the deadline instead of holding the job.
    thread = threading.Thread(target=work, name=f"news-{ticker}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return [], f"no news available: Yahoo Finance did not answer within {timeout_s:g} s"
    if "error" in box:
        # The report is read by clients: what yfinance raised stays in this log.
        log.warning("news for %s failed: %s: %s", ticker, type(box["error"]).__name__, box["error"])
        return [], "no news available: Yahoo Finance failed to answer"
    items = [item for item in map(parse_article, box.get("articles") or []) if item is not None][:limit]
    return items, None if items else "no news available: Yahoo Finance returned no headlines"


@cache
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def score_headlines(items: list[NewsItem]) -> list[ScoredNews]:
    analyzer = _vader()
    return [{**item, "sentiment": analyzer.polarity_scores(item["title"])["compound"]} for item in items]


def mood(mean_sentiment: float | None) -> str:
    """VADER's own cut-offs: compound >= 0.05 is positive, <= -0.05 negative."""
    if mean_sentiment is None:
        return "unknown"
    if mean_sentiment >= 0.05:
        return "positive"
    if mean_sentiment <= -0.05:
        return "negative"
    return "neutral"
