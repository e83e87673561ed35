"""How a JSON request body becomes the handler's ``data``: bounded in depth and typed strictly.

Litestar decodes the body to Python values and then converts the handler's whole signature
with msgspec in lax mode (``strict=False``), because query and path parameters arrive as
strings and must become ints and booleans. Lax mode applies to the body too, where it turns
``"is_active": "false"`` or ``0`` into ``False``: a client that sends the wrong type gets a
guess instead of an error. API.md asks for 422 on a wrong type, so the request class checks
the decoded body against the handler's declared body type with ``strict=True`` first, the
one place every JSON body of every endpoint passes through.

A body is read as JSON only when it says so (``application/json`` or ``+json``) or says
nothing; any other media type is 415. A browser sends ``text/plain`` across origins without
a preflight, so a page on any site could otherwise make its visitors' browsers register
accounts or try logins with a JSON body typed as text (FastAPI's CVE-2021-32677), spread
over as many addresses as it has visitors. Programs that send no Content-Type still work.

Only a value that lax mode *would* accept is refused here; anything lax mode refuses as well
(a missing field, an unknown one, an array for an object, an empty body) is left to Litestar,
so those answers keep exactly the shape they had.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ClientException, HTTPException, ValidationException

from app.web.limits import MAX_JSON_DEPTH, json_depth_exceeds

BODY_PARAMETER = "data"  # Litestar's name for the request body in a handler's signature


def strict_type_error(value: Any, body_type: Any) -> msgspec.ValidationError | None:
    """The error strict decoding finds in ``value`` where lax decoding finds none, else None."""
    try:
        msgspec.convert(value, type=body_type, strict=True)
    except msgspec.ValidationError as strict_error:
        try:
            msgspec.convert(value, type=body_type, strict=False)
        except msgspec.ValidationError:
            return None  # wrong under either mode: Litestar reports it as it always has
        return strict_error
    return None


def _as_litestar_error(error: msgspec.ValidationError) -> ValidationException:
    """The error as Litestar reports a body field (app/web/problems.py names the field)."""
    message, _, location = str(error).partition(" - at `$.")
    key = location.rstrip("`") or BODY_PARAMETER
    return ValidationException(detail="Validation failed", extra=[{"message": message, "key": key, "source": "body"}])


def is_json_media_type(content_type: str | None) -> bool:
    """Whether a body with this Content-Type may be read as JSON: none given, or JSON's."""
    if content_type is None or not content_type.strip():
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


class StrictJsonRequest(Request[Any, Any, Any]):
    """Litestar's request, whose JSON body is refused when it is typed as something else
    (415), nests too deeply (400), or has a value of the wrong JSON type for the handler's
    body schema (422)."""

    async def json(self) -> Any:
        if not is_json_media_type(self.headers.get("content-type")):
            raise HTTPException(
                status_code=415, detail="The body must be JSON, sent as Content-Type: application/json."
            )
        try:
            value = await super().json()
        except RecursionError:
            raise ClientException(f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels.") from None
        if json_depth_exceeds(value, MAX_JSON_DEPTH):
            raise ClientException(f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels.")
        body = self.route_handler.parsed_fn_signature.parameters.get(BODY_PARAMETER)
        if body is not None and value is not None and (error := strict_type_error(value, body.annotation)):
            raise _as_litestar_error(error)
        return value
