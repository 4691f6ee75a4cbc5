"""The OHIF Viewer on the node's HTTP port: its ``dist/`` served from ``/`` (node.viewer_bundle
installs it), unknown paths falling back to its ``index.html`` as a single-page app needs,
and an ``app-config.js`` the node writes, pointing the viewer at this node's DICOMweb.

The node's own paths (node.http.auth.NODE_PATHS) never fall back to the viewer: a mistyped
API call gets a 404, not a web page.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
from pathlib import Path

from aiohttp import web

from node.http.auth import Authenticator, node_path
from node.http.session import login_url
from node.viewer_bundle import CURRENT, VIEWER_DIR, Installed, ViewerInstallError, installed

# Browsers refuse to compile WebAssembly streamed as anything else, or to run a module
# script that is not JavaScript; the rest as the system's table says.
_TYPES = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
          ".map": "application/json", ".woff2": "font/woff2", ".json": "application/json"}

# webpack names the bundles it emits by their content's hash: such a file never changes.
_HASHED = re.compile(r"(^|[./])[0-9a-f]{16,}\.")
_ASSET = re.compile(r"\.[A-Za-z0-9]{1,8}$")  # a file name, not an OHIF route

_NOT_INSTALLED = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PACSmesh: no viewer installed</title>
<style>body{font-family:sans-serif;max-width:40em;margin:4em auto;padding:0 1em}</style>
</head><body><h1>No web viewer is installed on this node</h1>
<p>DICOMweb is served at <code>/dicom-web</code>. To open studies in a browser, install the
OHIF Viewer on this node (from npm, or from any member of the mesh that has it):</p>
<pre>pacsmesh viewer install</pre>
<p>Then reload this page.</p></body></html>
"""


def app_config(aet: str) -> str:
    """OHIF's ``window.config``: one DICOMweb data source, this node, at the origin the
    browser used to reach it (so a node behind NAT or with several addresses just works)."""
    name = json.dumps(f"PACSmesh {aet}")
    return f"""/* Written by the PACSmesh node: its own DICOMweb. */
(function () {{
  var root = window.location.origin;
  window.config = {{
    name: 'pacsmesh',
    routerBasename: '/',
    extensions: [],
    modes: [],
    customizationService: {{}},
    showStudyList: true,
    maxNumberOfWebWorkers: 3,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    investigationalUseDialog: {{ option: 'never' }},
    maxNumRequests: {{ interaction: 100, thumbnail: 25, prefetch: 25 }},
    defaultDataSourceName: 'pacsmesh',
    dataSources: [{{
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'pacsmesh',
      configuration: {{
        friendlyName: {name},
        name: 'pacsmesh',
        qidoRoot: root + '/dicom-web',
        wadoRoot: root + '/dicom-web',
        wadoUriRoot: root + '/wado',
        qidoSupportsIncludeField: true,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: {{ enabled: true, relativeResolution: 'studies' }},
        omitQuotationForMultipartRequest: true,
      }},
    }}],
  }};
}})();
"""


def _file_headers(path: Path) -> dict[str, str]:
    kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] \
        or "application/octet-stream"
    if _HASHED.search(path.name):
        return {"Content-Type": kind, "Cache-Control": "public, max-age=31536000, immutable"}
    # index.html, sw.js: revalidated, so an upgraded viewer is picked up at once.
    return {"Content-Type": kind, "Cache-Control": "no-cache"}


def _file_in(dist: Path, rel: str) -> Path | None:
    if not rel or "\x00" in rel:
        return None
    candidate = (dist / rel).resolve()
    if not candidate.is_relative_to(dist) or not candidate.is_file():
        return None
    return candidate


def routes(data_dir: Path, aet: str, authenticator: Authenticator) -> list[web.RouteDef]:
    """Register last: the catch-all answers only what no other route of the node did."""
    config_js = app_config(aet).encode()
    current = data_dir / VIEWER_DIR / CURRENT
    known: dict[str, Installed] = {}  # by the symlink's target: an install swaps it

    def viewer_now() -> Installed | None:
        try:
            target = os.readlink(current)
        except OSError:
            return None
        if target not in known:
            found = installed(data_dir)
            if found is None:
                return None
            known.clear()
            known[target] = found
        return known[target]

    async def serve(request: web.Request) -> web.StreamResponse:
        path = request.path
        if node_path(path):
            if path == "/api" or path.startswith("/api/"):
                return web.json_response({"error": f"no such endpoint: {path}"}, status=404)
            raise web.HTTPNotFound(text=f"no such resource: {path}\n")
        if path == "/app-config.js":
            return web.Response(body=config_js, content_type="text/javascript",
                                headers={"Cache-Control": "no-cache"})
        try:
            viewer = viewer_now()
        except ViewerInstallError as exc:
            raise web.HTTPServiceUnavailable(text=f"{exc}\n") from None
        if viewer is None:  # 404: nothing is here yet, the page says how to put it here
            return web.Response(text=_NOT_INSTALLED, content_type="text/html", status=404,
                                headers={"Cache-Control": "no-store"})
        dist = viewer.dist
        found = _file_in(dist, path.lstrip("/"))
        if found is not None and found.name != "index.html":
            return web.FileResponse(found, headers=_file_headers(found))
        if found is None and _ASSET.search(path):
            raise web.HTTPNotFound(text=f"the viewer has no file {path}\n")
        # A route of the viewer (/viewer, /, a study list URL): its page, once the browser
        # may read what the page will ask for.
        if not await authenticator.may_read(request):
            raise web.HTTPSeeOther(login_url(request.path_qs))
        return web.FileResponse(dist / "index.html", headers=_file_headers(dist / "index.html"))

    return [web.get("/{tail:.*}", serve)]
