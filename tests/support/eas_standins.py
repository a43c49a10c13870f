"""Local stand-ins for Alibaba Cloud's EAS OpenAPI and OSS, for the ``eas`` deployment tests.

These machines cannot reach Alibaba Cloud, so the tests point the official SDKs at these
servers (``-C eas_endpoint=http://127.0.0.1:N``, ``-C oss_endpoint=...``). Each speaks the
documented protocol of the calls the SDKs make: the paths, methods and bodies
``alibabacloud_eas20210701.client`` sends (ROA style, JSON bodies, ``x-acs-action`` header) and
the JSON shapes of its response models; OSS ``PUT /<bucket>/<key>`` (path style, as the OSS SDK
addresses an IP endpoint) answered with ``ETag`` and ``x-oss-hash-crc64ecma``. Every request is
recorded for the tests to check the fields and values sent.

The EAS stand-in also plays a service's gateway: ``POST /api/predict/<name>`` checks the
``Authorization`` token and answers with a real local EAS endpoint of this package (TF 2.21).
``GET /api/predict/<name>`` answers as EAS's gateway does while it sets up the route to a new
service (what alipai's ``Predictor._wait_for_gateway_ready`` waits out): 503 ``no healthy
upstream`` until the service is Running and for ``gateway_503s`` GETs after that, then 401 for a
wrong token and 200 with the processor's description of the model (the backend's, or ``{}``).
"""

import hashlib
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


class _Server:
    def __init__(self, handler):
        self.requests = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.standin = self
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status, body=b"", content_type="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002
        pass


class OssStandin(_Server):
    """OSS PutObject into ``buckets``: ``objects[(bucket, key)] = bytes``."""

    def __init__(self, buckets=("my-bucket",)):
        self.objects = {}
        self.buckets = set(buckets)
        super().__init__(_OssHandler)


class _OssHandler(_Handler):
    def do_PUT(self):  # noqa: N802
        from alibabacloud_oss_v2.crc import Crc64

        standin = self.server.standin
        body = self._body()
        parts = urlsplit(self.path)
        bucket, _, key = parts.path.lstrip("/").partition("/")
        key = unquote(key)
        standin.requests.append({"method": "PUT", "bucket": bucket, "key": key, "headers": dict(self.headers),
                                 "size": len(body)})
        if "OSS4-HMAC-SHA256 Credential=" not in (self.headers.get("Authorization") or ""):
            self._send(403, b"<Error><Code>AccessDenied</Code></Error>", "application/xml")
            return
        if bucket not in standin.buckets:
            self._send(404, ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchBucket</Code>"
                             "<Message>The specified bucket does not exist.</Message>"
                             f"<RequestId>{uuid.uuid4().hex}</RequestId><BucketName>{bucket}</BucketName>"
                             "</Error>").encode(), "application/xml",
                       headers=[("x-oss-request-id", uuid.uuid4().hex), ("x-oss-ec", "0015-00000101")])
            return
        standin.objects[(bucket, key)] = body
        crc = Crc64(0)
        crc.update(body)
        self._send(200, headers=[("ETag", '"%s"' % hashlib.md5(body).hexdigest().upper()),
                                 ("x-oss-request-id", uuid.uuid4().hex),
                                 ("x-oss-hash-crc64ecma", str(crc.sum64()))])


class EasStandin(_Server):
    """The EAS OpenAPI of one region, and the gateway of its services.

    Args:
        region: the region id (the ``cluster_id`` of EAS's paths).
        polls_until_running: DescribeService calls that still answer ``Creating``/``Updating``.
        gateway_503s: gateway GETs answered 503 "no healthy upstream" once the service runs.
        fail_with: a message to make every new service end ``Failed`` with.
        backend: ``{service name: EasEndpoint}`` answering ``/api/predict/<name>``.
    """

    def __init__(self, region, polls_until_running=2, fail_with=None, gateway_503s=2):
        self.region = region
        self.polls_until_running = polls_until_running
        self.fail_with = fail_with
        self.gateway_503s = gateway_503s
        self.gateway_url = None  # another base URL for InternetEndpoint (e.g. one nobody listens on)
        self.services = {}
        self.backends = {}
        super().__init__(_EasHandler)

    def calls(self, action):
        return [r for r in self.requests if r["action"] == action]

    def service_json(self, name):
        s = self.services[name]
        return {
            "ServiceName": name, "ServiceId": s["id"], "Region": self.region, "Status": s["status"],
            "InternetEndpoint": f"{self.gateway_url or self.url}/api/predict/{name}",
            "IntranetEndpoint": f"http://{s['id']}.vpc.{self.region}.pai-eas.aliyuncs.com/api/predict/{name}",
            "AccessToken": s["token"], "ServiceConfig": json.dumps(s["config"]),
            "Labels": [{"LabelKey": k, "LabelValue": v} for k, v in sorted(s["labels"].items())],
            "RunningInstance": s["config"]["metadata"]["instance"] if s["status"] == "Running" else 0,
            "TotalInstance": s["config"]["metadata"]["instance"],
            "CurrentVersion": s["current_version"], "LatestVersion": s["latest_version"], "ServiceUid": s["id"],
            "Message": s["message"], "Reason": s["reason"], "CreateTime": "2026-12-01T10:00:00Z",
            "RequestId": uuid.uuid4().hex,
        }

    def advance(self, name):
        s = self.services[name]
        if s["status"] in ("Creating", "Updating"):
            s["polls"] += 1
            if self.fail_with:
                s.update(status="Failed", message=self.fail_with, reason="ModelLoadFailed")
            elif s["polls"] > self.polls_until_running:
                s.update(status="Running", current_version=s["latest_version"], message="Service is Running",
                         gateway_gets=0)


class _EasHandler(_Handler):
    def _error(self, status, code, message):
        self._send(status, {"RequestId": uuid.uuid4().hex, "Code": code, "Message": message})

    def _record(self, body):
        parts = urlsplit(self.path)
        record = {
            "action": self.headers.get("x-acs-action"), "method": self.command, "path": parts.path,
            "query": {k: v[0] for k, v in parse_qs(parts.query).items()}, "headers": dict(self.headers),
            "body": json.loads(body) if body and self.headers.get("x-acs-action") else None,
        }
        self.server.standin.requests.append(record)
        return record

    def _service(self, record):
        standin = self.server.standin
        parts = record["path"].split("/")  # ['', 'api', 'v2', 'services', region, name, ...]
        if len(parts) < 6 or parts[4] != standin.region:
            self._error(400, "InvalidRegion", f"unknown cluster {parts[4:5]}")
            return None, parts
        if parts[5] not in standin.services:
            self._error(404, "InvalidService.NotFound", f"service {parts[5]} not found")
            return None, parts
        return parts[5], parts

    def _authorized(self):
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("acs ") and "Credential=" not in auth:
            self._error(400, "MissingAuthorization", "the request is not signed")
            return False
        return True

    def do_POST(self):  # noqa: N802
        standin = self.server.standin
        body = self._body()
        if self.path.startswith("/api/predict/"):
            name = self.path.split("?")[0].rsplit("/", 1)[-1]
            standin.requests.append({"action": "predict", "method": "POST", "path": self.path,
                                     "headers": dict(self.headers), "body": body})
            if name not in standin.services or name not in standin.backends:
                self._send(404, b"service not found", "text/plain")
            elif self.headers.get("Authorization") != standin.services[name]["token"]:
                self._send(401, b"Authorization failed", "text/plain")
            else:
                self._send(200, standin.backends[name].predict_bytes(body), "application/octet-stream")
            return
        record = self._record(body)
        if not self._authorized():
            return
        if record["path"] != "/api/v2/services":
            self._error(404, "NotFound", record["path"])
            return
        config = json.loads(record["body"]) if isinstance(record["body"], str) else record["body"]
        name = config["name"]
        if name in standin.services:
            self._error(400, "ServiceAlreadyExists", f"service {name} already exists")
            return
        standin.services[name] = {
            "id": uuid.uuid4().hex[:16], "config": config, "status": "Creating", "polls": 0,
            "labels": json.loads(record["query"].get("Labels", "{}")), "token": config.get("token") or uuid.uuid4().hex,
            "current_version": 0, "latest_version": 1, "message": "Service is now creating", "reason": "",
            "gateway_gets": 0,
        }
        s = standin.service_json(name)
        self._send(200, {k: s[k] for k in ("RequestId", "ServiceId", "ServiceName", "Status", "Region",
                                           "InternetEndpoint", "IntranetEndpoint")})

    def _gateway_get(self):
        standin = self.server.standin
        name = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        standin.requests.append({"action": "gateway", "method": "GET", "path": self.path,
                                 "headers": dict(self.headers), "body": None})
        s = standin.services.get(name)
        if s is None:
            self._send(404, b"", "text/plain")  # no route at all (EAS: bodiless 404)
            return
        if s["status"] != "Running" or s["gateway_gets"] < standin.gateway_503s:
            if s["status"] == "Running":
                s["gateway_gets"] += 1
            self._send(503, b"no healthy upstream", "text/plain")
        elif self.headers.get("Authorization") != s["token"]:
            self._send(401, b"Authorization failed", "text/plain")
        else:
            backend = standin.backends.get(name)
            self._send(200, backend.describe() if backend is not None else {})

    def do_GET(self):  # noqa: N802
        standin = self.server.standin
        if self.path.startswith("/api/predict/"):
            self._gateway_get()
            return
        record = self._record(b"")
        if not self._authorized():
            return
        if record["path"] == "/api/v2/services":
            page, size = int(record["query"].get("PageNumber", 1)), int(record["query"].get("PageSize", 100))
            names = sorted(standin.services)
            chosen = names[(page - 1) * size: page * size]
            self._send(200, {"RequestId": uuid.uuid4().hex, "Services": [standin.service_json(n) for n in chosen],
                             "TotalCount": len(names), "PageNumber": page, "PageSize": size})
            return
        name, _ = self._service(record)
        if name is None:
            return
        standin.advance(name)
        self._send(200, standin.service_json(name))

    def do_PUT(self):  # noqa: N802
        standin = self.server.standin
        record = self._record(self._body())
        if not self._authorized():
            return
        name, parts = self._service(record)
        if name is None:
            return
        s = standin.services[name]
        if len(parts) == 7 and parts[6] == "label":
            s["labels"].update(record["body"]["Labels"])
        else:
            config = json.loads(record["body"]) if isinstance(record["body"], str) else record["body"]
            s["config"] = {**s["config"], **config}
            s.update(status="Updating", polls=0, latest_version=s["latest_version"] + 1,
                     message="Service is now updating")
        self._send(200, {"RequestId": uuid.uuid4().hex, "Message": f"service {name} updated"})

    def do_DELETE(self):  # noqa: N802
        standin = self.server.standin
        record = self._record(b"")
        if not self._authorized():
            return
        name, _ = self._service(record)
        if name is None:
            return
        del standin.services[name]
        self._send(200, {"RequestId": uuid.uuid4().hex, "Message": f"service {name} deleted"})
