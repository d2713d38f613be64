"""A local stand-in for Vertex AI text embeddings (the ``:predict`` endpoint).

google-genai 2.x in Vertex mode sends, for text-embedding-00x and gemini-embedding-001
(verified by logging the SDK's requests)::

    POST {base}/v1beta1/projects/{p}/locations/{l}/publishers/google/models/{m}:predict
    Authorization: Bearer <token>
    {"instances": [{"content": "...", "task_type": "SEMANTIC_SIMILARITY"}, ...],
     "parameters": {"outputDimensionality": 768}}

and reads ``predictions[i].embeddings.values``. Vectors here are deterministic
bag-of-words hashes (texts sharing words are similar), computed at the model's native
size, normalised, then truncated to ``outputDimensionality`` like Matryoshka models, so
reduced vectors are not unit length. Limits follow the documentation: at most 250
instances per request (1 for gemini-embedding-001), and optionally a project quota of
requests per window answered with 429 RESOURCE_EXHAUSTED and ``Retry-After`` (tests and
the benchmark check that clients stay under it). ``fail_next(n, 429, retry_after=s)``
injects throttling regardless of the quota.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import deque
from typing import Any

from profiles.embedders import DEFAULT_NATIVE_DIM, NATIVE_DIMS, hashed_embedding
from standins._http import RawReply, Reply, StandinServer

MODELS = ("text-embedding-005", "text-embedding-004", "text-multilingual-embedding-002",
          "gemini-embedding-001")
TASK_TYPES = ("RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
              "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION",
              "CODE_RETRIEVAL_QUERY")
_PATH = re.compile(r"^/v1(?:beta1)?/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
                   r"/publishers/google/models/(?P<model>[^/:]+):predict$")
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
           503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class VertexStandin(StandinServer):
    """``VertexStandin(latency_seconds=0.1).start()``; point the SDK at ``.url``."""

    def __init__(self, *, latency_seconds: float = 0.0, token: str | None = None,
                 max_instances: int = 250, quota_requests: int | None = None,
                 quota_window_seconds: float = 60.0) -> None:
        super().__init__(latency_seconds=latency_seconds)
        self.token = token  # when set, the bearer token must equal it
        self.max_instances = max_instances
        # The project's quota, as Vertex enforces it: at most quota_requests accepted
        # requests in any quota_window_seconds; past it, 429 RESOURCE_EXHAUSTED with a
        # Retry-After saying when a request would be accepted again.
        self.quota_requests = quota_requests
        self.quota_window_seconds = quota_window_seconds
        self._accepted: deque[float] = deque()
        self._quota_lock = threading.Lock()

    def error(self, status: int, message: str) -> Any:
        return {"error": {"code": status, "message": message,
                          "status": _STATUS.get(status, "UNKNOWN")}}

    def _fail(self, status: int, message: str) -> Reply:
        return status, self.error(status, message)

    def handle(self, method: str, path: str, query: dict[str, list[str]],
               headers: dict[str, str], body: Any) -> Reply:
        match = _PATH.match(path)
        if method != "POST" or match is None:
            return self._fail(404, f"no such method: {method} {path}")
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or (self.token and auth != f"Bearer {self.token}"):
            return self._fail(401, "Request had invalid authentication credentials.")
        model = match["model"]
        if model not in MODELS:
            return self._fail(404, f"Publisher Model `{model}` was not found.")
        problem = self._check(model, body)
        if problem:
            return self._fail(400, problem)
        wait = self._over_quota()
        if wait is not None:
            data = json.dumps(self.error(429, f"Quota exceeded for aiplatform.googleapis.com/"
                                              f"online_prediction_requests_per_base_model "
                                              f"with base model: {model}.")).encode()
            return 429, RawReply(data, "application/json",
                                 {"Retry-After": f"{math.ceil(wait * 1000) / 1000:g}"})
        return 200, self._predict(model, body)

    def _over_quota(self) -> float | None:
        """None when the request fits the quota (it is counted), else seconds to wait."""
        if self.quota_requests is None:
            return None
        now = time.monotonic()
        with self._quota_lock:
            while self._accepted and self._accepted[0] <= now - self.quota_window_seconds:
                self._accepted.popleft()
            if len(self._accepted) >= self.quota_requests:
                return self._accepted[0] + self.quota_window_seconds - now
            self._accepted.append(now)
            return None

    def max_accepted_in_window(self, window_seconds: float | None = None) -> int:
        """The most successful requests in any ``window_seconds`` (default: the quota's)."""
        return self.most_requests_in(window_seconds or self.quota_window_seconds, status=200)

    def _check(self, model: str, body: Any) -> str:
        if not isinstance(body, dict):
            return "body must be an object"
        instances = body.get("instances")
        limit = 1 if model == "gemini-embedding-001" else self.max_instances
        if not isinstance(instances, list) or not 1 <= len(instances) <= limit:
            return f"instances must be a list of 1..{limit} items for {model}"
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict) or not isinstance(inst.get("content"), str) \
                    or not inst["content"]:
                return f"instances[{i}].content must be a non-empty string"
            if inst.get("task_type", TASK_TYPES[0]) not in TASK_TYPES:
                return f"instances[{i}].task_type is not a valid task type"
        dim = (body.get("parameters") or {}).get("outputDimensionality")
        native = NATIVE_DIMS.get(model, DEFAULT_NATIVE_DIM)
        if dim is not None and (not isinstance(dim, int) or not 1 <= dim <= native):
            return f"outputDimensionality must be an integer in 1..{native}"
        return ""

    def _predict(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        native = NATIVE_DIMS.get(model, DEFAULT_NATIVE_DIM)
        dim = (body.get("parameters") or {}).get("outputDimensionality") or native
        predictions = []
        for inst in body["instances"]:
            text = inst["content"]
            values = hashed_embedding(text, native, salt=model)[:dim]
            predictions.append({"embeddings": {
                "values": [float(v) for v in values],
                "statistics": {"truncated": False, "token_count": len(text.split())}}})
        chars = sum(len(inst["content"]) for inst in body["instances"])
        return {"predictions": predictions, "metadata": {"billableCharacterCount": chars}}

    def embedded_texts(self) -> list[str]:
        """Every text of every successful request, in arrival order."""
        return [inst["content"] for r in self.requests if r.status == 200
                for inst in r.body["instances"]]
