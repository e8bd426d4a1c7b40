"""Which history the stack serves, said up front: `auto` falls back to the bundled (frozen) history when
Yahoo Finance cannot be reached, and a forecast "as of 2022-12-28" should not come as a surprise."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

from stockq.settings import Settings

PROBE_TICKER = "^GSPC"


def bundled_range() -> dict[str, str]:
    """The bundled history's span, read from the data itself."""
    from ml.data.bundled import BundledSource

    frame = BundledSource().fetch(PROBE_TICKER)
    return {
        "first": frame.index[0].date().isoformat(),
        "last": frame.index[-1].date().isoformat(),
        "ohlcv": str(frame.attrs.get("ohlcv_range", "")),
    }


def _hold(record: logging.LogRecord) -> bool:
    return False


def yahoo_reachable(settings: Settings) -> tuple[bool, str]:
    """One small real request, as a worker's `auto` source would make it (it fails fast offline)."""
    from ml.data.yfinance_source import YFinanceSource
    from ml.errors import StockqError

    # Its own warnings ("Cookie/crumb fetch failed") would only repeat, worse, what the note says.
    logging.getLogger("yfinance").setLevel(logging.ERROR)
    # So would the failure's detail, which ml.errors logs as it is raised: with no handler configured it
    # printed bare ("data_unavailable (error_id …): DNSError …") ahead of the note. Held back while the
    # probe runs; the note names the detail itself (an error_id would point at a line never written).
    errors_log = logging.getLogger("ml.errors")
    errors_log.addFilter(_hold)
    try:
        YFinanceSource(settings.var_path / "yfinance", timeout_s=5).fetch(
            PROBE_TICKER, date.today() - timedelta(days=10), date.today()
        )
    except StockqError as exc:
        return False, exc.detail or exc.message
    except Exception as exc:  # a probe: whatever else yfinance raises, the workers' fetch would fail too
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        errors_log.removeFilter(_hold)
    return True, ""


def data_note(settings: Settings) -> dict[str, Any]:
    """`source` (the setting), `online` (Yahoo reachable; None when not asked), `served`, `ends` (the last
    date of the served history when it is frozen, else None) and `text`, the sentence to print."""
    spec = settings.data_source.strip()
    if spec.startswith("csv:"):
        return {"source": spec, "online": None, "served": "csv", "ends": None,
                "text": f"data: csv files in {spec[4:]}"}  # fmt: skip
    online = None
    reason = ""
    if spec in ("auto", "yfinance"):
        online, reason = yahoo_reachable(settings)
        if online:
            return {"source": spec, "online": True, "served": "yfinance", "ends": None,
                    "text": f"data: {spec}, Yahoo Finance is reachable (live daily history)"}  # fmt: skip
        if spec == "yfinance":
            text = (
                f"data: yfinance, but Yahoo Finance is unreachable ({reason}): ingests will fail; "
                "STOCKQ_DATA_SOURCE=auto falls back to the bundled history"
            )
            return {"source": spec, "online": False, "served": None, "ends": None, "text": text}
    span = bundled_range()
    history = (
        f"the offline history shipped with skfolio and arch (daily closes {span['first']}..{span['last']}, "
        f"^GSPC OHLCV {span['ohlcv']}), which ends {span['last']}"
    )
    if spec == "auto":
        text = (
            "data: auto, but Yahoo Finance is unreachable: a ticker fetched online before keeps its cached "
            f"Yahoo history, every other one is served from {history}"
        )
    else:
        text = f"data: bundled, {history}"
    return {"source": spec, "online": online, "served": "bundled", "ends": span["last"], "text": text}


def data_note_soon(settings: Settings) -> Future[dict[str, Any]]:
    """data_note in a thread: the probe and the history's import run while the stack starts."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="data-note")
    future = pool.submit(data_note, settings)
    pool.shutdown(wait=False)
    return future
