"""The console's HTML pages. Each page shows only what its viewer may see (their own
things; an administrator everything); anything else is the same 404 as a missing one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from outpost.service.console import queries, views
from outpost.service.console.access import Viewer, state_of, viewer_of
from outpost.service.console.rendering import render, secure_headers
from outpost.service.console.signin import signin_redirect

router = APIRouter(include_in_schema=False)


def not_found(request: Request, viewer: Viewer, what: str) -> Response:
    return render(
        request,
        "error.html",
        status_code=404,
        viewer=viewer,
        message=f"No {what} with that id, or it is not yours to see.",
    )


Page = Callable[[Request, Viewer, dict[str, Any]], Awaitable[Response]]


def about_one(
    query: Callable[..., dict[str, Any] | None], what: str
) -> Callable[[Page], Callable[[Request, str], Awaitable[Response]]]:
    """A page about one ``what`` (route parameter ``item_id``): shown with the row that
    ``query`` reads by that id as the viewer may see it; a visitor not signed in is sent
    to sign in, and a missing id or one not theirs gets the same 404."""

    def wrap(page: Page) -> Callable[[Request, str], Awaitable[Response]]:
        async def handler(request: Request, item_id: str) -> Response:
            viewer = await viewer_of(request)
            if viewer is None:
                return signin_redirect(request)
            key = views.parse_id(item_id)
            db = state_of(request).db
            row = await db.read(query, key, viewer.owner_filter) if key else None
            if row is None:
                return not_found(request, viewer, what)
            return await page(request, viewer, row)

        handler.__name__ = page.__name__
        return handler

    return wrap


@router.get("/")
@router.get("/console")
@router.get("/console/")
async def home(request: Request) -> Response:
    return secure_headers(RedirectResponse("/console/endpoints", status_code=303))


@router.get("/console/endpoints")
async def endpoints_page(request: Request) -> Response:
    viewer = await viewer_of(request)
    if viewer is None:
        return signin_redirect(request)
    rows = await views.endpoint_rows(state_of(request), viewer)
    return render(request, "endpoints.html", viewer=viewer, endpoints=rows, nav="endpoints")


@router.get("/console/endpoints/{item_id}")
@about_one(queries.get_endpoint, "endpoint")
async def endpoint_page(request: Request, viewer: Viewer, ep: dict[str, Any]) -> Response:
    state = state_of(request)
    counts = await state.db.read(queries.endpoint_counts, [ep])
    row = await views.endpoint_row(state, ep, counts[ep["id"]])
    mep = await views.mep_console(state, ep) if ep["multi_user"] else None
    ids = [ep["id"]] + [u["id"] for u in (mep["user_endpoints"] if mep else [])]
    tasks = await state.db.read(queries.recent_tasks, ids, viewer.owner_filter, 50)
    return render(
        request,
        "endpoint.html",
        viewer=viewer,
        ep=row,
        mep=mep,
        tasks=[views.task_row(t) for t in tasks],
        nav="endpoints",
    )


@router.get("/console/tasks/{item_id}")
@about_one(queries.get_task, "task")
async def task_page(request: Request, viewer: Viewer, task: dict[str, Any]) -> Response:
    return render(
        request,
        "task.html",
        viewer=viewer,
        task=views.task_row(task),
        endpoint_name=task.get("endpoint_name"),
        result=views.result_view(task.get("result")),
        exception=task.get("exception"),
        error_details=task.get("error_details") or {},
        retries=task.get("retries") or 0,
        nav="tasks",
    )


@router.get("/console/groups")
async def groups_page(request: Request) -> Response:
    viewer = await viewer_of(request)
    if viewer is None:
        return signin_redirect(request)
    rows = await state_of(request).db.read(queries.list_groups, viewer.owner_filter)
    return render(request, "groups.html", viewer=viewer, groups=rows, nav="groups")


@router.get("/console/groups/{item_id}")
@about_one(queries.get_group, "task group")
async def group_page(request: Request, viewer: Viewer, group: dict[str, Any]) -> Response:
    tasks = await state_of(request).db.read(queries.group_tasks, group["id"])
    return render(
        request,
        "group.html",
        viewer=viewer,
        group=group,
        tasks=[views.task_row(t) for t in tasks],
        nav="groups",
    )
