"""PROPFIND with a compact multistatus answer.

Windows' WebDAV redirector refuses a PROPFIND answer larger than
``FileAttributesLimitInBytes`` (1,000,000 bytes by default), so every byte per
listed entry counts. WsgiDAV's answer repeats namespace declarations in every
``<response>`` (``xmlns:NS1="urn:schemas-microsoft-com:"``, about 40 bytes per
entry), gives them long generated prefixes, and writes empty values as
``<D:resourcetype></D:resourcetype>``. This module builds the same multistatus
with:

* every namespace declared once, on ``<D:multistatus>``, with short fixed prefixes
  for the namespaces clients use (``D`` for DAV:, ``Z`` for Microsoft's, ``oc`` for
  ownCloud's) and ``n0``, ``n1``, ... for others;
* property values appended under that root: lxml then drops the declarations they
  were parsed or created with and uses the root's prefixes (a namespace that only
  occurs inside a value keeps a declaration of its own);
* empty elements written as ``<x/>``.

What is returned is exactly what WsgiDAV returns (the same property lists from
the resources, one ``<propstat>`` per status); only the serialization differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

from lxml import etree
from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN,
    HTTP_NOT_FOUND,
    DAVError,
    PRECONDITION_CODE_PropfindFiniteDepth,
)

from provider import propfind_direct
from provider.internals import dav_provider, evaluate_if_headers

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

#: Prefixes for the namespaces davbackup's clients use most.
KNOWN_PREFIXES = {
    "DAV:": "D",
    "urn:schemas-microsoft-com:": "Z",
    "http://owncloud.org/ns": "oc",
    "http://apache.org/dav/props/": "A",
}
_XML_NS = "http://www.w3.org/XML/1998/namespace"
#: environ key: which path answered the PROPFIND ("direct" or "generic")
PATH_KEY = "davbackup.propfind"

PropList = list[tuple[str, Any]]


def do_propfind(server: Any, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Answer a PROPFIND for ``server`` (a WsgiDAV ``RequestServer``)."""
    path = environ["PATH_INFO"]
    res = dav_provider(server).get_resource_inst(path, environ)
    depth = environ.setdefault("HTTP_DEPTH", "infinity")  # RFC 4918 §9.1: no Depth = infinity
    if depth not in ("0", "1", "infinity"):
        raise DAVError(HTTP_BAD_REQUEST, f"invalid Depth header: {depth!r}")
    if depth == "infinity" and not server.allow_propfind_infinite:
        raise DAVError(
            HTTP_FORBIDDEN,
            "PROPFIND with Depth: infinity is disabled",
            err_condition=PRECONDITION_CODE_PropfindFiniteDepth,
        )
    if res is None:
        raise DAVError(HTTP_NOT_FOUND, path)
    evaluate_if_headers(server, res, environ)
    mode, names = parse_request(util.parse_xml_body(environ, allow_empty=True))

    body = None
    if getattr(server, "propfind_direct", True):
        body = propfind_direct.answer(server, res, environ, depth, mode, names)
    environ[PATH_KEY] = "direct" if body is not None else "generic"
    if body is None:
        body = multistatus_bytes(generic_answers(res, depth, mode, names))
    start_response(
        "207 Multi-Status",
        [
            ("Content-Type", "application/xml; charset=utf-8"),
            ("Date", util.get_rfc1123_time()),
            ("Content-Length", str(len(body))),
        ],
    )
    return [body]


def generic_answers(res: Any, depth: str, mode: str, names: list[str]) -> list[tuple[str, PropList]]:
    """Each resource's properties as WsgiDAV's resources give them."""
    answers: list[tuple[str, PropList]] = []
    for member in res.get_descendants(depth=depth, add_self=True):
        if mode == "named":
            props = member.get_properties("named", name_list=names)
        else:
            props = member.get_properties(mode)
        answers.append((member.get_href(), props))
    return answers


def parse_request(request: Any) -> tuple[str, list[str]]:
    """``(mode, names)`` of a PROPFIND body; an empty body is ``allprop``."""
    if request is None:
        return "allprop", []
    if request.tag != "{DAV:}propfind":
        raise DAVError(HTTP_BAD_REQUEST, "PROPFIND body must be a DAV:propfind element")
    mode = None
    names: list[str] = []
    for child in request:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        if child.tag == "{DAV:}allprop":
            found = "allprop"
        elif child.tag == "{DAV:}propname":
            found = "name"
        elif child.tag == "{DAV:}prop":
            found = "named"
            names.extend(p.tag for p in child if isinstance(p.tag, str))
        else:
            continue  # DAV:include and unknown elements are ignored
        if mode is not None and mode != found:
            raise DAVError(HTTP_BAD_REQUEST, "allprop, propname and prop are mutually exclusive")
        mode = found
    return mode or "allprop", names  # an empty <propfind/> is taken as allprop


def multistatus_bytes(answers: list[tuple[str, PropList]]) -> bytes:
    """The serialized ``<D:multistatus>`` for ``[(href, [(name, value), ...]), ...]``."""
    nsmap = _namespaces(answers)
    root = etree.Element("{DAV:}multistatus", nsmap=nsmap)
    for href, props in answers:
        response = etree.SubElement(root, "{DAV:}response")
        etree.SubElement(response, "{DAV:}href").text = href
        by_status: dict[str, list[tuple[str, Any]]] = {}
        for name, value in props:
            if isinstance(value, DAVError):
                by_status.setdefault(util.get_http_status_string(value), []).append((name, None))
            else:
                by_status.setdefault("200 OK", []).append((name, value))
        for status, entries in by_status.items():
            propstat = etree.SubElement(response, "{DAV:}propstat")
            prop = etree.SubElement(propstat, "{DAV:}prop")
            for name, value in entries:
                _add_value(prop, name, value)
            etree.SubElement(propstat, "{DAV:}status").text = f"HTTP/1.1 {status}"
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _add_value(parent: Any, name: str, value: Any) -> None:
    if value is None:
        etree.SubElement(parent, name)
    elif isinstance(value, etree._Element):
        if value.text == "" and len(value) == 0:
            value.text = None  # <x/>, not <x></x>
        parent.append(value)  # lxml re-uses the root's declarations
    else:
        text = util.to_unicode_safe(value)
        etree.SubElement(parent, name).text = text or None


def _namespaces(answers: list[tuple[str, PropList]]) -> dict[str, str]:
    """Prefix -> namespace for every property name in ``answers``."""
    uris: set[str] = {"DAV:"}
    for _href, props in answers:
        for name, _value in props:
            uris.add(_namespace_of(name))
    uris.discard("")
    uris.discard(_XML_NS)
    nsmap: dict[str, str] = {}
    others = 0
    for uri in sorted(uris):
        prefix = KNOWN_PREFIXES.get(uri)
        if prefix is None:
            prefix = f"n{others}"
            others += 1
        nsmap[prefix] = uri
    return nsmap


def _namespace_of(clark: str) -> str:
    return clark[1:].split("}", 1)[0] if clark.startswith("{") else ""
