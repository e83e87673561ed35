"""How a JSON request body becomes the handler's ``data``: bounded in depth and typed strictly.

Litestar decodes the body to Python values and then converts the handler's whole signature
with msgspec in lax mode (``strict=False``), because query and path parameters arrive as
strings and must become ints and booleans. Lax mode applies to the body too, where it turns
``"is_active": "false"`` or ``0`` into ``False``: a client that sends the wrong type gets a
guess instead of an error. API.md asks for 422 on a wrong type, so the request class checks
the decoded body against the handler's declared body type with ``strict=True`` first, the
one place every JSON body of every endpoint passes through.

Only a value that lax mode *would* accept is refused here; anything lax mode refuses as well
(a missing field, an unknown one, an array for an object, an empty body) is left to Litestar,
so those answers keep exactly the shape they had.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ClientException, ValidationException

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


class StrictJsonRequest(Request[Any, Any, Any]):
    """Litestar's request, whose JSON body is refused when it nests too deeply (400) or when
    a value has the wrong JSON type for the handler's body schema (422)."""

    async def json(self) -> Any:
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
