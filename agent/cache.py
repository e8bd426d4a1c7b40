"""Semantic cache of analyst reports in Qdrant.

A report is reusable only for the same ticker, data as-of date, model (name and version), evaluation (the
one that calibrated the band and that the report quotes) and writer (LLM model or the deterministic
analyst): those are exact payload filters. Within them, a question hits when its
embedding's cosine similarity to a stored question reaches the calibrated threshold; similarity alone can
not tell tickers apart ("Analysis for AAPL" vs "Analysis for MSFT" scores 0.34, a paraphrase 0.64).

Expired points are deleted on every lookup and store, so the collection never grows with dead reports.
Embedded Qdrant (a directory) admits one process; a cache that cannot be opened or queried degrades to
misses with a warning rather than failing the report.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from agent.configuration import AgentConfig
from agent.embeddings import DIMENSION, embed

log = logging.getLogger(__name__)

COLLECTION = "agent_reports"
# The payload value that stands for "no LLM", since a filter cannot match a missing value portably.
DETERMINISTIC = "deterministic"
UNCALIBRATED = "uncalibrated"  # the payload value for a band no evaluation calibrated
# Local lock contention, a Qdrant server that is down or answers with an error, a broken storage folder.
_QDRANT_ERRORS = (RuntimeError, OSError, UnexpectedResponse, ResponseHandlingException)


@dataclass(frozen=True)
class CacheKey:
    ticker: str
    as_of: str
    model_name: str
    model_version: str
    writer: str  # the LLM model name, or DETERMINISTIC
    scope: str = "global"  # the tenant an answer was written for (or "global" when shared)
    # The evaluation that calibrated the served band and that the report quotes: a new `stockq evaluate`
    # changes both for the same model version, so it must not be answered from an older report.
    evaluation: str = UNCALIBRATED


@dataclass(frozen=True)
class CacheHit:
    response: dict[str, Any]
    question: str
    score: float


class SemanticCache:
    def __init__(
        self,
        config: AgentConfig,
        *,
        embedder: Callable[[str], list[float]] = embed,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.threshold = config.cache_threshold
        self.ttl_s = config.cache_ttl_s
        self._embed = embedder
        self._clock = clock
        self._client: QdrantClient | None = None
        # Embedded Qdrant keeps its state in plain Python structures: one caller at a time.
        self._lock = threading.Lock()

    # -- connection ----------------------------------------------------------------------------
    def _connect(self) -> QdrantClient:
        if self._client is None:
            if self.config.qdrant_url:
                client = QdrantClient(url=self.config.qdrant_url, timeout=5)
            else:
                self.config.qdrant_path.mkdir(parents=True, exist_ok=True)
                client = QdrantClient(path=str(self.config.qdrant_path))
            try:
                if not client.collection_exists(COLLECTION):
                    self._create_collection(client)
            except BaseException:
                client.close()  # an embedded client would otherwise hold the folder's lock until collected
                raise
            self._client = client
        return self._client

    def _create_collection(self, client: QdrantClient) -> None:
        try:
            vectors = models.VectorParams(size=DIMENSION, distance=models.Distance.COSINE)
            client.create_collection(COLLECTION, vectors_config=vectors)
        except UnexpectedResponse:
            # Another worker created it between our check and our create; anything else is real.
            if not client.collection_exists(COLLECTION):
                raise
            return
        if self.config.qdrant_url:
            # Indexes only exist on a server (embedded Qdrant scans and warns that they have no effect).
            for field in fields(CacheKey):
                client.create_payload_index(COLLECTION, field.name, models.PayloadSchemaType.KEYWORD)
            client.create_payload_index(COLLECTION, "expires_at", models.PayloadSchemaType.FLOAT)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- operations ----------------------------------------------------------------------------
    def lookup(self, key: CacheKey, question: str) -> CacheHit | None:
        vector = self._embed(question)
        try:
            with self._lock:
                client = self._connect()
                self._purge(client, self._clock())
                found = client.query_points(
                    COLLECTION,
                    query=vector,
                    query_filter=self._filter(key),
                    limit=1,
                    score_threshold=self.threshold,
                    with_payload=True,
                ).points
        except _QDRANT_ERRORS as exc:
            log.warning("agent cache lookup skipped: %s", exc)
            return None
        if not found:
            return None
        payload = found[0].payload or {}
        return CacheHit(json.loads(payload["response"]), payload["question"], found[0].score)

    def store(self, key: CacheKey, question: str, response: dict[str, Any]) -> None:
        vector = self._embed(question)
        # The same question on the same key replaces its entry instead of piling up duplicates.
        point_id = str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps([*asdict(key).values(), question])))
        try:
            with self._lock:
                client = self._connect()
                now = self._clock()
                self._purge(client, now)
                payload = {
                    **asdict(key),
                    "question": question,
                    "created_at": now,
                    "expires_at": now + self.ttl_s,
                    # A string, so the response comes back byte-for-byte, whatever Qdrant does to JSON.
                    "response": json.dumps(response),
                }
                client.upsert(COLLECTION, [models.PointStruct(id=point_id, vector=vector, payload=payload)])
        except _QDRANT_ERRORS as exc:
            log.warning("agent cache store skipped: %s", exc)

    def purge(self) -> int:
        """Delete expired entries now; returns how many there were."""
        with self._lock:
            return self._purge(self._connect(), self._clock())

    def count(self) -> int:
        with self._lock:
            return self._connect().count(COLLECTION, exact=True).count

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _purge(client: QdrantClient, now: float) -> int:
        expired = models.Filter(must=[models.FieldCondition(key="expires_at", range=models.Range(lt=now))])
        stale = client.count(COLLECTION, count_filter=expired, exact=True).count
        if stale:
            client.delete(COLLECTION, points_selector=models.FilterSelector(filter=expired))
        return stale

    @staticmethod
    def _filter(key: CacheKey) -> models.Filter:
        return models.Filter(
            must=[
                models.FieldCondition(key=field, match=models.MatchValue(value=value))
                for field, value in asdict(key).items()
            ]
        )
