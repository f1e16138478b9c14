"""Fast EC2 describe responses: the same bytes as moto's serializer, compiled.

moto 5.x renders every EC2 response with a generic, model-driven serializer
(``moto.core.serialize``): for every member of every object it asks a chain of
alias providers which Python attribute holds the value, matches the key path
against a table of response transformers, builds nested dicts, and finally has
``xmltodict`` walk them through a SAX generator.  That costs ~2 ms per image and
~5 ms per instance, i.e. 17 s for 10,000 images and ~80 s for 20,000
instances, almost none of it the backend.

``render()`` produces the *same bytes*.  Everything in moto's decision that
depends only on the output shape, the key path and the Python class of the
object is computed once and cached:

* per structure position in the shape tree: member order, XML tag, the
  response transformer that applies to the key path, and the child renderer;
* per (member, class of the object): the ordered candidate attribute names,
  computed by moto's own ``XFormedAttributePicker.get_possible_keys`` (so
  aliasing is moto's, not a re-implementation).

What is still done per object, as moto does it, is reading the values (the
same ``getattr``/``[]`` lookups in the same order, so properties run as
before and every mutation is seen: nothing is cached across requests), the
scalar conversions (``str``/``int``/booleans/timestamps), and XML escaping as
``xml.sax.saxutils.XMLGenerator`` does it.  Shapes the compiler does not
handle (maps, XML attributes/namespaces on members, flattened lists, duplicate
tags, blobs) raise ``_Unsupported`` at compile time and that operation falls
back to moto's serializer.

It only applies to the operations in ``FAST_OPERATIONS`` answered with moto's
``EC2Serializer``.  ``set_enabled(False)`` restores moto's rendering and
moto's describe handlers (used by the equivalence tests); ``VERIFY = True``
renders both ways and raises on any difference.

The module also makes ``DescribeImages`` honour ``MaxResults``/``NextToken``
(moto ignores them) and ``DescribeInstances`` page by *instances* as AWS
does (moto pages by reservation and, without ``MaxResults``, stops after 100
reservations).  See docs/sandbox.md ("Speed").
"""

from __future__ import annotations

import base64
import binascii
import bisect
import copy
import itertools
import json
import os
import threading
from collections.abc import Callable
from typing import Any

from moto import settings as _moto_settings
from moto.core import responses as _core_responses
from moto.core.constants import MISSING
from moto.core.serialize import AttributePickerContext, EC2Serializer, XFormedAttributePicker
from moto.core.utils import get_value as _moto_get_value
from moto.ec2 import utils as _ec2_utils
from moto.ec2.exceptions import InvalidNextToken, InvalidParameterCombination, InvalidParameterValueError
from moto.ec2.responses import amis as _amis_responses
from moto.ec2.responses import instances as _instances_responses

FAST_OPERATIONS = frozenset(
    {"DescribeImages", "DescribeInstances", "DescribeSnapshots", "DescribeLaunchTemplateVersions"}
)
VERIFY = os.environ.get("SANDBOX_FAST_VERIFY") == "1"  # render both ways and raise on any difference

_STATE = {"enabled": True, "installed": False}
_ORIGINAL: dict[str, Any] = {}
_CACHE: dict[Any, Any] = {}
_CACHE_LOCK = threading.Lock()
_GETITEM_EXC = (KeyError, IndexError, TypeError, AttributeError)


class _Unsupported(Exception):
    """A shape feature the compiled renderer does not reproduce: use moto's serializer."""


class RenderMismatch(AssertionError):
    pass


# --------------------------------------------------------------------------- escaping
def _escape(text: str) -> str:
    # xml.sax.saxutils.escape, as XMLGenerator.characters applies it
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


# --------------------------------------------------------------------------- compiler
# A renderer maps a value to the *content* of its element: a string (possibly
# empty -> ``<tag/>``), or None meaning "an empty structure" (moto's ``{}``):
# ``<tag/>`` as a structure member, dropped as a list item.
Renderer = Callable[[Any], "str | None"]


class _Compiler:
    def __init__(self, serializer: EC2Serializer, transformers: dict[str, Callable[[Any], Any]]) -> None:
        self.serializer = serializer
        self.transformers = list(transformers.items())
        self.picker = XFormedAttributePicker(response_transformers={})

    def compile(self, shape: Any, path: list[str]) -> Renderer:
        kind = shape.type_name
        if kind == "structure":
            return self._structure(shape, path)
        if kind == "list":
            return self._list(shape, path)
        if kind == "string":
            return lambda value: _escape(str(value))
        if kind == "boolean":
            return _render_boolean
        if kind in ("integer", "long"):
            return lambda value: str(int(value))
        if kind in ("float", "double"):
            return lambda value: str(float(value))
        if kind == "timestamp":
            fmt = shape.serialization.get("timestampFormat", self.serializer._timestamp_serializer.default_format)
            convert = self.serializer._timestamp_serializer._convert_timestamp_to_str
            return lambda value: _escape(convert(value, fmt))
        raise _Unsupported(f"{kind} at {'.'.join(path)}")

    def _check_member(self, shape: Any) -> None:
        ser = shape.serialization
        if ser.get("xmlNamespace") or ser.get("xmlAttribute") or ser.get("flattened"):
            raise _Unsupported(f"xml trait on {shape.name}")

    def _transformer(self, key_path: str) -> Callable[[Any], Any] | None:
        for transform_path, transform in self.transformers:
            if key_path.endswith(transform_path):
                return transform
        return None

    def _structure(self, shape: Any, path: list[str]) -> Renderer:
        if getattr(shape, "is_document_type", False):
            raise _Unsupported("document")
        members = []
        tags = set()
        prefix = ".".join(path)
        for member_key, member_shape in shape.members.items():
            member_shape.parent = shape  # as moto's _serialize_type_structure does
            self._check_member(member_shape)
            tag = member_shape.serialization.get("name", member_key)
            if tag in tags:
                raise _Unsupported(f"duplicate tag {tag}")
            tags.add(tag)
            child = self.compile(member_shape, path + [member_key])
            members.append(
                _Member(member_key, member_shape, tag, self._transformer(f"{prefix}.{member_key}"), child, self.picker)
            )
        plans: dict[Any, list[tuple]] = {}
        plain: dict[type, bool] = {}

        def render(obj: Any) -> str | None:
            if obj is None:
                return None
            cls = type(obj)
            attrs = getattr(obj, "__dict__", None)
            is_plain = plain.get(cls)
            if is_plain is None:
                is_plain = plain[cls] = attrs is not None and not hasattr(obj, "__getitem__") and _plain_attributes(cls)
            if is_plain:
                # resolved for this class *and* this set of instance attributes (see _Member.resolve)
                signature = (cls, tuple(attrs))
                plan = plans.get(signature)
                if plan is None:
                    plan = plans[signature] = [p for p in (m.resolve(obj, attrs) for m in members) if p is not None]
                size = len(attrs)
                content = _render_members(plan, obj, attrs)
                if len(attrs) == size:
                    return content
                # a property added instance attributes while we read: redo it the general way
            plan = plans.get(cls)
            if plan is None:
                plan = plans[cls] = [m.plan_for(obj) for m in members]
            return _render_members(plan, obj, attrs)

        render.tags = tags  # type: ignore[attr-defined]
        return render

    def _list(self, shape: Any, path: list[str]) -> Renderer:
        member = shape.member
        if shape.serialization.get("flattened"):
            raise _Unsupported("flattened list")
        self._check_member(member)
        item_tag = member.serialization.get("name", "member")
        item_render = self.compile(member, path + [member.name])
        open_tag, close_tag, empty_tag = f"<{item_tag}>", f"</{item_tag}>", f"<{item_tag}/>"

        def render(value: Any) -> str:
            parts = []
            for item in value:
                content = item_render(item)
                if content is None:
                    continue
                parts.append(open_tag + content + close_tag if content else empty_tag)
            return "".join(parts)

        return render


def _render_members(plan: list[tuple], obj: Any, attrs: Any) -> str | None:
    parts = []
    for getter, key, transform, child_render, open_tag, close_tag, empty_tag in plan:
        value = attrs[key] if getter is None else getter(obj, attrs)
        if transform is not None:
            value = transform(value)
        if value is None:
            continue
        content = child_render(value)
        parts.append(open_tag + content + close_tag if content else empty_tag)
    return "".join(parts) if parts else None


def _render_boolean(value: Any) -> str:
    return "true" if value is True or str(value).lower() == "true" else "false"


class _Member:
    def __init__(self, key: str, shape: Any, tag: str, transform: Any, child: Renderer, picker: Any) -> None:
        self.key, self.shape, self.tag, self.transform, self.child, self.picker = (
            key,
            shape,
            tag,
            transform,
            child,
            picker,
        )

    def plan_for(self, obj: Any) -> tuple:
        context = AttributePickerContext(obj=obj, key=self.key, shape=self.shape)
        keys = list(self.picker.get_possible_keys(context))
        getter = _make_getter(keys, obj)
        return (getter, None, self.transform, self.child, f"<{self.tag}>", f"</{self.tag}>", f"<{self.tag}/>")

    def resolve(self, obj: Any, attrs: dict[str, Any]) -> tuple | None:
        """The plan for objects of this class with exactly these instance attributes.

        For an ordinary class ``getattr(obj, k)`` is a class attribute (property, method,
        constant: looked up at render time, it may still raise AttributeError and fall
        through) or else ``obj.__dict__[k]`` (present or not: known from the key set).
        So the candidate chain shrinks to: a direct dict read, a short getattr chain, or
        nothing (member never present: skipped unless a transformer makes a value of None).
        """
        cls = type(obj)
        context = AttributePickerContext(obj=obj, key=self.key, shape=self.shape)
        steps = []
        for k in self.picker.get_possible_keys(context):
            if "." in k:
                return self.plan_for(obj)
            if any(k in vars(c) for c in cls.__mro__):
                steps.append((True, k))
            elif k in attrs:
                steps.append((False, k))
                break  # a certain hit
        tags = (f"<{self.tag}>", f"</{self.tag}>", f"<{self.tag}/>")
        if not steps:
            if self.transform is None:
                return None
            return (lambda _o, _d: None, None, self.transform, self.child, *tags)
        if len(steps) == 1 and not steps[0][0]:
            return (None, steps[0][1], self.transform, self.child, *tags)
        chain = tuple(steps)

        def getter(o: Any, d: Any) -> Any:
            for on_class, k in chain:
                value = getattr(o, k, MISSING) if on_class else d[k]
                if value is not MISSING:
                    return value
            return None

        return (getter, None, self.transform, self.child, *tags)


def _plain_attributes(cls: type) -> bool:
    """Attribute lookup on instances of cls is "class attribute, else instance __dict__"."""
    return (
        cls.__getattribute__ is object.__getattribute__
        and not any("__getattr__" in vars(c) for c in cls.__mro__)
        and all("__slots__" not in vars(c) for c in cls.__mro__[:-1])
    )


def _make_getter(keys: list[str], obj: Any) -> Callable[[Any, Any], Any]:
    """moto's ``get_value(obj, key, MISSING)`` over the candidate keys: first hit wins, else None.

    Returns ``getter(obj, obj_dict)``.  For ordinary classes a candidate that is not a class
    attribute can only come from the instance ``__dict__``, so it is a dict lookup instead of a
    failing ``getattr`` (same answer, no AttributeError raised and caught per miss).
    """
    if any("." in k for k in keys):

        def dotted(o: Any, _d: Any) -> Any:
            for k in keys:
                value = _moto_get_value(o, k, MISSING)
                if value is not MISSING:
                    return value
            return None

        return dotted
    if hasattr(obj, "__getitem__"):

        def keyed_get(o: Any, _d: Any) -> Any:
            for k in keys:
                try:
                    return o[k]
                except _GETITEM_EXC:
                    continue
            return None

        return keyed_get
    cls = type(obj)
    if not _plain_attributes(cls):

        def attr(o: Any, _d: Any) -> Any:
            for k in keys:
                value = getattr(o, k, MISSING)
                if value is not MISSING:
                    return value
            return None

        return attr
    steps = tuple((any(k in vars(c) for c in cls.__mro__), k) for k in keys)
    if len(steps) == 2 and not steps[0][0] and not steps[1][0]:
        k0, k1 = keys

        def dict2(_o: Any, d: Any) -> Any:
            value = d.get(k0, MISSING)
            if value is MISSING:
                value = d.get(k1)
            return value

        return dict2

    def mixed(o: Any, d: Any) -> Any:
        for on_class, k in steps:
            value = getattr(o, k, MISSING) if on_class else d.get(k, MISSING)
            if value is not MISSING:
                return value
        return None

    return mixed


def _document_renderer(serializer: EC2Serializer, transformers: dict[str, Any]) -> Callable[[Any], str]:
    operation = serializer.operation_model
    output_shape = operation.output_shape
    key = (operation.name, id(output_shape), tuple(transformers.items()))
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        body = _Compiler(serializer, transformers).compile(output_shape, [operation.name, output_shape.name])
        if "requestId" in getattr(body, "tags", ()):
            raise _Unsupported("requestId member")
        root = f"{operation.name}Response"
        attrs = ""
        if "xmlNamespace" in operation.metadata:
            from xml.sax.saxutils import quoteattr

            attrs = f" xmlns={quoteattr(operation.metadata['xmlNamespace'])}"

        def document(result: Any) -> str:
            content = body(result) or ""
            request_id = str(serializer.context.request_id)
            rid = f"<requestId>{_escape(request_id)}</requestId>" if request_id else "<requestId/>"
            return f'<?xml version="1.0" encoding="utf-8"?>\n<{root}{attrs}>{content}{rid}</{root}>'

        _CACHE[key] = document
        return document


def render(serializer: EC2Serializer, transformers: dict[str, Any], result: Any) -> dict[str, Any] | None:
    """moto's ``serializer.serialize(result)`` for a successful result, or None if unsupported."""
    try:
        document = _document_renderer(serializer, transformers)
    except _Unsupported:
        return None
    resp = serializer._create_default_response()
    resp["body"] = document(result)
    resp["headers"]["Content-Type"] = serializer.CONTENT_TYPE
    return resp


# --------------------------------------------------------------------------- hook into moto
def _execute_result(self: Any, context: Any) -> Any:
    original = _ORIGINAL["execute_result"]
    if (
        not _STATE["enabled"]
        or context.serializer_class is not EC2Serializer
        or context.operation_model.name not in FAST_OPERATIONS
        or isinstance(self.result, Exception)
        or _moto_settings.PRETTIFY_RESPONSES
    ):
        return original(self, context)
    transformers = getattr(context.response, "RESPONSE_KEY_PATH_TO_TRANSFORMER", None) or {}
    serializer = EC2Serializer(
        operation_model=context.operation_model,
        pretty_print=False,
        value_picker=XFormedAttributePicker(response_transformers=transformers),
    )
    resp = render(serializer, transformers, self.result)
    if resp is None:
        return original(self, context)
    if VERIFY:
        expected = original(self, context)
        got = (resp["status_code"], resp["headers"], resp["body"])
        if expected != got:
            raise RenderMismatch(_first_difference(str(expected[2]), str(got[2])))
    return resp["status_code"], resp["headers"], resp["body"]


def _first_difference(expected: str, got: str) -> str:
    for i, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return f"at {i}: moto {expected[max(0, i - 80) : i + 80]!r}\n  fast {got[max(0, i - 80) : i + 80]!r}"
    return f"length moto {len(expected)} fast {len(got)}"


# --------------------------------------------------------------------------- pagination
# A token names the position after the last item returned, as a sequence number: every
# image/instance gets one the first time a paged listing walks moto's (insertion-ordered)
# dicts, in that order, so later items always get larger numbers.  Items removed or added
# between pages therefore neither shift nor repeat the rest of the listing.
_SEQ: dict[str, int] = {}
_SEQ_NEXT = itertools.count(1)


def forget_positions() -> None:
    """The account was reset: forget every id's position. A reset account may bring the same ids
    back in another order (moto's ids come from its random generator, which a bench or a test may
    seed again), and an old position would then break the order the tokens rely on: a paged
    listing skipped instances that way (retention bench, 10,000 AMIs after a 5,000 AMI account)."""
    _SEQ.clear()


def _sequence(ids: list[str]) -> list[int]:
    seq = _SEQ
    for item_id in ids:
        if item_id not in seq:
            seq[item_id] = next(_SEQ_NEXT)
    return [seq[item_id] for item_id in ids]


def _encode_token(seq: int) -> str:
    raw = json.dumps({"after": seq}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return int(json.loads(raw)["after"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidNextToken(token) from None


def _start_after(seqs: list[int], token: str | None) -> int:
    """Index of the first item after the token's position (seqs ascend along the listing)."""
    if not token:
        return 0
    return bisect.bisect_right(seqs, _decode_token(token))


def _max_results(response: Any) -> int | None:
    raw = response._get_param("MaxResults")
    if raw is None:
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise InvalidParameterValueError(str(raw)) from None
    if value < 1:
        raise InvalidParameterValueError(str(raw))
    return value


def _describe_images(self: Any) -> Any:
    if not _STATE["enabled"]:
        return _ORIGINAL["describe_images"](self)
    self.error_on_dryrun()
    ami_ids = self._get_param("ImageIds", [])
    filters = self._filters_from_querystring()
    owners = self._get_param("Owners", [])
    exec_users = self._get_param("ExecutableUsers", [])
    max_results = _max_results(self)
    if ami_ids and max_results is not None:
        raise InvalidParameterCombination("The parameter ImageIds cannot be used with the parameter MaxResults")
    images = self.ec2_backend.describe_images(ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners)
    result: dict[str, Any] = {"Images": images}
    token = self._get_param("NextToken")
    if max_results is not None or token:
        _sequence(list(self.ec2_backend.amis))  # number every image in moto's order first
        seqs = _sequence([image.id for image in images])
        start = _start_after(seqs, token)
        end = len(images) if max_results is None else start + max_results
        result["Images"] = images[start:end]
        if end < len(images):
            result["NextToken"] = _encode_token(seqs[end - 1])
    return _core_responses.ActionResult(result)


def _describe_instances(self: Any) -> Any:
    if not _STATE["enabled"]:
        return _ORIGINAL["describe_instances"](self)
    self.error_on_dryrun()
    if "InstanceId.1" in self.data and "MaxResults" in self.data:
        raise InvalidParameterCombination("The parameter instancesSet cannot be used with the parameter maxResults")
    filter_dict = self._filters_from_querystring()
    instance_ids = self._get_param("InstanceIds", [])
    max_results = _max_results(self)
    token = self._get_param("NextToken")
    if instance_ids:
        reservations = self.ec2_backend.get_reservations_by_instance_ids(instance_ids, filters=filter_dict)
        pairs = [(reservation, instance) for reservation in reservations for instance in reservation.instances]
        matches: Callable[[Any], bool] = lambda instance: True
    elif max_results is None and not token:
        # everything in one response (AWS without MaxResults), exactly moto's reservations
        reservations = self.ec2_backend.describe_instances(filters=filter_dict)
        return _core_responses.ActionResult({"Reservations": reservations, "NextToken": None})
    else:
        # moto's all_reservations(filters) order and filter, evaluated lazily from the token on,
        # so paging through N instances costs O(N) filter checks, not O(N) per page
        pairs = [
            (reservation, instance)
            for reservation in list(self.ec2_backend.reservations.values())
            for instance in reservation.instances
        ]
        passes = _ec2_utils.passes_filter_dict
        matches = lambda instance: passes(instance, filter_dict)
        literal = _literal_id_filter(filter_dict)
        if literal is not None:
            # image-id / instance-id with literal values: a set lookup first, moto's full filter after
            attr, wanted = literal
            matches = lambda instance: getattr(instance, attr, None) in wanted and passes(instance, filter_dict)
    if instance_ids:  # number every instance in moto's order first
        _sequence([i.id for r in list(self.ec2_backend.reservations.values()) for i in r.instances])
    seqs = _sequence([instance.id for _, instance in pairs])
    start = _start_after(seqs, token)
    grouped: list[tuple[Any, list[Any]]] = []
    count, last, more = 0, -1, False
    for index in range(start, len(pairs)):
        reservation, instance = pairs[index]
        if not matches(instance):
            continue
        if max_results is not None and count == max_results:
            more = True
            break
        if not grouped or grouped[-1][0] is not reservation:
            grouped.append((reservation, []))
        grouped[-1][1].append(instance)
        count, last = count + 1, index
    page = []
    for reservation, instances in grouped:
        # a copy showing this page's instances, as moto's all_reservations()/filters hand out
        part = copy.copy(reservation)
        part.instances = instances
        page.append(part)
    next_token = _encode_token(seqs[last]) if more else None
    return _core_responses.ActionResult({"Reservations": page, "NextToken": next_token})


def _literal_id_filter(filter_dict: dict[str, Any]) -> tuple[str, frozenset[str]] | None:
    """(instance attribute, values) of an ``image-id``/``instance-id`` filter without wildcards."""
    for name, attr in (("instance-id", "id"), ("image-id", "image_id")):
        values = filter_dict.get(name)
        if isinstance(values, list) and values and not any(ch in v for v in values for ch in "*?"):
            return attr, frozenset(values)
    return None


# --------------------------------------------------------------------------- install
def install() -> None:
    """Idempotent."""
    if _STATE["installed"]:
        return
    _ORIGINAL["execute_result"] = _core_responses.ActionResult.execute_result
    _core_responses.ActionResult.execute_result = _execute_result  # type: ignore[method-assign]
    _ORIGINAL["describe_images"] = _amis_responses.AmisResponse.describe_images
    _amis_responses.AmisResponse.describe_images = _describe_images  # type: ignore[method-assign]
    _ORIGINAL["describe_instances"] = _instances_responses.InstanceResponse.describe_instances
    _instances_responses.InstanceResponse.describe_instances = _describe_instances  # type: ignore[method-assign]
    from . import describe_limits

    describe_limits.install()  # AWS's 200 filter values per call; DescribeLaunchTemplateVersions paging
    _STATE["installed"] = True


def set_enabled(enabled: bool) -> bool:
    """Switch the fast path on/off (moto's rendering and handlers when off); returns the old value."""
    old = _STATE["enabled"]
    _STATE["enabled"] = bool(enabled)
    return old


def enabled() -> bool:
    return _STATE["installed"] and _STATE["enabled"]
