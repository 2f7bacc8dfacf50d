"""``http://HOST[:PORT]/PATH[?queue=N&timeout=S&env=FILE&body=B]`` (or ``https://``): each
result POSTed as one JSON body (the jsonl sink's record, with its ``time_format`` and
``host_time``) to a webhook: Home Assistant's ``/api/webhook/ID``, Node-RED's ``http in``, a
dashboard's API. A chat or a phone reads a line instead (``BODIES``): ``body=text`` posts it as
plain text (ntfy), ``body=slack`` as ``{"text": LINE}`` (Slack, Mattermost, Rocket.Chat, Google
Chat), ``body=discord`` as ``{"content": LINE}``; a record's fields in JSON had been shown as
"invalid payload" (Slack) or nothing at all.
Given a sink's own choice (``?smooth=20&on_change=1&min_score=0.8``, docs/runtime.md) the hook
hears of the class when it changes, not at every sample.

A POST never holds the run: results wait in a bounded drop-oldest queue (``queue``, 1,000) for
the sink's own thread, which keeps one connection alive and posts them in order. One that fails
(refused, no answer within ``timeout`` seconds, 2 by default, or answered other than 2xx) is
sent again only while it is the newest and the failure may pass (no answer, 5xx, 408, 429): a
hook acts on the newest, and one told only of changes would otherwise keep the old class until
the next change. After a failed connection or such an answer the next attempt waits 0.5 s,
doubling to 8 s, never busily. At close the queue gets ``CLOSE_S`` to drain (the newest sent
again within it, after its wait); the summary says what was posted, answered 2xx, failed
(given up), sent again, dropped and left unsent. A run none of whose results a hook answered
2xx ends in an error (exit 1): a wrong host, path or token is not a success. ``https://``
checks the server's certificate against the system's (``SSL_CERT_FILE`` names another bundle).
A webhook's secret is its path; an API that wants a token (Home Assistant's REST API:
``Bearer TOKEN``) gets the ``Authorization`` header from ``WAVEDGE_HTTP_AUTHORIZATION``, in
the ``env`` file (``KEY=VALUE`` lines, as the MQTT sink's credentials) or else the process
environment: never on the command line."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from collections import deque
from urllib.parse import urlsplit

from wavedge.errors import SinkError, reason
from wavedge.runtime.sinks import STAMP_PARAMS, Stamps, json_text
from wavedge.runtime.urls import env_secrets

FILE_PARAMS = ("env",)  # keys whose value is a file (wavedge service wants it absolute)
AUTHORIZATION = "WAVEDGE_HTTP_AUTHORIZATION"  # the Authorization header's value, a secret
# body=: what a POST carries; None the record, else the key a chat's JSON takes the line under
BODIES = {"json": None, "text": None, "slack": "text", "discord": "content"}

CLOSE_S = 2.0
RETRY_S = (0.5, 8.0)  # the wait after a failed connection: first, and at most


class HttpSink:
    def __init__(self, url, manifest) -> None:
        url.check_params(("queue", "timeout", "env", "body", *STAMP_PARAMS))
        self.stamps = Stamps(url)
        self.where = url.text
        self.body, self.title = _body(url), manifest.name
        try:
            parts = urlsplit(f"{url.scheme}://{url.path}")
            self.host, self.port = parts.hostname, parts.port
        except ValueError as exc:
            raise SinkError(f"{url.text}: {exc}") from None
        if not self.host:
            raise SinkError(f"{url.text}: give the host to post to, e.g. "
                            "http://homeassistant.local:8123/api/webhook/ID")
        if any(c <= " " or c == "\x7f" for c in url.path):  # else each POST fails alike
            raise SinkError(f"{url.text}: a space or control character in the host or path "
                            "(write a space in a path as %20)")
        self.path = parts.path or "/"
        self.tls = url.scheme == "https"
        self.capacity = url.get("queue", 1000, int, (1, 1_000_000))
        self.timeout = url.get("timeout", 2.0, float, (0.05, 60.0))
        secrets = env_secrets(url.get("env"), url.text, (AUTHORIZATION,))
        kind = "text/plain; charset=utf-8" if self.body == "text" else "application/json"
        self.headers = {"Content-Type": kind,
                        **({"Authorization": secrets[AUTHORIZATION]} if secrets else {})}
        self.pending: deque = deque()
        self.cond = threading.Condition()
        self.posted = self.answered = self.failed = self.retried = self.dropped = 0
        self.results = 0
        self.left = 0
        self.why: str | None = None
        self.closing = False
        self.sender = threading.Thread(target=self._send, name="wavedge-http-sink", daemon=True)
        self.sender.start()

    def write(self, result, sample) -> None:
        body = self._text(result, sample).encode()
        self.results += 1
        with self.cond:
            if self.pending and self.pending[0][1]:  # a failed one waiting: no longer the newest
                self.pending.popleft()
                self.failed += 1
            if len(self.pending) >= self.capacity:
                self.pending.popleft()
                self.dropped += 1
            self.pending.append((body, False))
            self.cond.notify()

    def _text(self, result, sample) -> str:
        if self.body == "json":
            return json_text(self.stamps.record(result, sample))
        lane = f", stream {sample.stream}" if sample is not None and sample.stream is not None \
            else ""
        line = f"{self.title}{lane}: {' '.join(result.text().split())}"
        key = BODIES[self.body]
        return line if key is None else json.dumps({key: line})

    def _connection(self) -> http.client.HTTPConnection:
        if self.tls:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _send(self) -> None:
        conn, wait = None, 0.0
        while True:
            with self.cond:
                while not self.pending and not self.closing:
                    self.cond.wait()
                if not self.pending:
                    return
                body, again = self.pending.popleft()
                self.posted += not again
            try:
                conn = conn or self._connection()
                conn.request("POST", self.path, body, self.headers)
                answer = conn.getresponse()
                answer.read()
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                conn = None
                wait = self._failed(body, _why(exc), True, wait)
                continue
            if 200 <= answer.status < 300:
                self.answered += 1
                wait = 0.0
            else:
                wait = self._failed(body, f"answered {answer.status} {answer.reason}".strip(),
                                    answer.status >= 500 or answer.status in (408, 429), wait)

    def _failed(self, body: bytes, why: str, may_pass: bool, wait: float) -> float:
        """Count a failed POST, or queue it again while it is the newest and its failure may
        pass; then wait (0.5 s, doubling to 8 s). A close cuts the wait short, but for the
        newest waiting to be sent again: the last result of a run is the one a hook told of
        changes must not miss, and the close's ``CLOSE_S`` bounds its chances (a run ends
        well before its sink's last POST is answered). The wait to use next."""
        self.why = why
        with self.cond:
            again = may_pass and not self.pending
            if again:
                self.pending.appendleft((body, True))
                self.retried += 1
            else:
                self.failed += 1
            if not may_pass:  # answered: the connection is well
                return 0.0
            wait = min(max(RETRY_S[0], 2 * wait), RETRY_S[1])
            self.cond.wait_for(lambda: self.closing and not again, wait)
        return wait

    def counters(self) -> dict:
        return {"posted": self.posted, "answered": self.answered, "failed": self.failed,
                "sent again": self.retried, "dropped": self.dropped}

    def notes(self) -> list[str]:
        last = f" (the last: {self.why})" if self.why else ""
        failed, again = (last, "") if self.failed else ("", last)  # the reason where it counts
        return [f"http sink {self.where}: {self.posted} results posted, {self.answered} "
                f"answered 2xx, {self.failed} failed{failed}, {self.retried} sent again{again}, "
                f"{self.dropped} dropped from a full queue, {self.left} not sent at close"]

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.sender.join(CLOSE_S)
        with self.cond:  # a newest one still failing at close failed; the others were not sent
            self.failed += sum(again for _, again in self.pending)
            self.left = sum(not again for _, again in self.pending)
            self.pending.clear()
        if self.results and not self.answered:  # a wrong host, path or token: exit 1
            raise SinkError(f"http sink {self.where}: none of the {self.results} results "
                            f"reached the hook (the last: {self.why or 'not sent at close'})")


def _body(url) -> str:
    body = url.get("body", "json")
    if body not in BODIES:
        raise SinkError(f"{url.text}: body= takes json (the record), text (one line, plain: "
                        "ntfy), slack ({\"text\": LINE}: Slack, Mattermost, Google Chat) or "
                        f"discord ({{\"content\": LINE}}), not {body!r}")
    if body != "json" and any(k in url.params for k in STAMP_PARAMS):
        raise SinkError(f"{url.text}: body={body} posts one line, dated as it arrives; "
                        f"{' and '.join(STAMP_PARAMS)} are the record's (body=json)")
    return body


def _why(exc: BaseException) -> str:
    """A failed POST's reason; a TLS error in its own words (its errno is OpenSSL's code,
    which ``os.strerror`` had read as "Operation not permitted")."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS certificate not trusted: {exc.verify_message} (SSL_CERT_FILE names a "
                "bundle that has it)")
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return reason(exc)


def open(url, manifest) -> HttpSink:  # noqa: A001
    return HttpSink(url, manifest)
