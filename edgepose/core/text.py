"""Text from users that ends up in logs: passwords in URLs, control characters."""

from __future__ import annotations

import base64
import re
from typing import Dict, Optional, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

# C0 controls (newline, carriage return, tab, escape, ...), DEL and the C1 controls
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# scheme://user:password@ in a string urlsplit refuses (an unclosed IPv6 bracket)
_USERINFO = re.compile(r"(://[^/@:]*:)[^/]*@")


def redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (rtsp://user:secret@cam/..., a model mirror's
    http://user:secret@host/...): for logs, errors and reports, which end up in the journal."""
    uri = str(uri)
    if "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:  # not a URL urlsplit takes: redact by pattern
        return _USERINFO.sub(r"\1***@", uri)
    if password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def control_character(text: str) -> Optional[str]:
    """The first control character of ``text`` (newline, tab, escape, ...) as ``repr`` shows it
    (``'\\n'``), or None.  Such characters in a device id, a topic or a source would let a value
    forge lines of the log (``\\nedgepose: ERROR: ...``) or reach MQTT topics."""
    m = _CONTROL.search(str(text))
    return None if m is None else repr(m.group())


def split_credentials(url: str) -> Tuple[str, Dict[str, str]]:
    """``http://user:pass@host/x`` -> (``http://host/x``, ``{"Authorization": "Basic ..."}``): urllib
    does not use the user info of a URL (it fails as part of the host name), so it goes in a header.
    A URL without user info comes back as it is, with no headers."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, {}
    cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return bare, {"Authorization": "Basic " + base64.b64encode(cred).decode()}
