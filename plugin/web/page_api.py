"""What the page asks beyond a search: the filterable metadata fields of a model's store, and the
title a hit is shown under (a metadata field chosen in the serve config, else its file's name)."""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Query

from ...image_refs import path_of_ref, printable_path
from .registry import ModelSlot
from .schemas import FieldInfo, FieldsResponse

MAX_FIELDS = 500  # a page's field list, not a dump of a schema without bounds


def hit_title(doc_id: str, image_ref: str | None, metadata: Mapping[str, Any], field: str | None) -> str:
    """``metadata[field]`` (dotted for nested fields) when the document has it, else the file name of
    its image, else its id."""
    value = _dotted(metadata, field) if field else None
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value if v is not None) or None
    if value is not None and not isinstance(value, dict) and str(value).strip():
        return str(value)
    if image_ref:
        name = path_of_ref(image_ref).name
        if name:
            return printable_path(Path(name))
    return doc_id


def _dotted(metadata: Mapping[str, Any], field: str) -> Any:
    value: Any = metadata
    for part in field.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def fields_route(app: FastAPI, slot_for: Callable[[str | None], ModelSlot], names: list[str]) -> None:
    """``GET /api/fields?model=``: what the page's filter box offers."""
    model_enum: dict[str, Any] = {"enum": names}

    @app.get("/api/fields", response_model=FieldsResponse, tags=["search"])
    async def fields(
        model: Annotated[str | None, Query(max_length=100, json_schema_extra=model_enum)] = None,
    ) -> FieldsResponse:
        """The metadata fields a filter can name in this model's store, with the kinds of their values."""
        slot = slot_for(model)
        found = await anyio.to_thread.run_sync(slot.searcher.store.metadata_fields)
        shown = list(found)[:MAX_FIELDS]
        return FieldsResponse(
            model=slot.name,
            fields=[FieldInfo(name=name, kinds=found[name]) for name in shown],
            truncated=len(found) > MAX_FIELDS,
        )
