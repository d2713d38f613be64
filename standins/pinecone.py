"""A local stand-in for a Pinecone dense index's REST data plane (cosine metric).

Routes and JSON shapes follow what the ``pinecone`` 10.x SDK sends and decodes (its
``Index`` methods and ``models.vectors.responses``): camelCase keys, ``Api-Key`` header,
``{"code", "message", "details"}`` error bodies. Differences from the real service:
reads are immediately consistent, there is one index per server (its control plane,
``/indexes``, creates and describes that one serverless index: same dimension, cosine,
ready at once, ``host`` = this server), and ``usage`` is a token figure.
Filters support $eq $ne $gt $gte $lt $lte $in $nin $exists $and $or.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from standins._http import Reply, StandinServer

MAX_UPSERT = 1000
MAX_TOP_K = 10_000
MAX_LIST = 100
_GRPC_CODE = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 429: 8, 500: 13, 503: 14}


class BadRequest(Exception):
    pass


def _cmp(op: str, have: Any, want: Any) -> bool:
    numeric = isinstance(have, int | float) and not isinstance(have, bool) \
        and isinstance(want, int | float) and not isinstance(want, bool)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if not numeric:
            return False
        return bool({"$gt": have > want, "$gte": have >= want,
                     "$lt": have < want, "$lte": have <= want}[op])
    values = have if isinstance(have, list) else [have]
    if op == "$eq":
        return want in values
    if op == "$ne":
        return want not in values
    if op == "$in":
        return any(v in want for v in values)
    if op == "$nin":
        return not any(v in want for v in values)
    raise BadRequest(f"unsupported operator {op}")


def matches_filter(metadata: dict[str, Any], spec: Any) -> bool:
    """Pinecone filter semantics; an absent field satisfies only $ne, $nin and
    ``$exists: false``."""
    if not isinstance(spec, dict):
        raise BadRequest("filter must be an object")
    for key, cond in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise BadRequest(f"{key} needs a non-empty list")
            results = [matches_filter(metadata, c) for c in cond]
            if not (all(results) if key == "$and" else any(results)):
                return False
            continue
        ops = cond if isinstance(cond, dict) else {"$eq": cond}
        for op, want in ops.items():
            if op in ("$in", "$nin") and not isinstance(want, list):
                raise BadRequest(f"{op} needs a list")
            if op == "$exists":
                if (key in metadata) != bool(want):
                    return False
            elif key not in metadata:
                if op not in ("$ne", "$nin"):
                    return False
            elif not _cmp(op, metadata[key], want):
                return False
    return True


def _check_metadata(meta: Any) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise BadRequest("metadata must be an object")
    for key, value in meta.items():
        ok = isinstance(value, str | int | float | bool) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value))
        if not ok:
            raise BadRequest(f"Metadata value for field '{key}' must be a string, number, "
                             "boolean or list of strings")
    return dict(meta)


class PineconeStandin(StandinServer):
    """``PineconeStandin(dimension=384).start()``; then
    ``Pinecone(api_key=...).Index(host=standin.url)``."""

    def __init__(self, *, dimension: int, api_key: str = "standin-key",
                 latency_seconds: float = 0.0) -> None:
        super().__init__(latency_seconds=latency_seconds)
        self.dimension = dimension
        self.api_key = api_key
        self._data: dict[str, dict[str, tuple[np.ndarray, dict[str, Any]]]] = {}
        self._data_lock = threading.Lock()
        self.index_name: str | None = None  # set by a create request (control plane)
        self._spec: dict[str, Any] = {}
        self._routes: dict[tuple[str, str], Callable[[Any, dict[str, list[str]]], Any]] = {
            ("POST", "/vectors/upsert"): self._upsert,
            ("POST", "/query"): self._query,
            ("GET", "/vectors/fetch"): self._fetch,
            ("POST", "/vectors/update"): self._update,
            ("POST", "/vectors/delete"): self._delete,
            ("GET", "/vectors/list"): self._list,
            ("POST", "/describe_index_stats"): self._stats,
        }

    def error(self, status: int, message: str) -> Any:
        return {"code": _GRPC_CODE.get(status, 2), "message": message, "details": []}

    def handle(self, method: str, path: str, query: dict[str, list[str]],
               headers: dict[str, str], body: Any) -> Reply:
        if headers.get("api-key") != self.api_key:
            return 401, self.error(401, "Invalid API Key")
        if path == "/indexes" or path.startswith("/indexes/"):
            with self._data_lock:
                return self._control(method, path, body)
        route = self._routes.get((method, path))
        if route is None:
            return 404, self.error(404, f"Not found: {method} {path}")
        try:
            with self._data_lock:
                return 200, route(body if body is not None else {}, query)
        except BadRequest as exc:
            return 400, self.error(400, str(exc))

    def _ns(self, name: Any) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
        return self._data.setdefault(str(name or ""), {})

    def _vector(self, values: Any) -> np.ndarray:
        if not isinstance(values, list) or len(values) != self.dimension:
            got = len(values) if isinstance(values, list) else type(values).__name__
            raise BadRequest(f"Vector dimension {got} does not match the dimension of the "
                             f"index {self.dimension}")
        array = np.asarray(values, dtype=np.float32)
        if not np.all(np.isfinite(array)) or not np.any(array):
            raise BadRequest("Dense vectors must contain at least one non-zero value")
        return array

    # -- control plane: the one serverless index this server serves --------------------
    def _control(self, method: str, path: str, body: Any) -> Reply:
        name = path.removeprefix("/indexes").strip("/")
        if method == "GET" and not name:
            return 200, {"indexes": [self._model()] if self.index_name else []}
        if method == "GET":
            if name != self.index_name:
                return 404, self.error(404, f"Resource {name} not found")
            return 200, self._model()
        if method == "POST" and not name:
            return self._create(body)
        return 404, self.error(404, f"Not found: {method} {path}")

    def _create(self, body: Any) -> Reply:
        """The 2026-07 create request the SDK sends: name, a dense vector field in
        ``schema.fields`` (dimension, metric) and a managed (serverless) deployment."""
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,44}", name):
            return 400, self.error(400, "name must be 1-45 lowercase alphanumerics or '-'")
        fields = (body.get("schema") or {}).get("fields") or {}
        dense = [f for f in fields.values()
                 if isinstance(f, dict) and f.get("type") == "dense_vector"]
        deployment = body.get("deployment") or {}
        if len(dense) != 1 or deployment.get("deployment_type") != "managed":
            return 400, self.error(400, "one dense_vector field and a managed deployment "
                                        "(serverless: cloud, region) are required")
        if dense[0].get("dimension") != self.dimension:
            return 400, self.error(400, f"this stand-in serves dimension {self.dimension}")
        if dense[0].get("metric", "cosine") != "cosine":
            return 400, self.error(400, "this stand-in serves the cosine metric only")
        if self.index_name is not None:
            return 409, self.error(409, f"Resource {self.index_name} already exists")
        self.index_name = name
        self._spec = {"schema": body["schema"], "deployment": deployment,
                      "deletion_protection": body.get("deletion_protection") or "disabled"}
        return 201, self._model()

    def _model(self) -> dict[str, Any]:
        return {"name": self.index_name, "host": self.url, **self._spec,
                "status": {"ready": True, "state": "Ready"}, "tags": None}

    # -- routes -----------------------------------------------------------------------
    def _upsert(self, body: Any, _q: dict[str, list[str]]) -> Any:
        vectors = body.get("vectors")
        if not isinstance(vectors, list) or not 1 <= len(vectors) <= MAX_UPSERT:
            raise BadRequest(f"vectors must hold 1..{MAX_UPSERT} items")
        staged = []
        for v in vectors:
            vid = v.get("id") if isinstance(v, dict) else None
            if not isinstance(vid, str) or not 1 <= len(vid) <= 512:
                raise BadRequest("every vector needs an id of 1..512 characters")
            staged.append((vid, self._vector(v.get("values")), _check_metadata(v.get("metadata"))))
        ns = self._ns(body.get("namespace"))
        for vid, array, meta in staged:
            ns[vid] = (array, meta)
        return {"upsertedCount": len(staged)}

    def _query(self, body: Any, _q: dict[str, list[str]]) -> Any:
        top_k = body.get("topK")
        if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise BadRequest(f"topK must be in 1..{MAX_TOP_K}")
        with_values, with_meta = bool(body.get("includeValues")), bool(body.get("includeMetadata"))
        if top_k > 1000 and (with_values or with_meta):
            raise BadRequest("topK > 1000 cannot include values or metadata")
        ns = self._ns(body.get("namespace"))
        if "id" in body:
            if body["id"] not in ns:
                return {"matches": [], "namespace": body.get("namespace", ""),
                        "usage": {"readUnits": 1}}
            query = ns[body["id"]][0]
        else:
            query = self._vector(body.get("vector"))
        spec = body.get("filter")
        pool = [(vid, a, m) for vid, (a, m) in ns.items()
                if spec is None or matches_filter(m, spec)]
        q = query / np.linalg.norm(query)
        scored = sorted(((float(a @ q / np.linalg.norm(a)), vid, a, m) for vid, a, m in pool),
                        key=lambda t: (-t[0], t[1]))[:top_k]
        matches = []
        for score, vid, a, m in scored:
            item: dict[str, Any] = {"id": vid, "score": score,
                                    "values": [float(x) for x in a] if with_values else []}
            if with_meta and m:
                item["metadata"] = m
            matches.append(item)
        return {"matches": matches, "namespace": body.get("namespace", ""),
                "usage": {"readUnits": 1 + len(ns) // 1000}}

    def _fetch(self, _body: Any, query: dict[str, list[str]]) -> Any:
        ids = query.get("ids", [])
        if not ids:
            raise BadRequest("ids are required")
        namespace = (query.get("namespace") or [""])[0]
        ns = self._ns(namespace)
        found = {}
        for vid in ids:
            if vid in ns:
                array, meta = ns[vid]
                found[vid] = {"id": vid, "values": [float(x) for x in array],
                              **({"metadata": meta} if meta else {})}
        return {"vectors": found, "namespace": namespace, "usage": {"readUnits": 1}}

    def _update(self, body: Any, _q: dict[str, list[str]]) -> Any:
        ns = self._ns(body.get("namespace"))
        set_meta = _check_metadata(body.get("setMetadata"))
        values = self._vector(body["values"]) if "values" in body else None
        if "id" in body:
            targets = [body["id"]] if body["id"] in ns else []
        elif "filter" in body:
            targets = [vid for vid, (_, m) in ns.items() if matches_filter(m, body["filter"])]
        else:
            raise BadRequest("update needs an id or a filter")
        if not body.get("dryRun"):
            for vid in targets:
                array, meta = ns[vid]
                ns[vid] = (values if values is not None else array, {**meta, **set_meta})
        return {"matchedRecords": len(targets)} if "filter" in body else {}

    def _delete(self, body: Any, _q: dict[str, list[str]]) -> Any:
        ns = self._ns(body.get("namespace"))
        if body.get("deleteAll"):
            ns.clear()
        elif "ids" in body:
            for vid in body["ids"]:
                ns.pop(vid, None)
        elif "filter" in body:
            for vid in [v for v, (_, m) in ns.items() if matches_filter(m, body["filter"])]:
                del ns[vid]
        else:
            raise BadRequest("delete needs ids, deleteAll or a filter")
        return {}

    def _list(self, _body: Any, query: dict[str, list[str]]) -> Any:
        namespace = (query.get("namespace") or [""])[0]
        prefix = (query.get("prefix") or [""])[0]
        limit = int((query.get("limit") or [str(MAX_LIST)])[0])
        if not 1 <= limit <= MAX_LIST:
            raise BadRequest(f"limit must be in 1..{MAX_LIST}")
        token = (query.get("paginationToken") or [""])[0]
        after = base64.urlsafe_b64decode(token.encode()).decode() if token else ""
        ids = sorted(v for v in self._ns(namespace) if v.startswith(prefix) and v > after)
        page = ids[:limit]
        out: dict[str, Any] = {"vectors": [{"id": v} for v in page], "namespace": namespace,
                               "usage": {"readUnits": 1}}
        if len(ids) > limit:
            out["pagination"] = {"next": base64.urlsafe_b64encode(page[-1].encode()).decode()}
        return out

    def _stats(self, body: Any, _q: dict[str, list[str]]) -> Any:
        spec = body.get("filter")
        counts = {name: sum(1 for _, m in ns.values() if spec is None or matches_filter(m, spec))
                  for name, ns in self._data.items() if ns}
        return {"namespaces": {n: {"vectorCount": c} for n, c in counts.items()},
                "dimension": self.dimension, "indexFullness": 0.0,
                "totalVectorCount": sum(counts.values()), "metric": "cosine",
                "vectorType": "dense"}

    # -- test helpers -----------------------------------------------------------------
    def stored_ids(self, namespace: str = "") -> list[str]:
        with self._data_lock:
            return sorted(self._data.get(namespace, {}))
