"""The review console: a web page served by the HTTP listener at /console.

It is static HTML, CSS and JavaScript shipped in the package (server/console/),
no CDN and no build step; every action it takes is a call of the JSON API
(`/v1/{Service}/{Method}`, face crops at `/v1/collections/C/faces/ID/crop.jpg`),
with the API key the person types in, so the console has exactly the rights of
that key and the server has no second way in.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

ASSETS = Path(__file__).resolve().parent / "console"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# The page runs only its own script and talks only to this server.
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
          "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


def _asset(name: str) -> Response:
    path = ASSETS / name
    return FileResponse(path, media_type=TYPES[path.suffix], headers={"Content-Security-Policy": POLICY, "Cache-Control": "no-cache",
                                                                      "X-Content-Type-Options": "nosniff"})


def routes() -> list[Route]:
    async def page(request: Request) -> Response:
        return _asset("index.html")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("console.js", "console.css"):
            return Response("not found", status_code=404, media_type="text/plain")
        return _asset(name)

    async def slash(request: Request) -> Response:
        return RedirectResponse("/console/")

    return [Route("/console", slash, methods=["GET"]), Route("/console/", page, methods=["GET"]),
            Route("/console/{name}", asset, methods=["GET"])]
