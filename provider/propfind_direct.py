"""PROPFIND's direct path: the multistatus written straight from catalog entries.

WsgiDAV answers a PROPFIND by building a resource object per listed entry, asking it
for each property through ``get_property_value`` (which consults the lock manager
and the property manager name by name), collecting lxml elements and serializing the
tree. For a folder of 2,000 files that is most of the request's time. This module
writes the same answer as text, from what one listing query and one property query
return (the children as plain tuples, ``davbackup/listing.py``; each child's href is
its quoted name after the folder's quoted path, made once):

* the live properties of RFC 4918 (``resourcetype``, ``creationdate``,
  ``getcontentlength``, ``getcontenttype``, ``getetag``, ``getlastmodified``,
  ``displayname``, ``supportedlock``, and an empty ``lockdiscovery`` when no lock is
  held at or below the folder), ``oc:checksums`` and the dead properties (Windows'
  ``Win32*`` times and anything else clients store) are written here, each by a
  small function made once per request and property name;
* the quota properties, and ``lockdiscovery`` while locks are held nearby, are asked
  from the entry's resource exactly as WsgiDAV asks, so they never answer differently;
* requests it does not cover (``propname``, Depth infinity, history resources,
  property names without a namespace, a stored value that does not parse) return
  None and take the generic path.

The answer has the form :func:`provider.propfind.multistatus_bytes` gives the generic
one: the same namespace prefixes declared once on the root, one ``<propstat>`` per
status in the order statuses first occur, empty values as ``<x/>``. A dead
property's stored value (the element WsgiDAV serialized at PROPPATCH, with every
namespace declaration that was in scope there) is re-prefixed without parsing when
it is one element with plain text; anything else (attributes, children,
``xml:lang``, character references) goes through lxml. Declarations a value does not
use are dropped, so the answer is never longer than the generic one.
``tests/provider/test_provider_propfind_direct.py`` compares both paths, parsed, for every
property set a known client sends.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from lxml import etree
from wsgidav import util
from wsgidav.dav_error import DAVError, as_DAVError

from davbackup.fs import Entry
from davbackup.listing import Child
from davbackup.tree import join_path, split_path
from provider import propfind as generic
from provider.errors import dav_errors
from provider.header_text import mime_key
from provider.internals import dav_provider
from provider.resources import (
    OC_CHECKSUM,
    OC_CHECKSUMS,
    QUOTA_AVAILABLE,
    QUOTA_USED,
    CollectionResource,
    FileResource,
)

Environ = dict[str, Any]

_XML_NS = "http://www.w3.org/XML/1998/namespace"
#: characters WsgiDAV's ``get_href`` leaves unquoted (Nautilus chokes on ``%28``)
_HREF_SAFE = "/" + "!*'()," + "$-_|."
_OK = "200 OK"
_NOT_FOUND = "404 Not Found"
_OK_END = f"</D:prop><D:status>HTTP/1.1 {_OK}</D:status></D:propstat></D:response>"
_NO_PROPS: dict[str, str] = {}
#: an href that ``quote`` would leave as it is
_PLAIN_HREF = re.compile(r"[A-Za-z0-9_.\-~!*'(),$|/]*")
_LOCK_NAMES = ("{DAV:}lockdiscovery", "{DAV:}supportedlock")
_SUPPORTEDLOCK = (
    "<D:supportedlock>"
    + "".join(
        f"<D:lockentry><D:lockscope><D:{scope}/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>"
        for scope in ("exclusive", "shared")
    )
    + "</D:supportedlock>"
)
#: a stored dead property that is one element with text only (and namespace declarations)
_SIMPLE_START = re.compile(
    r'<(?:(?P<prefix>[A-Za-z_][\w.\-]*):)?(?P<local>[A-Za-z_][\w.\-]*)'
    r'(?P<decls>(?:\s+xmlns(?::[A-Za-z_][\w.\-]*)?="[^"<&]*")*)\s*(?P<end>/?>)'
)
_DECL = re.compile(r'xmlns(?::([A-Za-z_][\w.\-]*))?="([^"<&]*)"')


#: (child, dead properties, resource or None) -> the property's XML when its status is
#: 200, else ``(status, XML)``
Getter = Callable[[Child, dict[str, str], Any], "str | tuple[str, str]"]
_Row = tuple[Child, dict[str, str], Any, str]  # entry, dead properties, resource if built, href


class _Unsupported(Exception):
    """The request is left to the generic path."""


def answer(server: Any, res: Any, environ: Environ, depth: str, mode: str, names: list[str]) -> bytes | None:
    """The serialized multistatus for this PROPFIND, or None to take the generic path."""
    if mode not in ("allprop", "named") or depth not in ("0", "1"):
        return None
    if type(res) not in (FileResource, CollectionResource) or res.entry is None:
        return None  # history resources, PUT placeholders
    try:
        return _Writer(server, res, environ, mode, names).write(depth)
    except _Unsupported:
        return None


def escape(text: str) -> str:
    """Text content as lxml serializes it."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    return text


def _quoted(name: str) -> str:
    """A path or name as it appears in an href (as WsgiDAV's ``get_href`` quotes it)."""
    return name if _PLAIN_HREF.fullmatch(name) else quote(name, safe=_HREF_SAFE)


class _Writer:
    """One PROPFIND answer."""

    def __init__(self, server: Any, res: Any, environ: Environ, mode: str, names: list[str]) -> None:
        self.provider = dav_provider(server)
        self.res = res
        self.environ = environ
        self.allprop = mode == "allprop"
        self.names = names
        self.config = environ["wsgidav.config"]
        self.href_base = quote(self.provider.mount_path + self.provider.share_path, safe=_HREF_SAFE)
        self.nsmap: dict[str, str] = {}
        self.prefix_of: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.mime_types: dict[str, str] = {}
        self.getters: dict[tuple[str, bool], Getter] = {}
        self.allprop_lists: dict[tuple, list[str]] = {}
        self.rfc1123: dict[int, str] = {}
        self.rfc3339: dict[int, str] = {}
        self.locks_nearby = False
        self.folder_path = "/"  # the listed folder's path, ending in "/" (for children's resources)
        self._start_tag = ""

    # --- the listing ----------------------------------------------------------------

    def write(self, depth: str) -> bytes:
        res, ns = self.res, self.provider.namespace(self.environ)
        lock_manager = self.provider.lock_manager
        self.with_locks = lock_manager is not None
        if self.with_locks:
            self.locks_nearby = bool(lock_manager.storage.get_lock_list(
                res.get_ref_url(), include_root=True, include_children=True, token_only=True))
        entry = res.entry
        with dav_errors():
            own, children, by_node = ns.node_listing(entry, depth == "1" and res.is_collection)
            own_path = res.path if not entry.is_dir or res.path.endswith("/") else res.path + "/"
            rows: list[_Row] = [((entry.name, entry.is_dir, entry.size, entry.etag, entry.created, entry.modified,
                                  entry.node_id, entry.checksums, entry.version_id), own, res,
                                 self.href_base + _quoted(own_path))]
            if depth == "1" and res.is_collection:
                parts = split_path(res.path)
                self.folder_path = join_path(parts) + "/" if parts else "/"
                prefix = self.href_base + _quoted(self.folder_path)
                rows += [(c, by_node.get(c[6], _NO_PROPS), None,
                          f"{prefix}{_quoted(c[0])}/" if c[1] else prefix + _quoted(c[0])) for c in children]
        if self.allprop:
            listed = [(row, self._allprop_names(row[0], row[1])) for row in rows]
            self.nsmap = _prefixes(_namespaces(names for _row, names in listed))
        else:
            listed = [(row, self.names) for row in rows]
            self.nsmap = _prefixes(_namespaces([self.names]))
        self.prefix_of = {uri: prefix for prefix, uri in self.nsmap.items()}
        empty_root = etree.tostring(etree.Element("{DAV:}multistatus", nsmap=self.nsmap), encoding="unicode")
        if not empty_root.endswith("/>"):
            raise _Unsupported()
        self._start_tag = empty_root[:-2] + ">"
        out = ["<?xml version='1.0' encoding='UTF-8'?>\n", self._start_tag]
        append = out.append
        plans: dict[tuple[int, bool], list[Getter]] = {}
        for (child, dead, resource, href), names in listed:
            getters = plans.get((id(names), child[1]))
            if getters is None:
                getters = plans[(id(names), child[1])] = [self._getter(name, child[1]) for name in names]
            props = [getter(child, dead, resource) for getter in getters]
            try:
                # (str.join refuses the tuple of a property whose status is not 200)
                append(f"<D:response><D:href>{href}</D:href><D:propstat><D:prop>{''.join(props)}{_OK_END}")  # type: ignore[arg-type]
            except TypeError:  # some property's status is not 200
                append(_by_status(href, props))
        out.append("</D:multistatus>")
        return "".join(out).encode("utf-8")

    # --- one resource ---------------------------------------------------------------

    def _allprop_names(self, entry: Child, dead: dict[str, str]) -> list[str]:
        """The order of WsgiDAV's ``get_property_names(is_allprop=True)``; one list object
        per distinct list (the caller plans each list once)."""
        is_dir, created, modified, checksums = entry[1], entry[4], entry[5], entry[7]
        key = (is_dir, created is None, modified is None, bool(checksums) and not is_dir, tuple(dead))
        names = self.allprop_lists.get(key)
        if names is not None:
            return names
        names = ["{DAV:}resourcetype"]
        if created is not None:
            names.append("{DAV:}creationdate")
        if not is_dir:
            names += ["{DAV:}getcontentlength", "{DAV:}getcontenttype"]
        if modified is not None:
            names.append("{DAV:}getlastmodified")
        names.append("{DAV:}displayname")
        if not is_dir:
            names.append("{DAV:}getetag")
        if self.with_locks:
            names += _LOCK_NAMES
        names += dead
        if not is_dir and checksums and OC_CHECKSUMS not in names:
            names.append(OC_CHECKSUMS)
        self.allprop_lists[key] = names
        return names

    def _getter(self, name: str, is_dir: bool) -> Getter:
        """What writes property ``name`` of a folder or a file, made once per request."""
        getter = self.getters.get((name, is_dir))
        if getter is None:
            getter = self.getters[(name, is_dir)] = self._make_getter(name, is_dir)
        return getter

    def _make_getter(self, name: str, is_dir: bool) -> Getter:  # noqa: C901 - one branch per property
        """Entries are tuples (davbackup/listing.py): 0 name, 2 size, 3 ETag, 4 created,
        5 modified, 7 checksums."""
        tag, empty = self._tag(name), self._empty(name)
        missing = (_NOT_FOUND, empty)
        if name == "{DAV:}resourcetype":
            value = "<D:resourcetype><D:collection/></D:resourcetype>" if is_dir else "<D:resourcetype/>"
            return lambda e, d, r: value
        if name in _FILE_ONLY and is_dir:
            return lambda e, d, r: missing
        if name == "{DAV:}getcontentlength":
            return lambda e, d, r: f"<{tag}>{e[2]}</{tag}>"
        if name == "{DAV:}getetag":
            return lambda e, d, r: f"<{tag}>{escape(e[3])}</{tag}>" if e[3] else empty
        if name == "{DAV:}getcontenttype":
            mime_type = self._mime_type
            return lambda e, d, r: mime_type(e[0], tag)
        if name == "{DAV:}creationdate":
            return self._time_getter(tag, missing, 4, self.rfc3339, util.get_rfc3339_time)
        if name == "{DAV:}getlastmodified":
            return self._time_getter(tag, missing, 5, self.rfc1123, util.get_rfc1123_time)
        if name == "{DAV:}displayname":
            return lambda e, d, r: f"<{tag}>{escape(e[0])}</{tag}>" if e[0] else empty
        if name == "{DAV:}supportedlock" and self.with_locks:
            return lambda e, d, r: _SUPPORTEDLOCK
        if name == "{DAV:}lockdiscovery" and self.with_locks:
            if self.locks_nearby:  # rare: WsgiDAV's element, with each lock's details
                return lambda e, d, r: self._from_resource(name, e, r)
            return lambda e, d, r: empty
        if name in _QUOTA:  # computed by the collection (files answer an empty value)
            return lambda e, d, r: self._from_resource(name, e, r)
        if name.startswith("{DAV:}"):
            return lambda e, d, r: missing  # no other live property exists here

        def dead_property(e: Child, d: dict[str, str], r: Any) -> str | tuple[str, str]:
            value = d.get(name)
            return missing if value is None else self._dead(name, value)

        if name == OC_CHECKSUMS and not is_dir:
            inner = self._tag(OC_CHECKSUM)

            def checksums(e: Child, d: dict[str, str], r: Any) -> str | tuple[str, str]:
                if e[7]:  # live, kept with the version
                    return f"<{tag}><{inner}>{escape(e[7])}</{inner}></{tag}>"
                return dead_property(e, d, r)

            return checksums
        return dead_property

    @staticmethod
    def _time_getter(tag: str, missing: tuple[str, str], field: int, cache: dict[int, str],
                     text_of: Callable[[float], str]) -> Getter:
        """A date property, its text made once per whole second in this answer."""
        floor = math.floor

        def get(e: Child, d: dict[str, str], r: Any) -> str | tuple[str, str]:
            secs: float | None = e[field]  # type: ignore[assignment]  # field 4 or 5: a time
            if secs is None:
                return missing
            key = floor(secs)
            text = cache.get(key)
            if text is None:
                text = cache[key] = text_of(secs)
            return f"<{tag}>{text}</{tag}>"

        return get

    def _from_resource(self, name: str, entry: Child, resource: Any) -> str | tuple[str, str]:
        """A property this module does not write itself, asked as WsgiDAV asks."""
        if resource is None:  # a child of the listed folder
            name_, is_dir, size, etag, created, modified, node_id, checksums, version_id = entry
            resource = self.provider.resource_for(Entry(
                self.folder_path + name_, name_, is_dir, size, etag, created, modified, node_id, checksums,
                version_id), self.environ)
        try:
            value = resource.get_property_value(name)
        except DAVError as exc:
            return util.get_http_status_string(exc), self._empty(name)
        except Exception as exc:  # noqa: BLE001 - as WsgiDAV's get_properties does
            return util.get_http_status_string(as_DAVError(exc)), self._empty(name)
        if value is None:
            return self._empty(name)
        if isinstance(value, etree._Element):
            return self._element(value)
        return self._text(name, util.to_unicode_safe(value))

    # --- serialization ----------------------------------------------------------------

    def _tag(self, name: str) -> str:
        tag = self.tags.get(name)
        if tag is None:
            uri, local = name[1:].split("}", 1)
            tag = self.tags[name] = f"{self.prefix_of[uri]}:{local}"
        return tag

    def _empty(self, name: str) -> str:
        return f"<{self._tag(name)}/>"

    def _text(self, name: str, text: str) -> str:
        if not text:
            return self._empty(name)
        tag = self._tag(name)
        return f"<{tag}>{escape(text)}</{tag}>"

    def _dead(self, name: str, value: str) -> str:
        """A stored dead property under this answer's prefixes."""
        match = _SIMPLE_START.match(value)
        if match is not None:
            decls = dict(_DECL.findall(match["decls"]))
            uri = decls.get(match["prefix"] or "")
            if uri is not None and name == f"{{{uri}}}{match['local']}":
                qname = f"{match['prefix']}:{match['local']}" if match["prefix"] else match["local"]
                rest = value[match.end():]
                if match["end"] == "/>" and not rest.strip():
                    return self._empty(name)
                closing = f"</{qname}>"
                body = rest[: -len(closing)] if rest.endswith(closing) else None
                if body is not None and "<" not in body and "&#" not in body:  # (lxml writes UTF-8)
                    if not body:
                        return self._empty(name)
                    tag = self._tag(name)
                    return f"<{tag}>{body}</{tag}>"
        try:
            element = etree.XML(value.encode("utf-8"), parser=etree.XMLParser(resolve_entities=False))
        except etree.XMLSyntaxError as exc:
            raise _Unsupported() from exc  # the generic path reports it as it always did
        return self._element(element)

    def _element(self, element: Any) -> str:
        """An element as lxml writes it inside the answer's root (its prefixes reused)."""
        if element.text == "" and len(element) == 0:
            element.text = None
        root = etree.Element("{DAV:}multistatus", nsmap=self.nsmap)
        root.append(element)
        text = etree.tostring(root, encoding="unicode")
        closing = "</D:multistatus>"
        if not text.startswith(self._start_tag) or not text.endswith(closing):
            raise _Unsupported()
        return text[len(self._start_tag): -len(closing)]

    def _mime_type(self, name: str, tag: str) -> str:
        """``<getcontenttype>`` as ``util.guess_mime_type`` gives it, remembered per name
        ending for this request (the type depends on at most the last two extensions)."""
        key = mime_key(name)
        xml = self.mime_types.get(key)
        if xml is None:
            mime = util.guess_mime_type("/" + name, self.config)
            xml = self.mime_types[key] = f"<{tag}>{escape(mime)}</{tag}>" if mime else f"<{tag}/>"
        return xml


def _prefixes(uris: set[str]) -> dict[str, str]:
    """Prefix -> namespace, as :func:`provider.propfind._namespaces` assigns them."""
    nsmap: dict[str, str] = {}
    others = 0
    for uri in sorted(uris):
        prefix = generic.KNOWN_PREFIXES.get(uri)
        if prefix is None:
            prefix = f"n{others}"
            others += 1
        nsmap[prefix] = uri
    return nsmap


_QUOTA = frozenset({QUOTA_USED, QUOTA_AVAILABLE})
_FILE_ONLY = frozenset({"{DAV:}getcontentlength", "{DAV:}getetag", "{DAV:}getcontenttype"})


def _by_status(href: str, props: list[str | tuple[str, str]]) -> str:
    """One ``<response>`` whose properties have several statuses: a ``<propstat>`` per
    status, in the order statuses first occur."""
    by_status: dict[str, list[str]] = {}
    for prop in props:
        status, xml = (_OK, prop) if isinstance(prop, str) else prop
        by_status.setdefault(status, []).append(xml)
    parts = [f"<D:response><D:href>{href}</D:href>"]
    for status, xml_parts in by_status.items():
        parts.append("<D:propstat><D:prop>")
        parts += xml_parts
        parts.append(f"</D:prop><D:status>HTTP/1.1 {status}</D:status></D:propstat>")
    parts.append("</D:response>")
    return "".join(parts)


def _namespaces(name_lists: Any) -> set[str]:
    """The namespaces of every property name in the answer."""
    uris = {"DAV:"}
    seen: set[str] = set()
    for names in name_lists:
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            if not name.startswith("{"):
                raise _Unsupported()  # a name without a namespace: left to lxml
            uri = name[1:].split("}", 1)[0]
            if uri == _XML_NS or not uri:
                raise _Unsupported()
            uris.add(uri)
    return uris
