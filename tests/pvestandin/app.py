"""The HTTP side: ``/api2/json`` routing from the schema, authentication, parameters,
validation, envelopes and error answers, as pveproxy/pvedaemon give them.

Sources: pve-http-server ``src/PVE/APIServer/AnyEvent.pm`` (``handle_request``,
``extract_params``, 501 texts), ``Formatter.pm`` (``extract_auth_value``), pve-manager
``PVE/HTTPServer.pm`` (``auth_handler``, ``rest_handler``), pve-access-control
``src/PVE/AccessControl.pm`` (tickets, tokens); summarised in proxmox-api.md §3.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from tests.pvestandin.errors import ApiError, die, param_exc, perm_exc
from tests.pvestandin.node import Caller, Node
from tests.pvestandin.perms import check_schema
from tests.pvestandin.schema import Method, Router
from tests.pvestandin.tasks import Task, TaskFailed
from tests.pvestandin.validate import validate

HEADERS = {"Server": "pve-api-daemon/3.0", "Cache-Control": "max-age=0", "Pragma": "no-cache"}
JSON_TYPE = "application/json;charset=UTF-8"
#: The file of a multipart upload, while its request runs.
UPLOAD_KEY = web.RequestKey("pve_upload", Path)


@dataclass
class Fault:
    """Tests: answer ``times`` requests matching ``method`` and ``path`` (a regex on the path
    below /api2/json) with ``status`` and ``message`` (500: a handler's die)."""

    method: str
    path: str
    status: int
    message: str
    times: int = 1


@dataclass
class Auth:
    """Known credentials: API tokens (``user@realm!name`` → secret) and user passwords."""

    tokens: dict[str, str] = field(default_factory=dict)
    #: Privileges of a token (perms.py); a token not listed has all of them.
    token_privs: dict[str, frozenset[str]] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    tickets: dict[str, tuple[str, str, float]] = field(default_factory=dict)  # ticket → user,csrf,t
    fail_delay: float = 0.0  # real nodes wait 3 s before a 401 (pve-manager HTTPServer.pm)


def _reply(status: int, data: Any = None, *, reason: str | None = None,
           body: dict[str, Any] | None = None, empty: bool = False) -> web.Response:
    if empty:  # 401 and the non-API 501 have no JSON body (proxmox-api.md §3.3a)
        return web.Response(status=status, reason=reason, headers=HEADERS)
    payload = body if body is not None else {"data": data}
    return web.Response(status=status, reason=reason,
                        headers={**HEADERS, "Content-Type": JSON_TYPE},
                        body=json.dumps(payload).encode())


def error_response(e: ApiError) -> web.Response:
    # The reason phrase is the message's first line (HTTP has no multi-line phrases).
    reason = e.message.split("\n", 1)[0]
    body: dict[str, Any] = {"data": None, "message": e.message}
    if e.errors is not None:
        body["errors"] = e.errors
    return _reply(e.status, reason=reason, body=body)


class Api:
    def __init__(self, node: Node, router: Router, auth: Auth) -> None:
        self.node = node
        self.router = router
        self.auth = auth
        self.calls: list[tuple[str, str]] = []  # (method, path) of every request, for tests
        self.faults: list[Fault] = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/api2/json/{tail:.*}", self.handle)
        app.router.add_route("*", "/{tail:.*}", self.not_api)
        return app

    async def not_api(self, request: web.Request) -> web.Response:
        return _reply(501, reason=f"Method '{request.method} {request.path}' not implemented",
                      empty=True)

    # -- authentication (pve-manager HTTPServer.pm auth_handler) ------------------------

    async def authenticate(self, request: web.Request, method: str) -> Caller | web.Response:
        header = request.headers.get("Authorization", "")
        m = re.match(r"PVEAPIToken[= ](.+)$", header, re.S)
        if m:
            # Formatter.pm extract_auth_value: URI-unescaped, split at the last '='.
            value = urllib.parse.unquote(m.group(1).strip())
            tokenid, sep, secret = value.rpartition("=")
            if sep and self.auth.tokens.get(tokenid) is not None \
                    and secrets.compare_digest(self.auth.tokens[tokenid], secret):
                return Caller(tokenid, token=True, privs=self.auth.token_privs.get(tokenid))
            return await self._unauthorized("Authentication failed!")
        ticket = None
        m = re.match(r"PVEAuthCookie=(.+)$", header)
        if m:
            ticket = m.group(1)
        elif "PVEAuthCookie" in request.cookies:
            ticket = request.cookies["PVEAuthCookie"]
        if ticket is None:
            return await self._unauthorized("No ticket")
        entry = self.auth.tickets.get(urllib.parse.unquote(ticket))
        if entry is None or time.time() - entry[2] > 7200:  # tickets live 2 h
            return await self._unauthorized("Authentication failed!")
        user, csrf, _ = entry
        if method != "GET" and request.headers.get("CSRFPreventionToken") != csrf:
            return await self._unauthorized("Permission denied - invalid csrf token")
        return Caller(user, token=False)

    async def _unauthorized(self, reason: str) -> web.Response:
        if self.auth.fail_delay:
            await asyncio.sleep(self.auth.fail_delay)
        return _reply(401, reason=reason, empty=True)

    # -- parameters (pve-http-server AnyEvent.pm extract_params) -------------------------

    async def params(self, request: web.Request, path_params: dict[str, str]
                     ) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if request.method in ("POST", "PUT") and request.content_type == "multipart/form-data":
            # pveproxy streams an upload's file part to /var/tmp/pveupload-<hex> and passes
            # the handler 'tmpfilename' plus the client's 'filename' (pve-http-server
            # AnyEvent.pm file upload handling; proxmox-api.md §4, upload).
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                if part.filename is not None:
                    tmp_dir = self.node.root / "var/tmp"
                    tmp_dir.mkdir(parents=True, exist_ok=True)
                    name = f"pveupload-{secrets.token_hex(16)}"
                    with open(tmp_dir / name, "wb") as f:
                        while chunk := await part.read_chunk(1 << 20):
                            f.write(chunk)
                    params[part.name] = part.filename
                    params["tmpfilename"] = f"/var/tmp/{name}"
                    request[UPLOAD_KEY] = tmp_dir / name
                else:
                    params[part.name] = (await part.read()).decode("utf-8", "replace")
        elif request.method in ("POST", "PUT"):
            ctype = request.content_type
            raw = await request.read()
            if raw:
                if ctype == "application/json":
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        raise die("unable to parse JSON body") from None  # unverified wording
                    if not isinstance(body, dict):
                        raise param_exc({"_root": "type check ('object') failed"})
                    for k, v in body.items():
                        # Perl sees JSON numbers as scalars; booleans stay booleans.
                        params[k] = v if isinstance(v, bool | list | dict) or v is None \
                            else (str(int(v)) if isinstance(v, float) and v.is_integer()
                                  else str(v))
                else:
                    for k, v in urllib.parse.parse_qsl(raw.decode("utf-8", "replace"),
                                                       keep_blank_values=True):
                        params[k] = v
        elif request.method == "DELETE" and request.content_length:
            raise ApiError(501, f"Unexpected content for method '{request.method}'")
        for k, v in urllib.parse.parse_qsl(request.query_string, keep_blank_values=True):
            params[k] = v  # the query string overrides the body
        for k, v in path_params.items():
            if k in params and str(params[k]) != v:
                raise param_exc({k: "duplicate parameter (already defined in URI) with "
                                    "conflicting values!"})
            params[k] = v
        return {k: v for k, v in params.items() if v is not None}

    # -- dispatch ------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        method = request.method
        rel = "/" + request.match_info["tail"]
        self.calls.append((method, rel))
        if method == "OPTIONS" or method == "HEAD":
            method = "GET"
        caller = None
        # HTTPServer.pm auth_handler lets a login through without credentials; a token that is
        # sent anyway is still checked, and refused below (allowtoken 0).
        login = rel.rstrip("/") == "/access/ticket" and method == "POST"
        if not login or request.headers.get("Authorization", "").startswith("PVEAPIToken"):
            got = await self.authenticate(request, method)
            if isinstance(got, web.Response):
                return got  # authentication runs before routing (proxmox-api.md §3.3a)
            caller = got
        self.node.refresh()
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and re.fullmatch(fault.path, rel):
                fault.times -= 1
                return error_response(ApiError(fault.status, fault.message))
        found = self.router.match(rel)
        if found is None or method not in found[2]:
            return _reply(501, reason=f"Method '{method} {rel}' not implemented",
                          body={"data": None, "message":
                                f"Method '{method} {rel}' not implemented\n"})
        spath, path_params, methods = found
        info = methods[method]
        try:
            if caller is not None and caller.token and not info.allowtoken:
                raise perm_exc(f"URI '{rel}' not available with API token, need proper "
                               "ticket.\n")
            params = await self.params(request, path_params)
            # HTTPServer.pm rest_handler checks the declared permissions first, then the
            # handler validates its parameters (RESTHandler.pm handle).
            if caller is not None:
                check_schema(caller.privs, info.permissions, params)
            errors = validate(params, info.properties, info.additional)
            if errors:
                raise param_exc(errors)
            handler = getattr(self, "h_" + _handler_name(method, spath), None)
            if handler is None:
                raise ApiError(501, f"Method '{method} {rel}' not implemented")
            if "node" in params and params["node"] != self.node.name:
                # proxyto 'node': the call would be proxied to a node this cluster lacks.
                raise die(f"hostname lookup '{params['node']}' failed - failed to get address "
                          f"info for: {params['node']}: Name or service not known")
            data = await handler(params, caller, info)
        except Exception as e:  # a stand-in bug still answers like a node's die, visibly
            if not isinstance(e, ApiError):
                e = ApiError(500, f"internal error in stand-in: {e!r}")
            upload = request.get(UPLOAD_KEY)
            if upload is not None:  # pveproxy removes an upload no worker took over
                upload.unlink(missing_ok=True)
            return error_response(e)
        resp = _reply(200, data)
        if isinstance(resp.body, bytes) and len(resp.body) > 1024 \
                and "gzip" in request.headers.get("Accept-Encoding", ""):
            # pve-http-server AnyEvent.pm response: bodies over 1 KiB are gzipped for clients
            # that accept it (proxmox-api.md §3.1).
            resp.enable_compression(web.ContentCoding.gzip)
        return resp

    # -- handlers: named h_<METHOD>_<schema path with / → _ and {x} → x> ------------------

    async def h_GET_version(self, p: dict[str, Any], c: Caller, m: Method) -> Any:
        return self.node.version_info()

    async def h_GET_cluster_nextid(self, p: dict[str, Any], c: Caller, m: Method) -> Any:
        return self.node.nextid(p.get("vmid"))

    async def h_GET_nodes(self, p: dict[str, Any], c: Caller, m: Method) -> Any:
        return [{"node": self.node.name, "status": "online", "type": "node",
                 "id": f"node/{self.node.name}", "level": "", "maxcpu": 2, "cpu": 0,
                 "uptime": 1}]

    async def h_GET_access_ticket(self, p: dict[str, Any], c: Caller, m: Method) -> Any:
        return None

    async def h_POST_access_ticket(self, p: dict[str, Any], c: Caller | None, m: Method
                                   ) -> Any:
        user = str(p["username"])
        if "@" not in user and p.get("realm"):
            user = f"{user}@{p['realm']}"
        password = str(p["password"])
        if user in self.auth.passwords and secrets.compare_digest(
                self.auth.passwords[user], password) or password in self.auth.tickets \
                and self.auth.tickets[password][0] == user:
            sig = base64.b64encode(secrets.token_bytes(32)).decode()
            ticket = f"PVE:{user}:{int(time.time()):08X}::{sig}"
            csrf = f"{int(time.time()):08X}:{base64.b64encode(secrets.token_bytes(24)).decode()}"
            self.auth.tickets[ticket] = (user, csrf, time.time())
            return {"username": user, "ticket": ticket, "CSRFPreventionToken": csrf,
                    "clustername": None, "cap": {}}
        if self.auth.fail_delay:
            await asyncio.sleep(self.auth.fail_delay)
        raise ApiError(401, "authentication failure")

    async def h_GET_nodes_node_lxc(self, p: dict[str, Any], c: Caller, m: Method) -> Any:
        return [await self.node.ct_status(ct) for ct in list(self.node.cts.values())]

    async def h_POST_nodes_node_lxc(self, p: dict[str, Any], c: Caller, m: Method) -> Any:
        return await self.node.create(dict(p), c)

    async def h_GET_nodes_node_lxc_vmid(self, p: dict[str, Any], c: Caller, m: Method) -> Any:
        self.node.load(int(p["vmid"]))
        return [{"subdir": s} for s in ("config", "pending", "status", "vncproxy", "termproxy",
                                        "vncwebsocket", "spiceproxy", "migrate", "clone",
                                        "rrd", "firewall", "rrddata", "snapshot", "resize",
                                        "move_volume", "feature", "interfaces", "mtunnel")]

    async def h_DELETE_nodes_node_lxc_vmid(self, p: dict[str, Any], c: Caller, m: Method
                                           ) -> Any:
        return await self.node.destroy(int(p["vmid"]), c, p.get("force") in ("1", True))

    async def h_GET_nodes_node_lxc_vmid_config(self, p: dict[str, Any], c: Caller, m: Method
                                               ) -> Any:
        ct = self.node.load(int(p["vmid"]))
        conf = dict(ct.conf)
        if p.get("snapshot"):
            snap = ct.snapshots.get(str(p["snapshot"]))
            if snap is None:
                raise die(f"snapshot '{p['snapshot']}' does not exist")
            conf = dict(snap)
        put = self.router.match(f"/nodes/{self.node.name}/lxc/{ct.vmid}/config")
        props = put[2]["PUT"].properties if put and "PUT" in put[2] else {}
        out = self.node.typed_conf(conf, props)
        out["digest"] = self.node.digest(ct)
        if ct.lxc:
            out["lxc"] = [[k, v] for k, v in ct.lxc]
        return out

    async def h_PUT_nodes_node_lxc_vmid_config(self, p: dict[str, Any], c: Caller, m: Method
                                               ) -> Any:
        await self.node.update_config(int(p["vmid"]), dict(p), c)
        return None

    async def h_GET_nodes_node_lxc_vmid_status(self, p: dict[str, Any], c: Caller, m: Method
                                               ) -> Any:
        self.node.load(int(p["vmid"]))
        return [{"subdir": s} for s in ("current", "start", "stop", "shutdown", "reboot",
                                        "suspend", "resume")]

    async def h_GET_nodes_node_lxc_vmid_status_current(self, p: dict[str, Any], c: Caller,
                                                       m: Method) -> Any:
        return await self.node.ct_status(self.node.load(int(p["vmid"])))

    async def h_POST_nodes_node_lxc_vmid_status_start(self, p: dict[str, Any], c: Caller,
                                                      m: Method) -> Any:
        return await self.node.start(int(p["vmid"]), p.get("skiplock") in ("1", True), c)

    async def h_POST_nodes_node_lxc_vmid_status_stop(self, p: dict[str, Any], c: Caller,
                                                     m: Method) -> Any:
        return await self.node.stop(int(p["vmid"]), c, shutdown=False,
                                    skiplock=p.get("skiplock") in ("1", True))

    async def h_POST_nodes_node_lxc_vmid_status_shutdown(self, p: dict[str, Any], c: Caller,
                                                         m: Method) -> Any:
        return await self.node.stop(int(p["vmid"]), c, shutdown=True,
                                    timeout=int(p.get("timeout", 60)),
                                    force_stop=p.get("forceStop") in ("1", True))

    async def h_POST_nodes_node_lxc_vmid_status_reboot(self, p: dict[str, Any], c: Caller,
                                                       m: Method) -> Any:
        timeout = int(p["timeout"]) if "timeout" in p else None
        return await self.node.reboot(int(p["vmid"]), timeout, c)

    async def h_GET_nodes_node_lxc_vmid_pending(self, p: dict[str, Any], c: Caller, m: Method
                                                ) -> Any:
        """pve-container API2/LXC/Config.pm vm_pending: one item per key; the stand-in keeps
        no pending changes, so only ``value`` is ever set."""
        ct = self.node.load(int(p["vmid"]))
        put = self.router.match(f"/nodes/{self.node.name}/lxc/{ct.vmid}/config")
        props = put[2]["PUT"].properties if put and "PUT" in put[2] else {}
        typed = self.node.typed_conf(ct.conf, props)
        return [{"key": k, "value": typed[k]} for k in sorted(typed)]

    async def h_POST_nodes_node_lxc_vmid_template(self, p: dict[str, Any], c: Caller,
                                                  m: Method) -> Any:
        await self.node.template(int(p["vmid"]), c)
        return None

    async def h_POST_nodes_node_lxc_vmid_clone(self, p: dict[str, Any], c: Caller, m: Method
                                               ) -> Any:
        return await self.node.clone(int(p["vmid"]), p, c)

    async def h_GET_cluster_resources(self, p: dict[str, Any], c: Caller, m: Method) -> Any:
        return await self.node.resources(p.get("type"))

    async def h_GET_nodes_node_lxc_vmid_snapshot(self, p: dict[str, Any], c: Caller,
                                                 m: Method) -> Any:
        return self.node.snapshot_list(int(p["vmid"]))

    async def h_POST_nodes_node_lxc_vmid_snapshot(self, p: dict[str, Any], c: Caller,
                                                  m: Method) -> Any:
        return await self.node.snapshot(int(p["vmid"]), str(p["snapname"]),
                                        str(p.get("description", "")), c)

    async def h_GET_nodes_node_lxc_vmid_snapshot_snapname(self, p: dict[str, Any], c: Caller,
                                                          m: Method) -> Any:
        ct = self.node.load(int(p["vmid"]))
        if p["snapname"] not in ct.snapshots:
            raise die(f"snapshot '{p['snapname']}' does not exist")
        return [{"subdir": "rollback"}, {"subdir": "config"}]

    async def h_DELETE_nodes_node_lxc_vmid_snapshot_snapname(self, p: dict[str, Any],
                                                             c: Caller, m: Method) -> Any:
        return await self.node.delete_snapshot(int(p["vmid"]), str(p["snapname"]),
                                               p.get("force") in ("1", True), c)

    async def h_POST_nodes_node_lxc_vmid_snapshot_snapname_rollback(
            self, p: dict[str, Any], c: Caller, m: Method) -> Any:
        return await self.node.rollback(int(p["vmid"]), str(p["snapname"]),
                                        p.get("start") in ("1", True), c)

    async def h_GET_nodes_node_tasks(self, p: dict[str, Any], c: Caller, m: Method) -> Any:
        """pve-manager PVE/API2/Tasks.pm node_tasks: newest first; ``source`` archive (the
        default: finished tasks), active or all; then the filters, then start/limit."""
        tasks = list(reversed(self.node.tasks.tasks.values()))
        source = p.get("source", "archive")
        if source == "archive":
            tasks = [t for t in tasks if not t.running]
        elif source == "active":
            tasks = [t for t in tasks if t.running]
        if p.get("vmid"):
            tasks = [t for t in tasks if t.id == str(p["vmid"])]
        if p.get("typefilter"):
            tasks = [t for t in tasks if t.type == p["typefilter"]]
        if p.get("userfilter"):
            tasks = [t for t in tasks if str(p["userfilter"]) in t.user]
        if p.get("errors") in ("1", True):
            tasks = [t for t in tasks if t.exitstatus not in (None, "OK")]
        if p.get("statusfilter"):
            want = {x.lower() for x in re.split(r"[\0,;\s]+", str(p["statusfilter"])) if x}

            def kind(t: Any) -> str:
                if t.exitstatus == "OK":
                    return "ok"
                if t.exitstatus and t.exitstatus.startswith("WARNINGS"):
                    return "warning"
                return "unknown" if t.exitstatus in (None, "unexpected status") else "error"
            tasks = [t for t in tasks if kind(t) in want]
        if p.get("since"):
            tasks = [t for t in tasks if t.starttime >= int(p["since"])]
        if p.get("until"):
            tasks = [t for t in tasks if t.starttime <= int(p["until"])]
        start, limit = int(p.get("start", 0)), int(p.get("limit", 50))
        return [t.list_entry() for t in tasks[start:start + limit]]

    def _task(self, upid: str) -> Any:
        from tests.pvestandin.tasks import UPID_RE
        if not UPID_RE.fullmatch(upid):
            raise param_exc({"upid": "unable to parse worker upid"})
        task = self.node.tasks.get(upid)
        if task is None:
            raise param_exc({"upid": "no such task"})
        return task

    async def h_GET_nodes_node_tasks_upid(self, p: dict[str, Any], c: Caller, m: Method
                                          ) -> Any:
        self._task(str(p["upid"]))
        return [{"name": "log"}, {"name": "status"}]

    async def h_GET_nodes_node_tasks_upid_status(self, p: dict[str, Any], c: Caller,
                                                 m: Method) -> Any:
        return self._task(str(p["upid"])).status()

    async def h_GET_nodes_node_tasks_upid_log(self, p: dict[str, Any], c: Caller, m: Method
                                              ) -> Any:
        task = self._task(str(p["upid"]))
        start, limit = int(p.get("start", 0)), int(p.get("limit", 50))
        return [{"n": i + 1, "t": line}
                for i, line in enumerate(task.log) if start <= i < start + limit]

    async def h_DELETE_nodes_node_tasks_upid(self, p: dict[str, Any], c: Caller, m: Method
                                             ) -> Any:
        task = self._task(str(p["upid"]))
        if task.running and task.job is not None:
            task.job.cancel()
        return None

    async def h_GET_nodes_node_storage(self, p: dict[str, Any], c: Caller, m: Method) -> Any:
        out = []
        for store in self.node.storages.values():
            st = store.status()
            if p.get("content") and str(p["content"]) not in store.content.split(","):
                continue
            if p.get("storage") and p["storage"] != store.sid:
                continue
            out.append(st)
        return out

    def _storage(self, sid: str) -> Any:
        store = self.node.storages.get(sid)
        if store is None:
            raise die(f"storage '{sid}' does not exist")
        return store

    async def h_GET_nodes_node_storage_storage(self, p: dict[str, Any], c: Caller, m: Method
                                               ) -> Any:
        self._storage(str(p["storage"]))
        return [{"subdir": s} for s in ("content", "status", "rrd", "rrddata", "upload")]

    async def h_GET_nodes_node_storage_storage_status(self, p: dict[str, Any], c: Caller,
                                                      m: Method) -> Any:
        return self._storage(str(p["storage"])).status()

    async def h_GET_nodes_node_storage_storage_content(self, p: dict[str, Any], c: Caller,
                                                       m: Method) -> Any:
        items = self._storage(str(p["storage"])).content_list()
        if p.get("content"):
            items = [i for i in items if i["content"] == p["content"]]
        if p.get("vmid"):
            items = [i for i in items if str(i.get("vmid")) == str(p["vmid"])]
        return items

    async def h_POST_nodes_node_storage_storage_upload(self, p: dict[str, Any], c: Caller,
                                                       m: Method) -> Any:
        """pve-storage src/PVE/API2/Storage/Status.pm upload: an ``imgcopy`` worker moves the
        uploaded file into the storage's template (or iso) folder, checking the checksum."""
        store = self._storage(str(p["storage"]))
        content, filename = str(p["content"]), str(p["filename"])
        tmp = p.get("tmpfilename")
        if tmp is None:
            raise param_exc({"tmpfilename": "missing upload file"})  # unverified wording
        tmp_path = self.node.root / str(tmp).lstrip("/")
        if content not in store.content.split(","):
            raise die(f"storage '{store.sid}' does not support '{content}' content")
        if content != "vztmpl":
            raise ApiError(501, f"upload of '{content}' is not implemented by the stand-in")
        if not re.fullmatch(r"[^/]+\.tar(\.(gz|xz|zst|bz2))?", filename):
            raise param_exc({"filename": "wrong file extension"})
        dest = store.template_dir / filename
        algo, want = p.get("checksum-algorithm"), p.get("checksum")

        async def body(task: Task) -> None:
            import hashlib
            import shutil
            try:
                if algo:
                    h = hashlib.new(str(algo))
                    with open(tmp_path, "rb") as f:
                        while chunk := f.read(1 << 20):
                            h.update(chunk)
                    got = h.hexdigest()
                    if got != str(want).lower():
                        raise TaskFailed(f"checksum mismatch: got '{got}' != expect '{want}'")
                    task.log.append(f"calculated checksum: {got}")
                task.log.append(f"target file: {dest}")
                shutil.move(str(tmp_path), dest)
            finally:
                tmp_path.unlink(missing_ok=True)
        return self.node.tasks.start("imgcopy", "", c.authid, body).upid

    async def h_GET_nodes_node_network(self, p: dict[str, Any], c: Caller, m: Method) -> Any:
        items = self.node.network()
        typ = p.get("type")
        if typ and typ not in ("bridge", "any_bridge", "include_sdn", "any_local_bridge"):
            return []
        return items

    async def h_GET_nodes_node_network_iface(self, p: dict[str, Any], c: Caller, m: Method
                                             ) -> Any:
        for item in self.node.network():
            if item["iface"] == p["iface"]:
                return item
        raise die(f"interface '{p['iface']}' does not exist")  # PVE/API2/Network.pm


def _handler_name(method: str, spath: str) -> str:
    return method + re.sub(r"[{}]", "", spath).replace("/", "_").replace("-", "_")

