"""Great Expectations' Data Docs, served offline by ``lake serve`` under ``/data-docs/``.

The pages Great Expectations writes (``{LAKE_ROOT}/_quality/gx/uncommitted/data_docs/local_site``)
load jQuery, Bootstrap and bootstrap-table from CDNs: offline, the list of
validations stays empty. Served here, each HTML page has those references
replaced by copies shipped in the package (``static/vendor``: jQuery 3.6.1
and Bootstrap 4.6.1 from Debian's libjs-jquery and libjs-bootstrap4, with
their licences; bootstrap-table, which Debian does not package, by a small
stand-in, ``bootstrap-table-shim.js``) and every other remote asset (icons,
fonts, date pickers, charts) left out, so the page renders without waiting
on a network it cannot reach.
"""

from __future__ import annotations

import mimetypes
import posixpath
import re
from typing import Optional

from lake_core.storage import filesystem, fs_path
from lake_schemas import LakePaths
from lake_schemas.paths import join

__all__ = ["data_docs_root", "read_data_docs", "offline_html"]

_VENDOR = {
    "jquery": '<script src="/static/vendor/jquery.js"></script>',
    "bootstrap.min.css": '<link rel="stylesheet" href="/static/vendor/bootstrap.min.css">',
    "bootstrap.min.js": '<script src="/static/vendor/bootstrap.bundle.min.js"></script>',
    "bootstrap-table.min.js": '<script src="/static/vendor/bootstrap-table-shim.js"></script>',
}
_REMOTE_TAG = re.compile(
    r"<(script|link|img)\b[^>]*\b(?:src|href)\s*=\s*[\"'](?:https?:)?//[^\"']+[\"'][^>]*>(?:\s*</script>)?",
    re.IGNORECASE,
)


def data_docs_root(lake_root: str) -> str:
    return join(LakePaths(lake_root).quality, "gx", "uncommitted", "data_docs", "local_site")


def _replacement(tag: str) -> str:
    url = re.search(r"(?:src|href)\s*=\s*[\"']([^\"']+)", tag, re.IGNORECASE)
    name = url.group(1).rsplit("/", 1)[-1] if url else ""
    if "filter-control" in (url.group(1) if url else ""):
        return ""
    if name.startswith("jquery"):
        return _VENDOR["jquery"]
    return _VENDOR.get(name, "")


_REMOTE_CSS_URL = re.compile(r"url\(\s*['\"]?(?:https?:)?//[^)'\"]*['\"]?\s*\)", re.IGNORECASE)
_REMOTE_SRC = re.compile(r"\b(src|href)\s*=\s*([\"'])(?:https?:)?//[^\"']*\2", re.IGNORECASE)


def offline_html(html: str) -> str:
    """``html`` with every remote script and stylesheet swapped for a shipped copy, or left out, and any
    other remote image (logos, Great Expectations' usage pixel) dropped."""
    html = _REMOTE_TAG.sub(lambda m: _replacement(m.group(0)), html)
    html = _REMOTE_CSS_URL.sub("none", html)
    return _REMOTE_SRC.sub(lambda m: f'{m.group(1)}="#"' if m.group(1).lower() == "href" else 'src=""', html)


def read_data_docs(lake_root: str, path: str) -> Optional[tuple[bytes, str]]:
    """(bytes, media type) of the Data Docs file at ``path`` (relative), or None when there is none."""
    clean = posixpath.normpath("/" + path).lstrip("/") or "index.html"
    if clean.startswith("..") or "\\" in clean:
        return None
    fs, _ = filesystem(lake_root)
    full = fs_path(lake_root, join(data_docs_root(lake_root), clean))
    try:
        with fs.open_input_stream(full) as f:
            body = f.read()
    except (FileNotFoundError, IsADirectoryError, OSError):
        return None
    media = mimetypes.guess_type(clean)[0] or "application/octet-stream"
    if media == "text/html":
        body = offline_html(body.decode("utf-8", "replace")).encode()
        media = "text/html; charset=utf-8"
    return body, media
