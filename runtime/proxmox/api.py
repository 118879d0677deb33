"""The Proxmox VE API client (aiohttp), as the backend uses it.

Wire facts from shared/docs/proxmox-api.md (§ numbers) and docs/proxmox.md:

- token auth ``Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET``, no CSRF for tokens
  (§3.3; pve-http-server ``Formatter.pm`` → ``extract_auth_value``);
- the node's own CA, ``/etc/pve/pve-root-ca.pem`` by default (pve-cluster installs it);
- ``{"data": …}`` envelopes; 400 carries ``errors``; other failures are the HTTP reason phrase
  (§3.2; pve-manager ``PVE/HTTPServer.pm`` → ``rest_handler``);
- booleans go as ``1``/``0`` (§2: ``"True"`` is a 400);
- every lifecycle call answers a UPID at once; the task is polled at
  ``/nodes/{node}/tasks/{upid}/status`` until ``stopped`` and its ``exitstatus`` is ``OK`` or
  ``WARNINGS: N`` (§0 item 4; pve-manager ``PVE/API2/Tasks.pm`` → ``read_task_status``).

Only idempotent reads are retried (a repeated POST could create or start twice). Every call is
one line in the node's event log (runtime.oplog, source "proxmox", event "api") with the
templated endpoint, so ``proxmox-lxcri metrics`` can count round trips per endpoint. The token
secret is only ever in the request header: never in a log line, an error, the state or an event.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp

from runtime import errdefs
from runtime.oplog import OpLog
from runtime.proxmox.settings import ProxmoxSettings, read_secret

#: "Permission check failed (/vms/100, VM.Allocate)" (pve-common Exception.pm → raise_perm_exc)
_PERM = re.compile(r"\(([^,()]+),\s*([^()]+)\)")
_RETRY_DELAYS = (0.2, 0.5, 1.0)


def asyncio_tls() -> None:
    """Give asyncio back the ``ssl`` module the shim daemon imported it without
    (shim/slim.py saves OpenSSL in daemons that speak ttrpc only; this backend needs TLS). The
    three modules hold ``ssl = None`` when imported without it; ``sslproto`` also defines
    names from ``ssl`` at import, so it is executed again (in place: the event loop modules
    reach it as ``sslproto.SSLProtocol``)."""
    import asyncio.base_events
    import asyncio.selector_events
    import asyncio.sslproto
    import importlib

    if getattr(asyncio.sslproto, "ssl", ssl) is None:
        importlib.reload(asyncio.sslproto)
    for mod in (asyncio.base_events, asyncio.selector_events):
        if getattr(mod, "ssl", ssl) is None:
            mod.ssl = ssl  # type: ignore[attr-defined]


def _where(vmid: int | None) -> str:
    return f"CT {vmid}" if vmid is not None else "proxmox"


def encode(params: dict[str, Any]) -> dict[str, str]:
    """Form values as Proxmox parses them: booleans 1/0 (JSONSchema.pm check_type)."""
    out: dict[str, str] = {}
    for k, v in params.items():
        if v is None:
            continue
        out[k] = ("1" if v else "0") if isinstance(v, bool) else str(v)
    return out


def task_ok(exitstatus: str) -> bool:
    """``OK`` and ``WARNINGS: N`` are success (pve-common Tools.pm → upid_read_status)."""
    return exitstatus == "OK" or exitstatus.startswith("WARNINGS:")


class PveApi:
    """One node's API for one backend instance; call :meth:`close` when done."""

    def __init__(self, settings: ProxmoxSettings, oplog: OpLog | None = None,
                 *, secret: str | None = None) -> None:
        self.settings = settings
        self.oplog = oplog or OpLog(None, source="proxmox")
        self._secret = secret if secret is not None else read_secret(settings.token_secret_file)
        self._session: aiohttp.ClientSession | None = None
        #: Round trips and their time, per endpoint (bench/ reads these).
        self.calls: list[tuple[str, str, float]] = []

    def __repr__(self) -> str:  # never the secret
        return f"PveApi({self.settings.url!r}, node={self.settings.node!r})"

    def _ssl(self) -> ssl.SSLContext:
        asyncio_tls()
        try:
            return ssl.create_default_context(cafile=self.settings.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise errdefs.FailedPrecondition(
                f"proxmox: CA file {self.settings.ca_file}: "
                f"{getattr(exc, 'strerror', None) or exc}") from None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=8),
                headers={"Authorization":
                         f"PVEAPIToken={self.settings.token_id}={self._secret}"},
                timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def path(self, template: str, **fields: Any) -> str:
        values = {"node": self.settings.node, **fields}
        return template.format(**{k: urllib.parse.quote(str(v), safe="")
                                  for k, v in values.items()})

    async def call(self, method: str, template: str, *, vmid: int | None = None,
                   params: dict[str, Any] | None = None, read: bool = False,
                   **fields: Any) -> Any:
        """One request; the ``data`` of the answer. ``template`` is the path with ``{node}``,
        ``{vmid}``… (filled from ``fields``, ``vmid`` and the node); ``read``: an idempotent
        GET that may be retried."""
        if vmid is not None:
            fields.setdefault("vmid", vmid)
        url = f"{self.settings.url}/api2/json{self.path(template, **fields)}"
        attempts = (0.0, *_RETRY_DELAYS) if read else (0.0,)
        last: errdefs.ErrdefsError | None = None
        for delay in attempts:
            if delay:
                await asyncio.sleep(delay)
            try:
                return await self._once(method, template, url, vmid, params or {})
            except _Retryable as exc:
                last = exc.error
        assert last is not None
        raise last

    async def _once(self, method: str, template: str, url: str, vmid: int | None,
                    params: dict[str, Any]) -> Any:
        where = f"{_where(vmid)}: {method} {template}"
        started = time.monotonic()
        status: int | None = None
        error: errdefs.ErrdefsError | None = None
        retry = False
        try:
            session = self._get_session()
            form = encode(params)
            kwargs: dict[str, Any] = ({"params": form} if method in ("GET", "DELETE")
                                      else {"data": form})
            async with session.request(method, url, **kwargs) as resp:
                status = resp.status
                if status == 200:
                    body = await resp.json(content_type=None)
                    return body.get("data") if isinstance(body, dict) else None
                text = await resp.text(errors="replace")
                error = _http_error(where, status, resp.reason or "", text)
                retry = status >= 500 and status != 501
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
            error = errdefs.Unavailable(f"{where}: TLS failure talking to {self.settings.url} "
                                        f"(CA file {self.settings.ca_file}): {_short(exc)}")
        except aiohttp.ClientConnectorError as exc:
            error = errdefs.Unavailable(f"{where}: Proxmox API {self.settings.url} "
                                        f"unreachable: {_short(exc)}")
            retry = True
        except TimeoutError:
            error = errdefs.DeadlineExceeded(
                f"{where}: no answer within {self.settings.request_timeout:g}s")
            retry = True
        except (aiohttp.ClientError, ValueError) as exc:
            error = errdefs.Unavailable(f"{where}: {_short(exc)}")
            retry = True
        finally:
            seconds = time.monotonic() - started
            self.calls.append((method, template, seconds))
            self.oplog.record("api", ok=error is None, seconds=seconds, method=method,
                              endpoint=template, status=status, vmid=vmid,
                              error=str(error) if error else None)
        assert error is not None
        if retry:
            raise _Retryable(error)
        raise error

    async def upload(self, template: str, *, fields: dict[str, str], file_field: str,
                     file: Path, filename: str, **path: Any) -> Any:
        """A multipart POST (``…/storage/{storage}/upload``: pveproxy streams the file part to
        a temporary file; pve-storage ``API2/Storage/Status.pm`` → ``upload``). Not retried."""
        url = f"{self.settings.url}/api2/json{self.path(template, **path)}"
        where = f"proxmox: POST {template}"
        started = time.monotonic()
        status: int | None = None
        error: errdefs.ErrdefsError | None = None
        try:
            form = aiohttp.FormData()
            for k, v in fields.items():
                form.add_field(k, v)
            with open(file, "rb") as f:
                form.add_field(file_field, f, filename=filename,
                               content_type="application/octet-stream")
                session = self._get_session()
                async with session.post(url, data=form, timeout=aiohttp.ClientTimeout(
                        total=self.settings.task_timeout)) as resp:
                    status = resp.status
                    if status == 200:
                        body = await resp.json(content_type=None)
                        return body.get("data") if isinstance(body, dict) else None
                    error = _http_error(where, status, resp.reason or "",
                                        await resp.text(errors="replace"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = errdefs.Unavailable(f"{where}: {_short(exc)}")
        finally:
            seconds = time.monotonic() - started
            self.calls.append(("POST", template, seconds))
            self.oplog.record("api", ok=error is None, seconds=seconds, method="POST",
                              endpoint=template, status=status,
                              error=str(error) if error else None)
        assert error is not None
        raise error

    async def wait_task(self, upid: str, *, vmid: int | None, what: str) -> None:
        """Poll the task until it stops; raise with its exitstatus unless it succeeded."""
        if not isinstance(upid, str) or not upid.startswith("UPID:"):
            raise errdefs.Internal(f"{_where(vmid)}: {what}: the API answered {upid!r}, "
                                   "not a task id (UPID)")
        node = upid.split(":")[1]
        deadline = time.monotonic() + self.settings.task_timeout
        interval = 0.02
        while True:
            st = await self.call("GET", "/nodes/{node}/tasks/{upid}/status", vmid=vmid,
                                 read=True, node=node, upid=upid)
            if isinstance(st, dict) and st.get("status") == "stopped":
                exitstatus = str(st.get("exitstatus", ""))
                if task_ok(exitstatus):
                    return
                raise _task_error(f"{_where(vmid)}: {what}: task {st.get('type', '')} failed",
                                  exitstatus)
            if time.monotonic() > deadline:
                await self._stop_task(node, upid, vmid)
                raise errdefs.DeadlineExceeded(
                    f"{_where(vmid)}: {what}: task {upid} still running after "
                    f"{self.settings.task_timeout:g}s (stopped)")
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 0.2)

    async def _stop_task(self, node: str, upid: str, vmid: int | None) -> None:
        """Stop a task we gave up on (``DELETE /nodes/{node}/tasks/{upid}``, pve-manager
        ``API2/Tasks.pm`` → ``stop_task``) and give it a moment to end, so that the CT it
        holds can be cleaned up. Best effort: the caller reports the timeout."""
        try:
            await self.call("DELETE", "/nodes/{node}/tasks/{upid}", vmid=vmid, node=node,
                            upid=upid)
            for _ in range(50):
                st = await self.call("GET", "/nodes/{node}/tasks/{upid}/status", vmid=vmid,
                                     read=True, node=node, upid=upid)
                if isinstance(st, dict) and st.get("status") == "stopped":
                    return
                await asyncio.sleep(0.1)
        except errdefs.ErrdefsError:
            return

    async def run(self, method: str, template: str, *, vmid: int | None, what: str = "",
                  params: dict[str, Any] | None = None, **fields: Any) -> None:
        """A call that starts a task, and the task to its end."""
        upid = await self.call(method, template, vmid=vmid, params=params, **fields)
        await self.wait_task(upid, vmid=vmid, what=what or f"{method} {template}")


class _Retryable(Exception):
    def __init__(self, error: errdefs.ErrdefsError) -> None:
        super().__init__(str(error))
        self.error = error


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _http_error(where: str, status: int, reason: str, body: str) -> errdefs.ErrdefsError:
    reason = reason.strip()
    if status == 401:
        return errdefs.Unavailable(  # the token itself is wrong: nothing a retry fixes
            f"{where}: 401 {reason or 'authentication failed'} (check [proxmox] token_id and "
            "the token secret file)")
    if status == 403:
        m = _PERM.search(reason)
        missing = (f"; the token lacks privilege {m.group(2).strip()} on {m.group(1).strip()}"
                   if m and m.group(1).startswith("/") else "")
        return errdefs.FailedPrecondition(f"{where}: 403 {reason}{missing}")
    if status == 400:
        return errdefs.InvalidArgument(f"{where}: 400 {reason}: {_errors(body)}")
    if status == 500:
        return _task_error(f"{where}: 500", reason)
    return errdefs.Unavailable(f"{where}: {status} {reason}")


def _errors(body: str) -> str:
    import json
    try:
        errors = json.loads(body).get("errors") or {}
    except (ValueError, AttributeError):
        return body[:200]
    return "; ".join(f"{k}: {str(v).strip()}" for k, v in sorted(errors.items()))


def _task_error(prefix: str, text: str) -> errdefs.ErrdefsError:
    """A handler's die text (or a task's exitstatus) in the errdefs vocabulary."""
    message = f"{prefix}: {text}"
    if "is locked" in text or "can't lock file" in text:
        return errdefs.FailedPrecondition(message + " (a held lock)")
    if "already exists" in text:
        return errdefs.AlreadyExists(message)
    if "does not exist" in text:
        return errdefs.NotFound(message)
    if "already running" in text or "not running" in text:
        return errdefs.FailedPrecondition(message)
    return errdefs.Internal(message)
