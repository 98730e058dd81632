"""The API's routes and schemas: one table the server registers and the OpenAPI document shows.

``ROUTES`` is what ``_app`` adds to the router (by handler name) and what :func:`openapi`
describes; the request bodies and query parameters are checked against the same schemas by
:func:`check_body` and :func:`parse_query`, which understand exactly the small part of JSON
Schema used here (types, required, additionalProperties, bounds, enums).  Semantic checks are
``FileConfig``'s: the service validates a download exactly as the library does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._version import __version__
from ._security import Problem
from ._store import Status

API = "/api/v1"
#: Items one list page may hold; items one batch may add.
MAX_PAGE = 1000
MAX_BATCH = 10_000

_NULLABLE_STRING = {"type": ["string", "null"], "maxLength": 4096}
#: What FileConfig checks in full; the pattern tells a client (and a fuzzer) the shape.
_URL_PATTERN = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+"


def _statuses_pattern(names: list[str]) -> str:
    one = "|".join(names)
    return f"^({one})(,({one}))*$"


SCHEMAS: dict[str, dict[str, Any]] = {
    "DownloadInput": {
        "type": "object",
        "description": "One file to download: the fields of nbdl.FileConfig.",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "url": {
                "type": "string",
                "maxLength": 8192,
                "pattern": _URL_PATTERN,
                "description": "an absolute http(s) URL",
            },
            "filename": {
                **_NULLABLE_STRING,
                "description": "a plain file name inside the folder (default: from the URL)",
            },
            "priority": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
            "size_bytes": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**62},
            "checksum": {**_NULLABLE_STRING, "description": "'alg:hex', e.g. 'sha256:9f86...'"},
            "headers": {
                "type": ["object", "null"],
                "additionalProperties": {"type": "string", "maxLength": 8192},
                "maxProperties": 64,
            },
            "segments": {"type": ["integer", "null"], "minimum": 1, "maximum": 64},
            "mirrors": {
                "type": "array",
                "items": {
                    "type": "string",
                    "maxLength": 8192,
                    "pattern": _URL_PATTERN,
                    "description": "an absolute http(s) URL",
                },
                "maxItems": 32,
            },
            "extract": {"type": ["boolean", "null"]},
            "extract_to": _NULLABLE_STRING,
        },
    },
    "BatchInput": {
        "type": "object",
        "description": "Several files: a list of downloads, or a manifest (text, CSV or JSON, "
        "as 'nbdl fetch -i' reads). Either all are added or none.",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            "items": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/DownloadInput"},
                "maxItems": MAX_BATCH,
            },
            "manifest": {"type": "string", "maxLength": 4 * 1024 * 1024},
            "format": {"type": ["string", "null"], "enum": ["text", "csv", "json", None]},
        },
    },
    "PriorityInput": {
        "type": "object",
        "required": ["priority"],
        "additionalProperties": False,
        "properties": {"priority": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}},
    },
    "Item": {
        "type": "object",
        "required": ["id", "url", "filename", "status", "priority", "bytes_downloaded"],
        "properties": {
            "id": {"type": "integer"},
            "url": {"type": "string"},
            "filename": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in Status]},
            "priority": {"type": "integer"},
            "bytes_downloaded": {"type": "integer"},
            "total_bytes": {"type": ["integer", "null"]},
            "speed": {"type": ["number", "null"], "description": "bytes per second, now"},
            "eta_seconds": {"type": ["number", "null"]},
            "attempts": {"type": "integer"},
            "error": {"type": ["string", "null"]},
            "error_kind": {"type": ["string", "null"]},
            "http_status": {"type": ["integer", "null"]},
            "note": {"type": ["string", "null"]},
            "created_at": {"type": "number"},
            "started_at": {"type": ["number", "null"]},
            "finished_at": {"type": ["number", "null"]},
            "checksum": {"type": ["string", "null"]},
            "segments": {"type": ["integer", "null"]},
            "mirrors": {"type": "array", "items": {"type": "string"}},
            "extract": {"type": ["boolean", "null"]},
            "extract_to": {"type": ["string", "null"]},
            "header_names": {"type": "array", "items": {"type": "string"}},
        },
    },
    "ItemList": {
        "type": "object",
        "required": ["items", "total", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
            "total": {"type": "integer", "description": "items matching the filter"},
            "next_cursor": {
                "type": ["integer", "null"],
                "description": "pass as cursor= for the next page; null on the last page",
            },
        },
    },
    "Stats": {
        "type": "object",
        "required": ["total", "running", "max_workers", "bytes_downloaded", "speed"],
        "properties": {
            "total": {"type": "integer"},
            **{s.value: {"type": "integer"} for s in Status},
            "running": {"type": "integer"},
            "max_workers": {"type": "integer"},
            "bytes_downloaded": {"type": "integer", "description": "of the active items"},
            "speed": {"type": "number", "description": "bytes per second, all items"},
        },
    },
    "Removed": {
        "type": "object",
        "required": ["removed"],
        "properties": {"removed": {"type": "integer"}},
    },
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["title", "status"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
        },
    },
}


@dataclass(frozen=True, slots=True)
class Param:
    """A query (or path) parameter."""

    name: str
    schema: dict[str, Any]
    description: str
    where: str = "query"


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: what the router calls and what the document says."""

    method: str
    path: str
    handler: str
    summary: str
    responses: Mapping[int, tuple[str, str | None] | tuple[str, str, dict[str, Any]]]
    body: str | None = None
    params: tuple[Param, ...] = ()
    #: Answered with something other than JSON (the page, the event stream).
    media: str = "application/json"
    tags: tuple[str, ...] = field(default=("downloads",))


_ID = Param("id", {"type": "integer", "minimum": 1}, "the item's id", "path")
_STATUS = Param(
    "status",
    {"type": "string", "pattern": _statuses_pattern([s.value for s in Status])},
    "comma-separated statuses to keep (" + ", ".join(s.value for s in Status) + ")",
)
#: What a client can do with the id of a download it added (OpenAPI links, for tools).
_LINKS = {
    name: {"operationId": name, "parameters": {"id": "$response.body#/id"}}
    for name in (
        "get_download",
        "change_download",
        "pause_download",
        "resume_download",
        "cancel_download",
        "retry_download",
        "remove_download",
    )
}
_ITEM = {200: ("the item", "Item"), 404: ("no such item", "Problem")}
_ACTION = {**_ITEM, 409: ("not possible in the item's status", "Problem")}

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        f"{API}/downloads",
        "list_downloads",
        "List downloads, oldest first, optionally of some statuses, a page at a time",
        {200: ("a page of items", "ItemList"), 422: ("bad parameter", "Problem")},
        params=(
            _STATUS,
            Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "page size"),
            Param(
                "cursor",
                {"type": "integer", "minimum": 0},
                "the next_cursor of the previous page (items with a greater id)",
            ),
            Param("offset", {"type": "integer", "minimum": 0}, "items to skip"),
        ),
    ),
    Route(
        "POST",
        f"{API}/downloads",
        "add_download",
        "Add one download",
        {
            201: ("added (queued)", "Item", _LINKS),
            409: ("the URL or file name is already in the queue", "Problem"),
            413: ("body too large", "Problem"),
            422: ("invalid download", "Problem"),
        },
        body="DownloadInput",
    ),
    Route(
        "POST",
        f"{API}/downloads/batch",
        "add_batch",
        "Add many downloads at once (all or none)",
        {
            201: ("added (queued)", "ItemList"),
            409: ("a URL or file name is already in the queue", "Problem"),
            413: ("body too large", "Problem"),
            422: ("an invalid download (named by position)", "Problem"),
        },
        body="BatchInput",
    ),
    Route("GET", f"{API}/downloads/{{id}}", "get_download", "One download", _ITEM, params=(_ID,)),
    Route(
        "PATCH",
        f"{API}/downloads/{{id}}",
        "change_download",
        "Change a download's priority",
        {**_ITEM, 422: ("invalid priority", "Problem")},
        body="PriorityInput",
        params=(_ID,),
    ),
    Route(
        "DELETE",
        f"{API}/downloads/{{id}}",
        "remove_download",
        "Remove a download (stopping it); optionally delete its file and partial file",
        {204: ("removed", None), 404: ("no such item", "Problem")},
        params=(
            _ID,
            Param("delete_file", {"type": "boolean"}, "also delete the file (default: false)"),
        ),
    ),
    *(
        Route(
            "POST",
            f"{API}/downloads/{{id}}/{action}",
            f"{action}_download",
            summary,
            _ACTION,
            params=(_ID,),
        )
        for action, summary in (
            ("pause", "Pause a queued or running download (its partial file is kept)"),
            ("resume", "Queue a paused download again (it resumes where it stopped)"),
            ("cancel", "Cancel a download (its partial file is kept for a retry)"),
            ("retry", "Queue a failed or cancelled download again"),
        )
    ),
    Route(
        "GET", f"{API}/stats", "stats", "Totals of the queue", {200: ("totals", "Stats")}, tags=()
    ),
    Route(
        "POST",
        f"{API}/purge",
        "purge",
        "Forget finished downloads (their files stay)",
        {200: ("how many were forgotten", "Removed"), 422: ("bad parameter", "Problem")},
        params=(
            Param(
                "status",
                {
                    "type": "string",
                    "pattern": _statuses_pattern(["completed", "failed", "cancelled"]),
                },
                "comma-separated finished statuses to forget (default: completed)",
            ),
        ),
    ),
    Route(
        "GET",
        f"{API}/events",
        "events",
        "Live changes (Server-Sent Events: item, removed, stats, snapshot), numbered by id; "
        "send Last-Event-ID to get what was missed",
        {200: ("an endless event stream", None)},
        media="text/event-stream",
        tags=(),
    ),
    Route(
        "GET",
        f"{API}/openapi.json",
        "openapi_document",
        "This document",
        {200: ("OpenAPI 3.1", None)},
        tags=(),
    ),
)

_COMMON = {
    400: ("malformed request", "Problem"),
    401: ("no token, or a wrong one", "Problem"),
    403: ("refused: Host or Origin not allowed", "Problem"),
    415: ("the body is not application/json", "Problem"),
    422: ("invalid parameter", "Problem"),
    429: ("too many wrong tokens", "Problem"),
}


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``ROUTES``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {"operationId": route.handler, "summary": route.summary}
        if route.tags:
            operation["tags"] = list(route.tags)
        if route.params:
            operation["parameters"] = [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.where == "path",
                    "description": p.description,
                    "schema": p.schema,
                }
                for p in route.params
            ]
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{route.body}"}}
                },
            }
        responses: dict[str, Any] = {}
        for status, (text, schema, *links) in sorted({**_COMMON, **route.responses}.items()):
            answer: dict[str, Any] = {"description": text}
            if links:
                answer["links"] = links[0]
            if schema is not None:
                media = "application/problem+json" if schema == "Problem" else route.media
                answer["content"] = {media: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
            elif status == 200:
                answer["content"] = {route.media: {}}
            responses[str(status)] = answer
        operation["responses"] = responses
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nbdl service",
            "version": __version__,
            "description": "Downloads through nbdl's engine. Every call needs the token: "
            "'Authorization: Bearer TOKEN' (or the page's cookie).",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
    }


# -- checking input against the schemas ----------------------------------------------------------

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _type_ok(value: object, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return SCHEMAS[ref.rsplit("/", 1)[-1]]


def check_value(value: object, schema: dict[str, Any], where: str) -> None:
    """Raise a 422 problem naming ``where`` if ``value`` does not fit ``schema``."""
    schema = _resolve(schema)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_type_ok(value, kind) for kind in kinds):
            raise Problem(422, "Unprocessable Content", f"{where} must be {' or '.join(kinds)}")
    if "enum" in schema and value not in schema["enum"]:
        raise Problem(422, "Unprocessable Content", f"{where} must be one of {schema['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise Problem(422, "Unprocessable Content", f"{where} must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise Problem(422, "Unprocessable Content", f"{where} must be <= {schema['maximum']}")
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", len(value)):
            raise Problem(422, "Unprocessable Content", f"{where} is too long")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            wanted = schema.get("description") or f"text matching {schema['pattern']}"
            raise Problem(422, "Unprocessable Content", f"{where} must be {wanted}")
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", len(value)):
            raise Problem(422, "Unprocessable Content", f"{where} has too many items")
        for index, element in enumerate(value):
            check_value(element, schema.get("items", {}), f"{where}[{index}]")
    if isinstance(value, dict):
        _check_object(value, schema, where)


def _check_object(value: dict[str, Any], schema: dict[str, Any], where: str) -> None:
    properties: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name in schema.get("required", ()):
        if name not in value:
            raise Problem(422, "Unprocessable Content", f"{where}.{name} is required")
    if len(value) < schema.get("minProperties", 0):
        raise Problem(422, "Unprocessable Content", f"{where} must not be empty")
    if len(value) > schema.get("maxProperties", len(value)):
        raise Problem(422, "Unprocessable Content", f"{where} has too many entries")
    for name, element in value.items():
        if name in properties:
            check_value(element, properties[name], f"{where}.{name}")
        elif extra is False:
            raise Problem(422, "Unprocessable Content", f"{where}.{name} is not a known field")
        elif isinstance(extra, dict):
            check_value(element, extra, f"{where}[{name!r}]")


def parse_query(route: Route, query: Mapping[str, str]) -> dict[str, Any]:
    """The route's query parameters, converted and checked (unknown ones are ignored)."""
    values: dict[str, Any] = {}
    for param in route.params:
        if param.where != "query" or param.name not in query:
            continue
        text = query[param.name]
        kind = param.schema["type"]
        value: object = text
        if kind == "integer":
            try:
                value = int(text)
            except ValueError:
                raise Problem(
                    422, "Unprocessable Content", f"{param.name} must be an integer"
                ) from None
        elif kind == "boolean":
            if text.lower() not in ("true", "false", "1", "0"):
                raise Problem(422, "Unprocessable Content", f"{param.name} must be true or false")
            value = text.lower() in ("true", "1")
        check_value(value, param.schema, param.name)
        values[param.name] = value
    return values
