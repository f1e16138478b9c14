"""The WSGI middleware around moto's app: request counting, fault injection, /_sandbox control."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import traceback
import urllib.parse
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from moto.moto_server.werkzeug_app import MotoRequestHandler

from .state import LOCK, RUNTIME
from .token_bucket import THROTTLE_CODE, THROTTLE_MESSAGE, THROTTLE_STATUS

if TYPE_CHECKING:
    from .sandbox import AwsSandbox

INTERNAL_HEADER = "X-Sandbox-Internal"
_CREDENTIAL = re.compile(r"Credential=[^/]*/\d{8}/([^/]+)/([^/]+)/")
# signing name -> the IAM-style service prefix used in request counts and faults
_SERVICE_ALIASES = {"monitoring": "cloudwatch"}
# the SDKs' attempt header (botocore and the Go SDK): "attempt=2; max=10"
_ATTEMPT = re.compile(r"attempt=(\d+)")
_ANSWERED_KEPT = 20000  # invocation ids remembered to tell an SDK's retry of an answered call
# the paging token of a query-protocol answer: EC2 says nextToken, Auto Scaling NextToken
_NEXT_TOKEN = re.compile(rb"\s*<(nextToken|NextToken)(?:\s*/>|>[^<]*</\1>)")


def s3_action(environ: dict[str, Any]) -> str:
    """The S3 API operation of a REST request (path-style: /bucket[/key])."""
    method = environ.get("REQUEST_METHOD", "GET")
    parts = environ.get("PATH_INFO", "/").lstrip("/").split("/", 1)
    has_key = len(parts) > 1 and parts[1] != ""
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if not parts[0]:
        return "ListBuckets"
    if has_key:
        if method in ("GET", "HEAD"):
            return "GetObjectTagging" if "tagging" in query else ("HeadObject" if method == "HEAD" else "GetObject")
        if method == "PUT":
            return "CopyObject" if environ.get("HTTP_X_AMZ_COPY_SOURCE") else "PutObject"
        if method == "DELETE":
            return "DeleteObject"
        return f"{method.title()}Object"
    for sub in ("versioning", "encryption", "policy", "acl", "tagging", "lifecycle", "versions", "location"):
        if sub in query:
            return {"GET": "GetBucket", "PUT": "PutBucket", "DELETE": "DeleteBucket"}.get(method, method) + sub.title()
    if method == "GET":
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
    if method == "HEAD":
        return "HeadBucket"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    return {"PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(method, method)


def agent_of(environ: dict[str, Any]) -> str:
    """Who sent a request, from its User-Agent: terraform, packer, airflow (the provider's hooks) or other."""
    ua = environ.get("HTTP_USER_AGENT", "")
    low = ua.lower()
    if "terraform" in low:  # the AWS provider and Terraform's S3 backend (aws-sdk-go-v2, "Terraform/…")
        return "terraform"
    if "packer" in low or "aws-sdk-go/" in low:  # Packer 1.6's amazon plugin: aws-sdk-go v1, no name of its own
        return "packer"
    if "airflow" in low:
        return "airflow"
    return "other"


def identify(environ: dict[str, Any], body: bytes) -> tuple[str, str | None, bool]:
    """(service, action, json_protocol) of one AWS request."""
    match = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    service = match.group(2) if match else "unknown"
    service = _SERVICE_ALIASES.get(service, service)
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return service, target.rsplit(".", 1)[-1], True
    path = environ.get("PATH_INFO", "")
    if "/operation/" in path:  # smithy rpc-v2
        return service, path.rsplit("/operation/", 1)[-1].strip("/"), True
    action = None
    if "form-urlencoded" in environ.get("CONTENT_TYPE", "") and body:
        action = (parse_qs(body.decode("utf-8", "replace")).get("Action") or [None])[0]
    if not action:
        action = (parse_qs(environ.get("QUERY_STRING", "")).get("Action") or [None])[0]
    if not action and service == "s3":
        action = s3_action(environ)
    if not action and service == "rbin":
        action = rbin_action(environ)
    return service, action, json_protocol_of(service)


def json_protocol_of(service: str) -> bool:
    return service == "rbin"  # REST-JSON: errors are rendered as JSON


def rbin_action(environ: dict[str, Any]) -> str:
    """The Recycle Bin (REST-JSON) operation of a request, from its method and path."""
    method = environ.get("REQUEST_METHOD", "GET")
    parts = [p for p in environ.get("PATH_INFO", "").split("/") if p]
    if parts == ["rules"]:
        return "CreateRule"
    if parts == ["list-rules"]:
        return "ListRules"
    if parts[:1] == ["tags"]:
        return {"GET": "ListTagsForResource", "POST": "TagResource", "DELETE": "UntagResource"}.get(method, method)
    if len(parts) == 3 and parts[0] == "rules":
        return "LockRule" if parts[2] == "lock" else "UnlockRule"
    return {"GET": "GetRule", "DELETE": "DeleteRule", "PATCH": "UpdateRule"}.get(method, method)


def error_body(service: str, json_protocol: bool, code: str, message: str) -> tuple[bytes, list[tuple[str, str]]]:
    request_id = str(uuid.uuid4())
    if json_protocol:
        body = json.dumps({"__type": code, "message": message}).encode()
        return body, [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("x-amzn-RequestId", request_id),
            ("x-amzn-query-error", f"{code};Sender"),
        ]
    code_x, message_x = escape(code), escape(message)
    if service == "ec2":
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{code_x}</Code><Message>{message_x}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
    else:
        xml = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{code_x}</Code><Message>{message_x}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    return xml.encode(), [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]


def _first_items(xml: bytes, keep: int) -> bytes:
    """A query-protocol listing answer with only its first ``keep`` listed items: every list
    directly under the result (EC2: ``<xSet><item>``, Auto Scaling: ``<Result><X><member>``)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    if namespace:
        ET.register_namespace("", namespace)
    parents = [root, *[child for child in root if child.tag.endswith("Result")]]
    for parent in parents:
        for child in parent:
            if any(grand.tag.rsplit("}", 1)[-1] in ("item", "member") for grand in child):
                for grand in list(child)[keep:]:
                    child.remove(grand)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


def _access_key(environ: dict[str, Any]) -> str:
    """The access key id a SigV4 request was signed with ("" when unsigned)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    marker = "Credential="
    if marker not in auth:
        return ""
    return auth.split(marker, 1)[1].split("/", 1)[0]


class SandboxMiddleware:
    def __init__(self, app: Callable[..., Iterable[bytes]], sandbox: AwsSandbox) -> None:
        self.app = app
        self.sandbox = sandbox
        self.counts: Counter[str] = Counter()
        self.counts_lock = threading.Lock()
        # every call since start, by sender (not reset with the account): what the IAM check reads
        self.callers: Counter[tuple[str, str]] = Counter()
        # (sender, "service:Action") -> the access key ids that signed it; and every AssumeRole
        # request's RoleArn, RoleSessionName and session tags (moto accepts the tags, keeps none)
        self.keys: dict[tuple[str, str], set[str]] = {}
        self.assume_requests: list[dict[str, Any]] = []
        # access key id -> role ARN of every session AssumeRole handed out (kept across account
        # resets, which empty moto's own list)
        self.role_keys: dict[str, str] = {}
        # What should never happen here, kept for the test run's artifacts (tests/conftest.py):
        # an SDK sending again a call moto had already answered (its answer was lost on the way:
        # the next attempt then meets the changed account, e.g. InvalidPermission.NotFound on a
        # rule the first attempt removed), and moto raising instead of answering (a 500).
        # Retries after a fault or a throttle the sandbox injected are not listed: those are meant.
        self.answered: OrderedDict[str, tuple[str, int]] = OrderedDict()  # invocation id -> (call, status)
        self.repeats: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []

    def reset_counts(self) -> None:
        with self.counts_lock:
            self.counts.clear()

    def snapshot_callers(self) -> dict[tuple[str, str], int]:
        with self.counts_lock:
            return dict(self.callers)

    def snapshot_keys(self) -> dict[tuple[str, str], set[str]]:
        with self.counts_lock:
            return {k: set(v) for k, v in self.keys.items()}

    def snapshot_role_keys(self) -> dict[str, str]:
        with self.counts_lock:
            return dict(self.role_keys)

    def snapshot_assume_requests(self) -> list[dict[str, Any]]:
        with self.counts_lock:
            return list(self.assume_requests)

    def snapshot_oddities(self) -> dict[str, list[dict[str, Any]]]:
        with self.counts_lock:
            return {"repeats": list(self.repeats), "errors": list(self.errors)}

    def _note_attempt(self, environ: dict[str, Any], call: str) -> str | None:
        """The call's SDK invocation id; a repeat of a call moto already answered is noted."""
        invocation = environ.get("HTTP_AMZ_SDK_INVOCATION_ID")
        match = _ATTEMPT.search(environ.get("HTTP_AMZ_SDK_REQUEST", ""))
        if not invocation:
            return None
        if match and int(match.group(1)) > 1:
            with self.counts_lock:
                earlier = self.answered.get(invocation)
                if earlier is not None:
                    self.repeats.append(
                        {
                            "call": call,
                            "sender": agent_of(environ),
                            "attempt": int(match.group(1)),
                            "earlier_status": earlier[1],
                            "at": time.time(),
                        }
                    )
        return invocation

    def _note_answer(self, invocation: str | None, call: str, status: int) -> None:
        if invocation is None:
            return
        with self.counts_lock:
            self.answered[invocation] = (call, status)
            self.answered.move_to_end(invocation)
            while len(self.answered) > _ANSWERED_KEPT:
                self.answered.popitem(last=False)

    def _note_error(self, call: str, what: str) -> None:
        with self.counts_lock:
            self.errors.append({"call": call, "at": time.time(), "what": what})

    def snapshot_counts(self) -> dict[str, int]:
        with self.counts_lock:
            return dict(sorted(self.counts.items()))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/_sandbox" or path.startswith("/_sandbox/"):
            return self._control(environ, start_response)
        body = self._read_body(environ)
        internal = environ.get("HTTP_X_SANDBOX_INTERNAL") == "1"
        service, action, json_protocol = identify(environ, body)
        truncate, keep = False, None
        assume: dict[str, Any] | None = None  # an sts:AssumeRole request's parameters
        invocation: str | None = None
        if action and not internal:
            invocation = self._note_attempt(environ, f"{service}:{action}")
            RUNTIME.latency.wait()  # AWS's round trip, outside moto's lock (latency.py)
            with self.counts_lock:
                self.counts[f"{service}:{action}"] += 1
                self.callers[(agent_of(environ), f"{service}:{action}")] += 1
                key = _access_key(environ)
                if key:
                    self.keys.setdefault((agent_of(environ), f"{service}:{action}"), set()).add(key)
            request_text = urllib.parse.unquote_plus(
                environ.get("QUERY_STRING", "") + "&" + body.decode("utf-8", "replace")
            )
            if service == "sts" and action == "AssumeRole":
                assume = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
                with self.counts_lock:
                    self.assume_requests.append(assume)
            held = RUNTIME.faults.take_delay(service, action, request_text)
            if held:
                time.sleep(held)
            fault = RUNTIME.faults.take_call_fault(service, action, json_protocol, request_text)
            if fault is not None:
                code, message, status = fault
                payload, headers = error_body(service, json_protocol, code, message)
                headers.append(("Content-Length", str(len(payload))))
                start_response(_status_line(status), headers)
                return [payload]
            if RUNTIME.token_buckets.enabled and not self._token(environ, service, action, body):
                payload, headers = error_body(service, json_protocol, THROTTLE_CODE, THROTTLE_MESSAGE)
                headers.append(("Content-Length", str(len(payload))))
                start_response(_status_line(THROTTLE_STATUS), headers)
                return [payload]
            truncate, keep = RUNTIME.faults.take_truncate(service, action, request_text)
            if not truncate and RUNTIME.faults.take_lose(service, action, request_text):
                self._moto(environ, lambda status, headers, exc_info=None: None)  # done, as asked ...
                payload, headers = error_body(  # ... and the answer lost: AWS's "it may have succeeded"
                    service, json_protocol, "InternalError", "An internal error has occurred. (injected: answer lost)"
                )
                headers.append(("Content-Length", str(len(payload))))
                start_response(_status_line(500), headers)
                return [payload]
        if service == "rbin":  # moto has no Recycle Bin: sandbox/aws/recycle_bin.py answers
            return self._recycle_bin(environ, body, start_response)
        if not truncate:
            statuses: list[int] = []

            def answer(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                statuses.append(int(status[:3]))
                return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

            try:
                chunks = self._moto(environ, answer)
            except Exception:
                self._note_error(f"{service}:{action}", traceback.format_exc()[-3000:])
                raise
            status = statuses[0] if statuses else 0
            if action and not internal and status >= 500:
                self._note_error(f"{service}:{action}", f"moto answered {status}: {chunks[:500]!r}")
            self._note_answer(invocation, f"{service}:{action}", status)
            if assume is not None:
                self._remember_session(assume, chunks)
            return [chunks]
        # a listing cut short: the same answer without its paging token (Content-Length redone)
        held: list[Any] = []
        chunks = self._moto(environ, lambda status, headers, exc_info=None: held.append((status, headers)))
        chunks = _NEXT_TOKEN.sub(b"", chunks)
        if keep is not None:
            chunks = _first_items(chunks, keep)
        status_line, headers = held[0]
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status_line, [*headers, ("Content-Length", str(len(chunks)))])
        return [chunks]

    def _moto(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> bytes:
        """moto's whole answer to this request, under its lock (moto's backends are not thread-safe)."""
        with LOCK:
            result = self.app(environ, start_response)
            try:
                return b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()

    def _token(self, environ: dict[str, Any], service: str, action: str, body: bytes) -> bool:
        """EC2's token bucket for this request's account, Region and action (token_bucket.py)."""
        from moto.iam.models import get_account_id_from

        match = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = match.group(1) if match else self.sandbox.region
        key = _access_key(environ)
        params = parse_qs(body.decode("utf-8", "replace") or environ.get("QUERY_STRING", ""))
        return RUNTIME.token_buckets.take(service, action, get_account_id_from(key or "testing"), region, params, key)

    def _recycle_bin(self, environ: dict[str, Any], body: bytes, start_response: Callable[..., Any]) -> Iterable[bytes]:
        from moto.iam.models import get_account_id_from

        from . import recycle_bin

        match = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = match.group(1) if match else self.sandbox.region
        account = get_account_id_from(_access_key(environ) or "testing")
        with LOCK:
            status, headers, payload = recycle_bin.respond(
                environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", ""), body, account, region
            )
        start_response(_status_line(status), headers)
        return [payload]

    def _remember_session(self, request: dict[str, Any], answer: bytes) -> None:
        """Which role an AssumeRole answer's access key belongs to (from the request's RoleArn)."""
        found = re.search(rb"<AccessKeyId>([^<]+)</AccessKeyId>", answer)
        role = request.get("RoleArn")
        if found and role:
            with self.counts_lock:
                self.role_keys[found.group(1).decode()] = role

    @staticmethod
    def _read_body(environ: dict[str, Any]) -> bytes:
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        if length:
            body = stream.read(int(length))
        elif environ.get("wsgi.input_terminated"):
            body = stream.read()
        else:
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = False
        return body

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        sub = environ.get("PATH_INFO", "")[len("/_sandbox") :].strip("/")
        raw = self._read_body(environ)
        try:
            payload = json.loads(raw) if raw.strip() else {}
            status, result = self.sandbox.handle_control(method, sub, payload)
        except (TypeError, ValueError, KeyError) as err:
            status, result = 400, {"error": f"{type(err).__name__}: {err}"}
        except Exception as err:  # noqa: BLE001 - report any control failure to the caller
            status, result = 500, {"error": f"{type(err).__name__}: {err}"}
        body = json.dumps(result, default=str, indent=1).encode()
        start_response(_status_line(status), [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


class QuietRequestHandler(MotoRequestHandler):
    """No access log; remembers its connection so stop() can close idle keep-alive sockets."""

    def setup(self) -> None:
        super().setup()
        conns = getattr(self.server, "sandbox_connections", None)
        if conns is not None:
            with self.server.sandbox_lock:  # type: ignore[attr-defined]
                conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            conns = getattr(self.server, "sandbox_connections", None)
            if conns is not None:
                with self.server.sandbox_lock:  # type: ignore[attr-defined]
                    conns.discard(self.connection)

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass
