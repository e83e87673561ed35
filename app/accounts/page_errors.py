"""Errors on the account pages, as pages in words.

The API's problem handlers (app/web/problems.py) stay the one place that decides an error's
status and headers: 400 for a dead link, 403 for a failed CSRF check, 413 for a body over the
limit, 429 and 503 with Retry-After, a logged 500. Here each of them is wrapped so that, for
a request under the pages' path, its answer is rendered as HTML for a person instead of
problem+json for a program; the words come from the problem's type. Wrapped at the app's
level, not the pages' router's, so that a mistyped page (404) or method (405), which match
no route of that router, are pages too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from litestar import Request, Response
from litestar.response import Template

from app.web.problems import PROBLEM_TYPE_BASE

ProblemHandler = Callable[[Request[Any, Any, Any], Any], Response[dict[str, Any]]]
ErrorHandler = Callable[[Request[Any, Any, Any], Any], Response[Any]]

_TRY_AGAIN = "Nothing was changed, and your link still works if it has not expired. Please try again in a minute."
_OPEN_AGAIN = "Please open the link from your mail again."

# (title, what to tell the person) by problem type; any other problem shows its own title
# and detail, which are written for people as well.
WORDS: Mapping[str, tuple[str, str]] = {
    "invalid-token": (
        "This link cannot be used",
        "It is invalid, has expired, or has already been used: each link works once and for a "
        "limited time. Ask for a new one where you asked for this one.",
    ),
    # The only 403 on these pages: the form's CSRF token is missing, or does not match its cookie.
    "permission-denied": (
        "This form could not be accepted",
        f"It has expired or was not sent from this site, so nothing was changed. {_OPEN_AGAIN}",
    ),
    "validation-error": ("This request could not be read", f"Something in it is missing or malformed. {_OPEN_AGAIN}"),
    "malformed-request": ("This request could not be read", f"Something in it is missing or malformed. {_OPEN_AGAIN}"),
    "payload-too-large": ("This form is too large", f"Nothing was changed. {_OPEN_AGAIN}"),
    "not-found": ("Page not found", f"There is no such page. {_OPEN_AGAIN}"),
    "method-not-allowed": ("This page cannot be used this way", _OPEN_AGAIN),
    "too-many-requests": ("Too many requests", _TRY_AGAIN),
    "hashing-capacity-exceeded": ("The service is busy", _TRY_AGAIN),
    "dependency-unavailable": ("The service is unavailable", "Please try again in a minute."),
    "internal-error": ("Something went wrong", "The error has been logged. Please try again later."),
}


def _page_or_problem(answer_problem: ProblemHandler, pages_path: str) -> ErrorHandler:
    def answer(request: Request[Any, Any, Any], exc: Any) -> Response[Any]:
        problem = answer_problem(request, exc)
        path = request.scope["path"]
        if path != pages_path and not path.startswith(pages_path + "/"):
            return problem
        document = problem.content
        kind = str(document.get("type", "")).removeprefix(PROBLEM_TYPE_BASE)
        title, words = WORDS.get(kind, (str(document.get("title")), str(document.get("detail"))))
        return Template(
            "problem.html",
            context={"title": title, "words": words},
            status_code=problem.status_code or 500,
            # Retry-After, WWW-Authenticate: the answer means the same to a browser.
            headers=dict(problem.headers),
        )

    return answer


def pages_under(
    pages_path: str, problem_handlers: Mapping[type[Exception] | int, ProblemHandler]
) -> dict[type[Exception] | int, ErrorHandler]:
    """The app's handlers, for the same exceptions: a page under ``pages_path``, the
    problem document everywhere else."""
    return {key: _page_or_problem(handler, pages_path) for key, handler in problem_handlers.items()}
