"""Request bodies in the OpenAPI document for the routes that read their body themselves
(uploads and imports, the ACME JWS): FastAPI describes only the bodies it parses, so these
routes pass what `request_body` builds as `openapi_extra`. Only the document changes; the
handlers parse exactly as before."""

from typing import Any

from pydantic import BaseModel

Schema = dict[str, Any]


def request_body(description: str, content: dict[str, Schema], required: bool = True) -> Schema:
    """`openapi_extra` for a route: its request body, one schema per media type."""
    media = {kind: {"schema": schema} for kind, schema in content.items()}
    body = {"description": description, "required": required, "content": media}
    return {"requestBody": body}


def model_schema(model: type[BaseModel]) -> Schema:
    """A pydantic model's JSON Schema with its nested models written in place: a model that
    is no route's body parameter has no entry under components/schemas to refer to."""
    schema = model.model_json_schema()
    defs: dict[str, Schema] = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    result: Schema = inline(schema)
    return result
