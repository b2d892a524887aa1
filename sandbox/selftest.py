#!/usr/bin/python3
"""Self-tests of the wxpay sandbox.

    /usr/bin/python3 sandbox/selftest.py [-v]

Starts its own sandbox with sandbox/ctl in a temporary directory (or in
$SANDBOX_SELFTEST_DIR, which is kept, to exercise a reused directory), talks to it
with a client written here from protocol.md (python3-cryptography, http.client, ssl),
checks answer signatures also with the openssl command line, and stops the sandbox.
The last line printed is `sandbox: N passed, N failed`.
"""

import base64
import datetime
import http.client
import http.server
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = os.path.dirname(os.path.abspath(__file__))
CTL = os.path.join(HERE, "ctl")
SCHEME = "WECHATPAY2-SHA256-RSA2048"
ALNUM = string.ascii_letters + string.digits
CONFIG_KEYS = {"pid", "base_url", "control_url", "ca_file", "mchid", "sp_mchid", "sub_mchid",
               "serial_no", "private_key", "private_key_pkcs1", "merchant_cert",
               "platform_cert", "platform_serial", "public_key", "public_key_id",
               "apiv3_key", "dir", "client_config", "client_config_institutional"}
STATS = {"requests", "connections", "handshakes", "downloads", "revokes", "queries", "refunds",
         "rejected", "ratelimited", "notifications", "notification_attempts",
         "notification_acks", "notification_failures"}
CLIENT_OPTIONS = {"mchid", "sp_mchid", "sub_mchid", "serial_no", "private_key", "platform_certs",
                  "apiv3_key", "base_url", "ca_file"}


def load_factor():
    """How much slower than an idle machine wall-clock limits may be right now: the load
    average per core (at least 1).  Other suites share these two cores."""
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def ctl(*args):
    return subprocess.run([CTL, *args], capture_output=True, text=True, timeout=30)


def start_sandbox(directory, *extra):
    t0 = time.monotonic()
    proc = ctl("start", directory, *extra)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"ctl start failed: {proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout), elapsed, proc.stderr


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    @property
    def code(self):
        return self.json().get("code")


class Client:
    """An independent v3 client: signs requests, verifies answers (protocol.md 2-4)."""

    def __init__(self, cfg):
        self.cfg = cfg
        with open(cfg["private_key"], "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), None)
        url = urllib.parse.urlsplit(cfg["base_url"])
        self.host, self.port = url.hostname, url.port
        self.ctx = ssl.create_default_context(cafile=cfg["ca_file"])
        self.keys = {}
        with open(cfg["platform_cert"], "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.keys[format(cert.serial_number, "X")] = cert.public_key()
        with open(cfg["public_key"], "rb") as f:
            self.keys[cfg["public_key_id"]] = serialization.load_pem_public_key(f.read())

    # -- control endpoint -------------------------------------------------------
    def control(self, method, path, obj=None, raw=None):
        url = urllib.parse.urlsplit(self.cfg["control_url"])
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
        body = raw if raw is not None else (json.dumps(obj).encode() if obj is not None else None)
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, json.loads(data)

    def ok(self, method, path, obj=None):
        status, data = self.control(method, path, obj)
        assert status == 200, (method, path, status, data)
        return data

    def stats(self):
        return self.ok("GET", "/stats")

    def order(self, no):
        return self.ok("GET", "/orders/" + urllib.parse.quote(no, safe=""))

    # -- API ------------------------------------------------------------------------
    def connect(self):
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=20)

    def authorization(self, method, target, body, *, mchid=None, ts=None, nonce=None,
                      serial=None, key=None):
        ts = str(int(time.time()) if ts is None else ts)
        nonce = nonce or "".join(secrets.choice(ALNUM) for _ in range(32))
        message = f"{method}\n{target}\n{ts}\n{nonce}\n".encode() + body + b"\n"
        sig = (key or self.key).sign(message, padding.PKCS1v15(), hashes.SHA256())
        return (f'{SCHEME} mchid="{mchid or self.cfg["mchid"]}",nonce_str="{nonce}",'
                f'signature="{base64.b64encode(sig).decode()}",timestamp="{ts}",'
                f'serial_no="{serial or self.cfg["serial_no"]}"'), message

    def headers(self, method, target, body, omit=(), extra=None, **sign):
        h = {"User-Agent": "wxpay-selftest/1.0", "Accept": "application/json"}
        if method != "GET":
            h["Content-Type"] = "application/json"
        h["Authorization"], _ = self.authorization(method, target, body, **sign)
        h.update(extra or {})
        for name in omit:
            h.pop(name, None)
        return h

    def call(self, method, target, body=None, *, conn=None, omit=(), extra=None, **sign):
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        body = body or b""
        h = self.headers(method, target, body, omit, extra, **sign)
        own = conn is None
        conn = conn or self.connect()
        try:
            conn.request(method, target, body=body if method != "GET" else None, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            if own:
                conn.close()

    def revoke(self, no=None, txid=None, body=None, **kw):
        target = ("/v3/global/micropay/transactions/id/" + txid if txid is not None else
                  "/v3/global/micropay/transactions/out-trade-no/" +
                  urllib.parse.quote(no, safe="") + "/reverse")
        if txid is not None:
            target += "/reverse"
        return self.call("POST", target, body if body is not None else {"mchid": self.cfg["mchid"]}, **kw)

    def query(self, no, **kw):
        q = kw.pop("q", None) or {"mchid": self.cfg["mchid"]}
        return self.call("GET", "/v3/global/transactions/out-trade-no/" +
                         urllib.parse.quote(no, safe="") + "?" + urllib.parse.urlencode(q), **kw)

    def raw(self, method, target, body=b"", timeout=5):
        """Send one request on a fresh TLS connection and read until the server closes."""
        h = self.headers(method, target, body)
        h["Host"] = f"{self.host}:{self.port}"
        h["Content-Length"] = str(len(body))
        req = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        tls = self.ctx.wrap_socket(sock, server_hostname=self.host)
        tls.sendall(req.encode() + b"\r\n" + body)
        data, closed = b"", False
        try:
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except (ssl.SSLEOFError, ConnectionResetError):
            closed = True
        except socket.timeout:
            pass
        tls.close()
        return data, closed

    # -- answer verification -----------------------------------------------------------
    def check(self, answer, refresh=True):
        """True if the answer's Wechatpay-* signature verifies (protocol.md 3)."""
        h = answer.headers
        needed = ("wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature",
                  "wechatpay-serial")
        if not all(n in h for n in needed):
            return False
        try:
            sig = base64.b64decode(h["wechatpay-signature"], validate=True)
        except ValueError:
            return False
        if abs(int(h["wechatpay-timestamp"]) - time.time()) > 300:
            return False
        key = self.keys.get(h["wechatpay-serial"])
        if key is None and refresh:
            self.download()
            key = self.keys.get(h["wechatpay-serial"])
        if key is None:
            return False
        message = f"{h['wechatpay-timestamp']}\n{h['wechatpay-nonce']}\n".encode() + answer.body + b"\n"
        try:
            key.verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
            return True
        except InvalidSignature:
            return False

    def download(self, apiv3_key=None):
        """GET /v3/global/certificates, decrypt, learn the keys; returns [(entry, cert)]."""
        answer = self.call("GET", "/v3/global/certificates")
        assert answer.status == 200, answer.body
        key = (apiv3_key or self.cfg["apiv3_key"]).encode()
        out = []
        for entry in answer.json()["data"]:
            enc = entry["encrypt_certificate"]
            pem = AESGCM(key).decrypt(enc["nonce"].encode(), base64.b64decode(enc["ciphertext"]),
                                      enc["associated_data"].encode())
            cert = x509.load_pem_x509_certificate(pem)
            out.append((entry, cert))
            self.keys[entry["serial_no"]] = cert.public_key()
        assert self.check(answer, refresh=False), "the download must verify with its own set"
        return out


def openssl_verify(pubkey_pem_path, answer, tmp):
    """Verify the answer's signature with `openssl dgst`; returns (ok, output)."""
    h = answer.headers
    msg = os.path.join(tmp, "msg")
    sig = os.path.join(tmp, "sig.bin")
    with open(msg, "wb") as f:
        f.write(f"{h['wechatpay-timestamp']}\n{h['wechatpay-nonce']}\n".encode() + answer.body + b"\n")
    with open(sig, "wb") as f:
        f.write(base64.b64decode(h["wechatpay-signature"]))
    p = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pubkey_pem_path,
                        "-signature", sig, msg], capture_output=True, text=True)
    return p.returncode == 0 and "Verified OK" in p.stdout, p.stdout + p.stderr


class Receiver:
    """A merchant's notification handler on 127.0.0.1 (http, or https with tls=context).

    Records every POST as (path, headers with lower-case names, body, time) and answers
    the statuses in `statuses` in turn, then `default`; waits `delay` s before answering."""

    def __init__(self, statuses=(), default=204, tls=None, delay=0.0, host="127.0.0.1"):
        self.got, self.statuses, self.default, self.delay = [], list(statuses), default, delay
        self.cond = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.cond:
                    outer.got.append((self.path, {k.lower(): v for k, v in self.headers.items()},
                                      body, time.time()))
                    status = outer.statuses.pop(0) if outer.statuses else outer.default
                    outer.cond.notify_all()
                if outer.delay:
                    time.sleep(outer.delay)
                answer = b"" if status == 204 else b"ok"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass                      # the sandbox gave up waiting (timeout test)

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://{host}:{port}/wx/notify"

    def wait(self, n, timeout=5.0):
        with self.cond:
            self.cond.wait_for(lambda: len(self.got) >= n, timeout)
            return list(self.got)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class SandboxTest(unittest.TestCase):
    """Everything against one running sandbox; each test starts from POST /reset."""

    @classmethod
    def setUpClass(cls):
        cls.dir = os.environ.get("SANDBOX_SELFTEST_DIR") or tempfile.mkdtemp(prefix="wxsandbox-")
        cls.fresh = not os.path.isdir(os.path.join(cls.dir, "creds"))
        cls.cfg, cls.start_time, cls.start_err = start_sandbox(cls.dir)
        cls.c = Client(cls.cfg)
        cls.tmp = tempfile.mkdtemp(prefix="wxsandbox-test-")

    @classmethod
    def tearDownClass(cls):
        ctl("stop", cls.dir)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.c.ok("POST", "/reset")
        self.c.ok("POST", "/signing", {"mode": "certificate"})

    def new_order(self, no=None, **kw):
        return self.c.ok("POST", "/orders", {"out_trade_no": no or "T" + secrets.token_hex(6), **kw})

    def assert_error(self, answer, status, code, signed=True):
        self.assertEqual(answer.status, status, answer.body)
        self.assertEqual(answer.code, code, answer.body)
        self.assertIn("request-id", answer.headers)
        self.assertIn("application/json", answer.headers.get("content-type", ""))
        self.assertTrue(answer.json()["message"])
        self.assertTrue(answer.json().get("detail"), "every failure names what failed")
        if signed:
            self.assertTrue(self.c.check(answer), "error answers are signed")
        return answer.json()

    # -- startup and configuration ----------------------------------------------------
    def test_startup_time(self):
        limit = 5.0 if self.fresh else 2.0        # a fresh dir also generates five RSA keys
        limit *= load_factor()
        self.assertLess(self.start_time, limit)

    def test_sandbox_json(self):
        cfg = self.cfg
        self.assertEqual(set(cfg), CONFIG_KEYS)
        with open(os.path.join(self.dir, "sandbox.json")) as f:
            self.assertEqual(json.load(f), cfg)
        self.assertEqual(cfg["dir"], os.path.realpath(self.dir))
        self.assertTrue(cfg["base_url"].startswith("https://localhost:"))
        self.assertTrue(cfg["control_url"].startswith("http://127.0.0.1:"))
        self.assertEqual((cfg["mchid"], cfg["sp_mchid"], cfg["sub_mchid"]),
                         ("1900000109", "1900000100", "1900000101"))
        for name in ("serial_no", "platform_serial"):
            self.assertRegex(cfg[name], r"^[0-9A-F]{40}$")
        self.assertRegex(cfg["public_key_id"], r"^PUB_KEY_ID_[0-9]{28}$")
        self.assertRegex(cfg["apiv3_key"], r"^[0-9A-Za-z]{32}$")
        for name in ("ca_file", "private_key", "private_key_pkcs1", "merchant_cert",
                     "platform_cert", "public_key"):
            self.assertTrue(os.path.isabs(cfg[name]) and os.path.isfile(cfg[name]), name)
        read = lambda name: open(cfg[name], "rb").read()
        self.assertIn(b"-----BEGIN PRIVATE KEY-----", read("private_key"))
        self.assertIn(b"-----BEGIN RSA PRIVATE KEY-----", read("private_key_pkcs1"))
        self.assertIn(b"-----BEGIN PUBLIC KEY-----", read("public_key"))
        k8 = serialization.load_pem_private_key(read("private_key"), None)
        k1 = serialization.load_pem_private_key(read("private_key_pkcs1"), None)
        self.assertEqual(k8.private_numbers(), k1.private_numbers())
        self.assertEqual(k8.key_size, 2048)
        mcert = x509.load_pem_x509_certificate(read("merchant_cert"))
        self.assertEqual(format(mcert.serial_number, "X"), cfg["serial_no"])
        self.assertEqual(mcert.public_key().public_numbers(), k8.public_key().public_numbers())
        pcert = x509.load_pem_x509_certificate(read("platform_cert"))
        self.assertEqual(format(pcert.serial_number, "X"), cfg["platform_serial"])
        days = (pcert.not_valid_after - pcert.not_valid_before).days
        self.assertGreaterEqual(days, 5 * 365)
        creds = os.path.dirname(cfg["private_key"])
        for name in os.listdir(creds):
            if "key" in name and name != "pub_key.pem" and name != "pub_key_id.txt":
                mode = os.stat(os.path.join(creds, name)).st_mode & 0o777
                self.assertEqual(mode, 0o600, name)
        self.assertEqual(self.c.ok("GET", "/config"), cfg)

    def test_client_json(self):
        cfg = self.cfg
        want = {"client.json": {"mchid": cfg["mchid"]},
                "client-institutional.json": {"sp_mchid": cfg["sp_mchid"],
                                              "sub_mchid": cfg["sub_mchid"]}}
        for name, ids in want.items():
            path = os.path.join(cfg["dir"], name)
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600, name)   # holds the APIv3 key
            with open(path) as f:
                got = json.load(f)
            self.assertLessEqual(set(got), CLIENT_OPTIONS, name)
            self.assertEqual(got, dict(ids, serial_no=cfg["serial_no"],
                                       private_key=cfg["private_key"],
                                       platform_certs=[cfg["platform_cert"]],
                                       apiv3_key=cfg["apiv3_key"], base_url=cfg["base_url"],
                                       ca_file=cfg["ca_file"]), name)
            for p in [got["private_key"], got["ca_file"], *got["platform_certs"]]:
                self.assertTrue(os.path.isabs(p) and os.path.isfile(p), p)
            self.assertEqual(len(got["apiv3_key"].encode()), 32)
        self.assertEqual(cfg["client_config"], os.path.join(cfg["dir"], "client.json"))
        self.assertEqual(cfg["client_config_institutional"],
                         os.path.join(cfg["dir"], "client-institutional.json"))
        self.assertIn(cfg["client_config"], self.start_err)        # ctl start names it
        # a client built from client.json alone works against this sandbox
        with open(cfg["client_config"]) as f:
            opts = json.load(f)
        c = Client(dict(cfg, ca_file=opts["ca_file"], base_url=opts["base_url"],
                        private_key=opts["private_key"], platform_cert=opts["platform_certs"][0]))
        no = self.new_order()["out_trade_no"]
        a = c.query(no, q={"mchid": opts["mchid"]}, mchid=opts["mchid"], serial=opts["serial_no"])
        self.assertEqual(a.status, 200, a.body)
        self.assertTrue(c.check(a, refresh=False))

    def test_tls_certificate(self):
        for host in ("localhost", "127.0.0.1"):       # SAN has DNS:localhost and IP:127.0.0.1
            sock = socket.create_connection(("127.0.0.1", self.c.port), timeout=5)
            with self.c.ctx.wrap_socket(sock, server_hostname=host) as tls:
                self.assertTrue(tls.getpeercert())
        sock = socket.create_connection(("127.0.0.1", self.c.port), timeout=5)
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.c.ctx.wrap_socket(sock, server_hostname="example.com")
        sock.close()

    # -- revoke ---------------------------------------------------------------------------
    def test_revoke_success(self):
        order = self.new_order(trade_state="SUCCESS")
        a = self.c.revoke(order["out_trade_no"])
        self.assertEqual(a.status, 204)
        self.assertEqual(a.body, b"")
        self.assertIn(a.headers.get("content-length", "0"), ("0",))
        self.assertTrue(a.headers.get("request-id"))
        self.assertEqual(a.headers["wechatpay-serial"], self.cfg["platform_serial"])
        self.assertEqual(a.headers["wechatpay-signature-type"], SCHEME)
        self.assertTrue(self.c.check(a))
        got = self.c.order(order["out_trade_no"])
        self.assertEqual((got["trade_state"], got["refunds"], got["revokes"]), ("REVOKED", 1, 1))
        a = self.c.revoke(order["out_trade_no"])          # again: 204, no second refund
        self.assertEqual(a.status, 204)
        got = self.c.order(order["out_trade_no"])
        self.assertEqual((got["trade_state"], got["refunds"], got["revokes"]), ("REVOKED", 1, 2))
        self.assertEqual(self.c.stats()["refunds"], 1)

    def test_revoke_unpaid_closes(self):
        for state in ("NOTPAY", "USERPAYING", "PAYERROR", "CLOSED"):
            order = self.new_order(trade_state=state)
            a = self.c.revoke(txid=order["transaction_id"])
            self.assertEqual(a.status, 204, (state, a.body))
            got = self.c.order(order["out_trade_no"])
            self.assertEqual((got["trade_state"], got["refunds"]), ("CLOSED", 0), state)
        self.assertEqual(self.c.stats()["refunds"], 0)

    def test_revoke_institutional(self):
        sub = "1900000555"
        order = self.new_order(sp_mchid=self.cfg["sp_mchid"], sub_mchid=sub)
        self.assertEqual(len(order["transaction_id"]), 28)
        body = {"sp_mchid": self.cfg["sp_mchid"], "sub_mchid": "1900000101"}
        a = self.c.revoke(order["out_trade_no"], body=body, mchid=self.cfg["sp_mchid"])
        self.assert_error(a, 404, "ORDER_NOT_EXIST")          # another sub-merchant's scope
        a = self.c.revoke(order["out_trade_no"], mchid=self.cfg["sp_mchid"], body=None)
        self.assert_error(a, 400, "INVALID_REQUEST")          # body mchid != header sp_mchid
        a = self.c.revoke(order["out_trade_no"], body=dict(body, sub_mchid=sub),
                          mchid=self.cfg["sp_mchid"])
        self.assertEqual(a.status, 204, a.body)
        self.assertTrue(self.c.check(a))
        self.assertEqual(self.c.order(order["out_trade_no"])["trade_state"], "REVOKED")

    def test_path_percent_decoding(self):
        no = "A|B*C@D-E_F"
        self.new_order(no, trade_state="NOTPAY")
        a = self.c.revoke(no)                 # quote() sends A%7CB%2AC%40D-E_F
        self.assertEqual(a.status, 204, a.body)
        self.assertIn("%7C", self.c.ok("GET", "/requests")[-1]["target"])
        self.assertEqual(self.c.order(no)["trade_state"], "CLOSED")

    def test_error_codes_reachable(self):
        mch = {"mchid": self.cfg["mchid"]}
        # INVALID_TRANSACTIONID
        e = self.assert_error(self.c.revoke(txid="12ab"), 400, "INVALID_TRANSACTIONID")
        self.assertEqual(e["detail"]["field"], "transaction_id")
        self.assert_error(self.c.revoke(txid="1" * 33), 400, "INVALID_TRANSACTIONID")
        # PARAM_ERROR: not JSON, extra field, missing field, wrong type, mixed modes
        order = self.new_order()
        no = order["out_trade_no"]
        for body, field in ((b"{not json", "#"), ({"mchid": self.cfg["mchid"], "x": 1}, "x"),
                            ({}, "mchid"), ({"mchid": 1900000109}, "mchid"), (b"[]", "#"),
                            ({"sp_mchid": self.cfg["sp_mchid"]}, "sub_mchid"),
                            ({"mchid": self.cfg["mchid"], "sub_mchid": "1"}, "mchid")):
            e = self.assert_error(self.c.revoke(no, body=body), 400, "PARAM_ERROR")
            self.assertEqual(e["detail"]["field"], field, body)
            self.assertEqual(e["detail"]["location"], "body")
            self.assertIn("issue", e["detail"])
            self.assertIn("value", e["detail"])
        # REVERSE_EXPIRE
        old = self.new_order(created_at=int(time.time()) - 8 * 86400)
        self.assert_error(self.c.revoke(old["out_trade_no"]), 400, "REVERSE_EXPIRE")
        recent = self.new_order(created_at=int(time.time()) - 6 * 86400)
        self.assertEqual(self.c.revoke(recent["out_trade_no"]).status, 204)
        # TRADE_ERROR
        refunded = self.new_order(trade_state="REFUND")
        self.assert_error(self.c.revoke(refunded["out_trade_no"]), 403, "TRADE_ERROR")
        self.assertEqual(self.c.order(refunded["out_trade_no"])["trade_state"], "REFUND")
        # INVALID_REQUEST (header check)
        self.assert_error(self.c.revoke(no, extra={"Accept": "text/html"}), 400, "INVALID_REQUEST")
        # SYSTEM_ERROR (fault)
        self.c.ok("POST", "/faults", {"fault": "status", "status": 500, "code": "SYSTEM_ERROR"})
        self.assert_error(self.c.revoke(no), 500, "SYSTEM_ERROR")
        self.assertEqual(self.c.order(no)["trade_state"], "SUCCESS")
        # ORDER_NOT_EXIST, RESOURCE_NOT_EXISTS
        self.assert_error(self.c.revoke("NOPE123"), 404, "ORDER_NOT_EXIST")
        self.assert_error(self.c.revoke(txid="4200000000000000000000000000"), 404, "ORDER_NOT_EXIST")
        self.assert_error(self.c.call("GET", "/v3/global/nothing"), 404, "RESOURCE_NOT_EXISTS")
        self.assert_error(self.c.call("POST", "/v3/global/transactions/id/1", mch), 404,
                          "RESOURCE_NOT_EXISTS")
        self.assertEqual(self.c.order(no)["refunds"], 0)

    # -- request verification ----------------------------------------------------------------
    def test_wrong_signature(self):
        order = self.new_order()
        no = order["out_trade_no"]
        target = "/v3/global/micropay/transactions/out-trade-no/" + no + "/reverse"
        body = json.dumps({"mchid": self.cfg["mchid"]}).encode()
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ts, nonce = int(time.time()), "N" * 32
        a = self.c.call("POST", target, body, key=other, ts=ts, nonce=nonce)
        e = self.assert_error(a, 401, "SIGN_ERROR")
        expected = f"POST\n{target}\n{ts}\n{nonce}\n{body.decode()}\n"
        self.assertEqual(e["detail"]["string_to_sign"], expected)
        # signed over another target (the query string is part of what is signed)
        a = self.c.call("POST", target + "?x=1", body, ts=ts, nonce=nonce, extra={
            "Authorization": self.c.authorization("POST", target, body, ts=ts, nonce=nonce)[0]})
        e = self.assert_error(a, 401, "SIGN_ERROR")
        self.assertEqual(e["detail"]["string_to_sign"], f"POST\n{target}?x=1\n{ts}\n{nonce}\n{body.decode()}\n")
        self.assertEqual(self.c.order(no)["trade_state"], "SUCCESS")
        self.assertEqual(self.c.stats()["rejected"], 2)

    def test_malformed_authorization(self):
        no = self.new_order()["out_trade_no"]
        target = "/v3/global/micropay/transactions/out-trade-no/" + no + "/reverse"
        body = json.dumps({"mchid": self.cfg["mchid"]}).encode()
        good, _ = self.c.authorization("POST", target, body)
        params = good.split(" ", 1)[1]
        shuffled = ",".join(reversed(params.split(",")))     # any order is fine
        self.assertEqual(self.c.call("POST", target, body,
                                     extra={"Authorization": f"{SCHEME} {shuffled}"}).status, 204)
        no = self.new_order()["out_trade_no"]
        target = "/v3/global/micropay/transactions/out-trade-no/" + no + "/reverse"
        good, _ = self.c.authorization("POST", target, body)
        params = good.split(" ", 1)[1]
        no_nonce = re.sub(r',?nonce_str="[^"]*"', "", params)
        unquoted = params.replace('timestamp="', "timestamp=")
        not_base64 = re.sub(r'signature="[^"]*"', 'signature="!!!"', params)
        twice = params + ',mchid="%s"' % self.cfg["mchid"]
        bad = ["", "Bearer xyz", SCHEME, "WECHATPAY2-SHA256-RSA4096 " + params,
               SCHEME + " " + no_nonce, SCHEME + " " + twice, SCHEME + " " + unquoted,
               SCHEME + " " + not_base64, SCHEME + " " + params + ',extra="1"']
        for value in bad:
            a = self.c.call("POST", target, body, extra={"Authorization": value})
            self.assert_error(a, 401, "SIGN_ERROR")
        a = self.c.call("POST", target, body, omit=("Authorization",))
        self.assertIn("Authorization", self.assert_error(a, 401, "SIGN_ERROR")["detail"]["issue"])
        e = self.assert_error(self.c.revoke(no, serial="ABCDEF"), 401, "SIGN_ERROR")
        self.assertIn("serial_no", e["detail"]["issue"])
        e = self.assert_error(self.c.revoke(no, mchid="1234"), 401, "SIGN_ERROR")
        self.assertIn("mchid", e["detail"]["issue"])
        self.assertEqual(self.c.order(no)["trade_state"], "SUCCESS")

    def test_stale_timestamp(self):
        no = self.new_order()["out_trade_no"]
        for ts in (int(time.time()) - 600, int(time.time()) + 400):
            e = self.assert_error(self.c.revoke(no, ts=ts), 401, "SIGN_ERROR")
            self.assertIn("timestamp", e["detail"]["issue"])
        self.assertEqual(self.c.revoke(no, ts=int(time.time()) - 200).status, 204)

    def test_header_checks(self):
        no = self.new_order()["out_trade_no"]
        for kw, field in ((dict(omit=("User-Agent",)), "User-Agent"),
                          (dict(omit=("Accept",)), "Accept"),
                          (dict(extra={"Accept": "*/*"}), "Accept"),
                          (dict(omit=("Content-Type",)), "Content-Type"),
                          (dict(extra={"Content-Type": "text/plain"}), "Content-Type")):
            e = self.assert_error(self.c.revoke(no, **kw), 400, "INVALID_REQUEST")
            self.assertEqual(e["detail"]["field"], field)
            self.assertIn(field, e["detail"]["issue"])
        a = self.c.revoke(no, extra={"Accept": "application/json, text/plain",
                                     "Content-Type": "application/json; charset=utf-8"})
        self.assertEqual(a.status, 204, a.body)
        self.assertEqual(self.c.stats()["rejected"], 5)

    def test_header_mchid_differs_from_body(self):
        no = self.new_order()["out_trade_no"]
        a = self.c.revoke(no, mchid=self.cfg["sp_mchid"])      # body mchid 1900000109
        e = self.assert_error(a, 400, "INVALID_REQUEST")
        self.assertEqual(e["detail"]["field"], "mchid")
        a = self.c.query(no, mchid=self.cfg["sp_mchid"])
        self.assert_error(a, 400, "INVALID_REQUEST")
        self.assertEqual(self.c.order(no)["trade_state"], "SUCCESS")
        self.assertEqual(self.c.stats()["rejected"], 2)

    # -- query --------------------------------------------------------------------------------
    def test_query_common(self):
        order = self.new_order(trade_state="USERPAYING", total=250)
        a = self.c.query(order["out_trade_no"])
        self.assertEqual(a.status, 200, a.body)
        self.assertTrue(self.c.check(a))
        q = a.json()
        self.assertEqual((q["id"], q["out_trade_no"], q["mchid"], q["trade_type"], q["trade_state"]),
                         (order["transaction_id"], order["out_trade_no"], self.cfg["mchid"],
                          "MICROPAY", "USERPAYING"))
        self.assertTrue(q["trade_state_desc"])
        self.assertEqual(q["amount"]["total"], 250)
        self.assertEqual(q["amount"]["currency"], "HKD")
        self.assertEqual(q["amount"]["payer_currency"], "CNY")
        self.assertIn("payer_total", q["amount"])
        self.assertRegex(q["create_time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$")
        a = self.c.call("GET", "/v3/global/transactions/id/" + order["transaction_id"] +
                        "?mchid=" + self.cfg["mchid"])
        self.assertEqual(a.json()["out_trade_no"], order["out_trade_no"])
        e = self.assert_error(self.c.call("GET", "/v3/global/transactions/out-trade-no/" +
                                          order["out_trade_no"]), 400, "PARAM_ERROR")
        self.assertEqual(e["detail"]["location"], "query")
        self.assert_error(self.c.query("UNKNOWN1"), 404, "ORDER_NOT_EXIST")

    def test_query_institutional(self):
        order = self.new_order(sp_mchid=self.cfg["sp_mchid"], sub_mchid=self.cfg["sub_mchid"],
                               trade_state="SUCCESS")
        q = {"sp_mchid": self.cfg["sp_mchid"], "sub_mchid": self.cfg["sub_mchid"]}
        a = self.c.query(order["out_trade_no"], q=q, mchid=self.cfg["sp_mchid"])
        self.assertEqual(a.status, 200, a.body)
        self.assertTrue(self.c.check(a))
        j = a.json()
        self.assertEqual((j["sp_mchid"], j["sub_mchid"], j["trade_state"]),
                         (self.cfg["sp_mchid"], self.cfg["sub_mchid"], "SUCCESS"))
        self.assertNotIn("mchid", j)
        e = self.assert_error(self.c.query(order["out_trade_no"], q={"sp_mchid": self.cfg["sp_mchid"]},
                                           mchid=self.cfg["sp_mchid"]), 400, "PARAM_ERROR")
        self.assertEqual(e["detail"]["field"], "sub_mchid")
        self.assert_error(self.c.query(order["out_trade_no"]), 404, "ORDER_NOT_EXIST")

    # -- answer signatures ------------------------------------------------------------------------
    def test_signature_verifies_with_openssl(self):
        order = self.new_order()
        answers = [self.c.revoke(order["out_trade_no"]), self.c.query(order["out_trade_no"]),
                   self.c.query("NOSUCHORDER")]
        self.assertEqual([a.status for a in answers], [204, 200, 404])
        # the certificate named by Wechatpay-Serial (platform_cert.pem unless rotated)
        serial = answers[0].headers["wechatpay-serial"]
        pem = os.path.join(self.tmp, "signer.pem")
        with open(pem, "wb") as f:
            f.write([c for e, c in self.c.download() if e["serial_no"] == serial][0]
                    .public_bytes(serialization.Encoding.PEM))
        pub = os.path.join(self.tmp, "platform_pub.pem")
        subprocess.run(["openssl", "x509", "-in", pem, "-pubkey", "-noout", "-out", pub],
                       check=True)
        for a in answers:
            ok, out = openssl_verify(pub, a, self.tmp)
            self.assertTrue(ok, out)
        forged = Answer(200, answers[1].headers, answers[1].body + b" ")
        ok, out = openssl_verify(pub, forged, self.tmp)
        self.assertFalse(ok, out)

    def test_certificate_download(self):
        before = self.c.stats()["downloads"]
        got = self.c.download()
        self.assertEqual(self.c.stats()["downloads"], before + 1)
        serials = [e["serial_no"] for e, _ in got]
        self.assertIn(self.cfg["platform_serial"], serials)
        for entry, cert in got:
            self.assertEqual(format(cert.serial_number, "X"), entry["serial_no"])
            enc = entry["encrypt_certificate"]
            self.assertEqual(enc["algorithm"], "AEAD_AES_256_GCM")
            self.assertEqual(enc["associated_data"], "certificate")
            self.assertRegex(enc["nonce"], r"^[0-9A-Za-z]{12}$")
            for k in ("effective_time", "expire_time"):
                self.assertRegex(entry[k], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$")
        with open(self.cfg["platform_cert"], "rb") as f:
            mine = x509.load_pem_x509_certificate(f.read())
        self.assertIn(mine, [c for _, c in got])

    def test_wrong_apiv3_key(self):
        self.c.ok("POST", "/apiv3_key", {"key": "X" * 32})
        with self.assertRaises(InvalidTag):
            self.c.download()
        self.c.ok("POST", "/apiv3_key", {"key": None})
        self.assertTrue(self.c.download())

    def test_expired_extra_certificate(self):
        serial = self.c.ok("POST", "/certificates/extra", {"kind": "expired"})["serial"]
        got = {e["serial_no"]: (e, c) for e, c in self.c.download()}
        self.assertIn(serial, got)
        self.assertLess(got[serial][1].not_valid_after.timestamp(), time.time() - 86400)
        self.assertIn(self.cfg["platform_serial"], got)

    def test_rotation_and_public_key_mode(self):
        # one test: rotation changes the signer for good, so check both modes around it
        old = self.cfg["platform_serial"]
        self.c.ok("POST", "/signing", {"mode": "public_key"})
        a = self.c.query("NOSUCHORDER")
        self.assertEqual(a.headers["wechatpay-serial"], self.cfg["public_key_id"])
        self.assertTrue(self.c.check(a, refresh=False))      # verifies with pub_key.pem
        ok, out = openssl_verify(self.cfg["public_key"], a, self.tmp)
        self.assertTrue(ok, out)
        self.c.ok("POST", "/signing", {"mode": "certificate"})
        new = self.c.ok("POST", "/rotate")["serial"]
        self.assertNotEqual(new, old)
        self.assertRegex(new, r"^[0-9A-F]{40}$")
        a = self.c.query("NOSUCHORDER")
        self.assertEqual(a.headers["wechatpay-serial"], new)
        self.assertFalse(self.c.check(a, refresh=False), "unknown before the download")
        serials = [e["serial_no"] for e, _ in self.c.download()]
        self.assertIn(old, serials)
        self.assertIn(new, serials)
        self.assertTrue(self.c.check(a, refresh=False))
        self.c.ok("POST", "/reset")                          # reset keeps the rotation
        self.assertEqual(self.c.query("NOSUCHORDER").headers["wechatpay-serial"], new)
        self.c.ok("POST", "/signing", {"mode": "public_key"})
        self.assertEqual(self.c.query("X1").headers["wechatpay-serial"], self.cfg["public_key_id"])

    # -- connections -------------------------------------------------------------------------------
    def test_keep_alive(self):
        self.c.download()                  # so no verification below needs a new connection
        no = self.new_order()["out_trade_no"]
        before = self.c.stats()
        conn = self.c.connect()
        for _ in range(5):
            a = self.c.query(no, conn=conn)
            self.assertEqual(a.status, 200)
            self.assertTrue(self.c.check(a))
        conn.close()
        after = self.c.stats()
        self.assertEqual(after["handshakes"] - before["handshakes"], 1)
        self.assertEqual(after["connections"] - before["connections"], 1)
        self.assertEqual(after["requests"] - before["requests"], 5)

    # -- faults ------------------------------------------------------------------------------------
    def fault(self, **spec):
        return self.c.ok("POST", "/faults", spec)

    def test_fault_delay(self):
        no = self.new_order()["out_trade_no"]
        self.fault(fault="delay", ms=400)
        t0 = time.monotonic()
        a = self.c.revoke(no)
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        self.assertEqual(a.status, 204)
        self.assertEqual(self.c.order(no)["trade_state"], "REVOKED")

    def test_fault_status(self):
        no = self.new_order()["out_trade_no"]
        for status, code in ((500, "SYSTEM_ERROR"), (429, "RATELIMIT_EXCEEDED"),
                             (503, "SERVICE_UNAVAILABLE"), (202, "USERPAYING")):
            self.fault(fault="status", status=status, code=code, message="m " + code)
        for status, code in ((500, "SYSTEM_ERROR"), (429, "RATELIMIT_EXCEEDED"),
                             (503, "SERVICE_UNAVAILABLE"), (202, "USERPAYING")):
            a = self.c.revoke(no)                             # FIFO
            self.assertEqual((a.status, a.code, a.json()["message"]), (status, code, "m " + code))
            self.assertTrue(self.c.check(a))
        got = self.c.order(no)
        self.assertEqual((got["trade_state"], got["revokes"]), ("SUCCESS", 0))
        self.assertEqual(self.c.revoke(no).status, 204)

    def test_fault_match_method_count(self):
        no = self.new_order()["out_trade_no"]
        self.fault(fault="status", status=500, code="SYSTEM_ERROR", match="/reverse",
                   method="POST", count=2)
        self.assertEqual(self.c.query(no).status, 200)             # GET does not match
        self.assertEqual(len(self.c.ok("GET", "/faults")), 1)
        self.assertEqual(self.c.revoke(no).status, 500)
        self.assertEqual(self.c.revoke(no).status, 500)
        self.assertEqual(self.c.revoke(no).status, 204)            # count used up
        self.assertEqual(self.c.ok("GET", "/faults"), [])
        self.fault(fault="status", status=500, match="certificates")
        self.assertEqual(self.c.revoke(self.new_order()["out_trade_no"]).status, 204)
        self.fault(fault="drop")
        self.c.ok("POST", "/reset")                                # reset clears faults
        self.assertEqual(self.c.ok("GET", "/faults"), [])

    def test_fault_after_verification(self):
        no = self.new_order()["out_trade_no"]
        self.fault(fault="status", status=500)
        self.assert_error(self.c.revoke(no, omit=("User-Agent",)), 400, "INVALID_REQUEST")
        self.assertEqual(len(self.c.ok("GET", "/faults")), 1)     # an invalid request takes none
        self.assertEqual(self.c.revoke(no).status, 500)

    def test_fault_apply_then_status(self):
        no = self.new_order()["out_trade_no"]
        self.fault(fault="apply_then_status", status=500, code="SYSTEM_ERROR")
        self.assert_error(self.c.revoke(no), 500, "SYSTEM_ERROR")
        got = self.c.order(no)
        self.assertEqual((got["trade_state"], got["refunds"]), ("REVOKED", 1))

    def test_fault_drop(self):
        no = self.new_order()["out_trade_no"]
        self.fault(fault="drop")
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.c.revoke(no)
        self.assertEqual(self.c.order(no)["trade_state"], "SUCCESS")
        self.fault(fault="drop")
        target = "/v3/global/micropay/transactions/out-trade-no/" + no + "/reverse"
        data, closed = self.c.raw("POST", target, json.dumps({"mchid": self.cfg["mchid"]}).encode())
        self.assertEqual((data, closed), (b"", True))
        log = self.c.ok("GET", "/requests")
        self.assertEqual((log[-1]["status"], log[-1]["fault"]), (None, "drop"))

    def test_fault_drop_after_apply(self):
        no = self.new_order()["out_trade_no"]
        self.fault(fault="drop_after_apply")
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            self.c.revoke(no)
        got = self.c.order(no)
        self.assertEqual((got["trade_state"], got["refunds"]), ("REVOKED", 1))

    def test_fault_truncate(self):
        no = self.new_order()["out_trade_no"]
        self.fault(fault="truncate")
        target = "/v3/global/micropay/transactions/out-trade-no/" + no + "/reverse"
        data, closed = self.c.raw("POST", target, json.dumps({"mchid": self.cfg["mchid"]}).encode())
        self.assertTrue(closed)
        self.assertTrue(data.startswith(b"HTTP/1.1 204"), data)
        self.assertNotIn(b"\r\n\r\n", data)                      # header section cut short
        self.assertIn(b"Wechatpay-Nonce", data)
        self.assertNotIn(b"Wechatpay-Signature:", data)
        self.assertEqual(self.c.order(no)["trade_state"], "REVOKED")
        self.fault(fault="truncate")                             # an answer with a body
        with self.assertRaises(http.client.IncompleteRead):
            self.c.query(no)
        data, closed = (None, None)
        self.fault(fault="truncate", apply=False)
        no2 = self.new_order()["out_trade_no"]
        target = "/v3/global/micropay/transactions/out-trade-no/" + no2 + "/reverse"
        data, closed = self.c.raw("POST", target, json.dumps({"mchid": self.cfg["mchid"]}).encode())
        self.assertTrue(closed and data.startswith(b"HTTP/1.1 204"))
        self.assertEqual(self.c.order(no2)["trade_state"], "SUCCESS")

    def spoiled(self, name, **params):
        """Queue fault `name` for a revoke; returns the answer (the revoke applies)."""
        no = self.new_order()["out_trade_no"]
        self.fault(fault=name, **params)
        a = self.c.revoke(no)
        self.assertEqual(self.c.order(no)["trade_state"], "REVOKED")
        return a

    def test_fault_flip_signature(self):
        self.c.download()
        a = self.spoiled("flip_signature")
        self.assertEqual(a.status, 204)
        self.assertEqual(a.headers["wechatpay-serial"], self.cfg["platform_serial"])
        base64.b64decode(a.headers["wechatpay-signature"], validate=True)
        self.assertFalse(self.c.check(a))
        no = self.new_order()["out_trade_no"]                    # apply=false: a forged 204
        self.fault(fault="flip_signature", apply=False)
        a = self.c.revoke(no)
        self.assertEqual(a.status, 204)
        self.assertFalse(self.c.check(a))
        self.assertEqual(self.c.order(no)["trade_state"], "SUCCESS")

    def test_fault_unknown_serial(self):
        self.c.download()
        a = self.spoiled("unknown_serial")
        serial = a.headers["wechatpay-serial"]
        self.assertNotIn(serial, (self.cfg["platform_serial"], self.cfg["public_key_id"]))
        self.assertFalse(self.c.check(a))                        # even after a refresh
        # the signature itself is valid: it verifies with the current platform key
        platform = self.c.keys[self.cfg["platform_serial"]]
        self.assertTrue(self.c.check(Answer(a.status, dict(
            a.headers, **{"wechatpay-serial": self.cfg["platform_serial"]}), a.body)))
        self.assertIsNotNone(platform)

    def test_fault_stale_timestamp(self):
        a = self.spoiled("stale_timestamp", seconds=900)
        ts = int(a.headers["wechatpay-timestamp"])
        self.assertAlmostEqual(ts, time.time() - 900, delta=5)
        self.assertFalse(self.c.check(a))
        key = self.c.keys[a.headers["wechatpay-serial"]]
        key.verify(base64.b64decode(a.headers["wechatpay-signature"]),
                   f"{ts}\n{a.headers['wechatpay-nonce']}\n\n".encode(),
                   padding.PKCS1v15(), hashes.SHA256())          # correctly signed over it
        a = self.spoiled("stale_timestamp")
        self.assertAlmostEqual(int(a.headers["wechatpay-timestamp"]), time.time() - 600, delta=5)

    def test_fault_missing_signature(self):
        a = self.spoiled("missing_signature")
        self.assertEqual(a.status, 204)
        self.assertEqual([h for h in a.headers if h.startswith("wechatpay-")], [])
        self.assertIn("request-id", a.headers)
        self.assertFalse(self.c.check(a))

    def test_fault_bad_base64_signature(self):
        a = self.spoiled("bad_base64_signature")
        with self.assertRaises(ValueError):
            base64.b64decode(a.headers["wechatpay-signature"], validate=True)
        self.assertFalse(self.c.check(a))

    def test_fault_connection_close(self):
        no = self.new_order()["out_trade_no"]
        self.fault(fault="connection_close")
        before = self.c.stats()
        conn = self.c.connect()
        conn.request("GET", "/v3/global/transactions/out-trade-no/" + no + "?mchid=" + self.cfg["mchid"],
                     headers=self.c.headers("GET", "/v3/global/transactions/out-trade-no/" + no +
                                            "?mchid=" + self.cfg["mchid"], b""))
        resp = conn.getresponse()
        body = resp.read()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.getheader("Connection"), "close")
        self.assertTrue(self.c.check(Answer(200, {k.lower(): v for k, v in resp.getheaders()}, body)))
        self.assertTrue(resp.will_close)
        conn.close()
        a = self.c.query(no)                      # a later request works on a new connection
        self.assertEqual(a.status, 200)
        self.assertEqual(self.c.stats()["handshakes"] - before["handshakes"], 2)

    def test_fault_oversized(self):
        no = self.new_order()["out_trade_no"]
        self.fault(fault="oversized")
        a = self.c.query(no)
        self.assertEqual((a.status, len(a.body)), (200, 2 * 1024 * 1024))
        self.assertTrue(self.c.check(a))
        self.fault(fault="oversized", bytes=100000)
        self.assertEqual(len(self.c.query(no).body), 100000)

    def test_fault_non_json(self):
        no = self.new_order()["out_trade_no"]
        self.fault(fault="non_json")
        a = self.c.query(no)
        self.assertEqual(a.status, 200)
        self.assertTrue(a.body.startswith(b"<html>"))
        self.assertTrue(self.c.check(a))
        with self.assertRaises(ValueError):
            json.loads(a.body)

    def test_fault_unsigned_error(self):
        no = self.new_order()["out_trade_no"]
        self.fault(fault="unsigned_error", status=503, code="SERVICE_UNAVAILABLE")
        a = self.c.revoke(no)
        self.assertEqual((a.status, a.code), (503, "SERVICE_UNAVAILABLE"))
        self.assertEqual([h for h in a.headers if h.startswith("wechatpay-")], [])
        self.assertIn("request-id", a.headers)
        self.assertEqual(self.c.order(no)["trade_state"], "SUCCESS")

    # -- notifications ---------------------------------------------------------------------------------
    def receiver(self, *args, **kw):
        r = Receiver(*args, **kw)
        self.addCleanup(r.close)
        return r

    def note_verifies(self, headers, body, key=None):
        """True if the notification's Wechatpay-Signature verifies (with `key` if given)."""
        try:
            ts, nonce = headers["wechatpay-timestamp"], headers["wechatpay-nonce"]
            sig = base64.b64decode(headers["wechatpay-signature"], validate=True)
            key = key or self.c.keys[headers["wechatpay-serial"]]
            key.verify(sig, f"{ts}\n{nonce}\n".encode() + body + b"\n",
                       padding.PKCS1v15(), hashes.SHA256())
            return True
        except (KeyError, ValueError, InvalidSignature):
            return False

    def note_plaintext(self, body, key=None):
        r = json.loads(body)["resource"]
        return AESGCM((key or self.cfg["apiv3_key"]).encode()).decrypt(
            r["nonce"].encode(), base64.b64decode(r["ciphertext"]), r["associated_data"].encode())

    def public_pem(self, serial):
        """A PEM public key file for the platform certificate `serial`, for openssl dgst."""
        cert = [c for e, c in self.c.download() if e["serial_no"] == serial][0]
        path = os.path.join(self.tmp, f"pub-{serial}.pem")
        with open(path, "wb") as f:
            f.write(cert.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
        return path

    def check_wire_format(self, headers, body, event_type, original_type, summary):
        """The headers and body of a WeChat Pay v3 notification; returns the body JSON."""
        for name in ("wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature",
                     "wechatpay-serial"):
            self.assertIn(name, headers)
        self.assertEqual(headers["wechatpay-signature-type"], SCHEME)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertAlmostEqual(int(headers["wechatpay-timestamp"]), time.time(), delta=5)
        self.assertRegex(headers["wechatpay-nonce"], r"^[0-9A-Za-z]{32}$")
        obj = json.loads(body)
        self.assertEqual(list(obj), ["id", "create_time", "resource_type", "event_type",
                                     "summary", "resource"])
        self.assertEqual(body, json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())
        self.assertRegex(obj["id"], r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
        self.assertRegex(obj["create_time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$")
        self.assertEqual((obj["resource_type"], obj["event_type"], obj["summary"]),
                         ("encrypt-resource", event_type, summary))
        r = obj["resource"]
        self.assertEqual(list(r), ["original_type", "algorithm", "ciphertext", "associated_data",
                                   "nonce"])
        self.assertEqual((r["original_type"], r["algorithm"], r["associated_data"]),
                         (original_type, "AEAD_AES_256_GCM", original_type))
        self.assertRegex(r["nonce"], r"^[0-9A-Za-z]{12}$")
        return obj

    def test_notify_config(self):
        bad = [{"url": "http://example.com/n"}, {"url": "http://10.0.0.1/n"},
               {"url": "http://[::2]:80/"}, {"url": "ftp://127.0.0.1/"}, {"url": "127.0.0.1:80/x"},
               {"url": "http://user:pw@127.0.0.1/"}, {"url": "http://127.0.0.1:99999/"},
               {"url": "http://localhost.example.com/"}, {"url": 5}, {"url": ""},
               {"url": "http://127.0.0.1/a b"}, {"url": "http://127.0.0.1/\u00e9"},
               {"url": "http://127.0.0.1/", "ca_file": "/nonexistent/ca.pem"},
               {"url": "https://127.0.0.1/", "ca_file": "relative.pem"},
               {"url": "https://127.0.0.1/", "ca_file": __file__},
               {"url": "http://127.0.0.1/", "retries": [0.1, -1]},
               {"url": "http://127.0.0.1/", "retries": "0.1"},
               {"url": "http://127.0.0.1/", "timeout": 0},
               {"url": "http://127.0.0.1/", "on_revoke": "yes"},
               {"url": "http://127.0.0.1/", "colour": 1}]
        for spec in bad:
            status, body = self.c.control("POST", "/notify", spec)
            self.assertEqual(status, 400, (spec, body))
        for url in ("http://127.0.0.1:1/x", "http://127.9.8.7:65535/a?b=c", "http://localhost/",
                    "http://[::1]:8080/n", "https://localhost:8443/n"):
            self.assertEqual(self.c.ok("POST", "/notify", {"url": url})["url"], url)
        got = self.c.ok("POST", "/notify", {"url": "https://127.0.0.1:1/n", "ca_file": self.cfg["ca_file"],
                                            "on_revoke": True, "retries": [0.1], "timeout": 1})
        self.assertEqual(got, {"url": "https://127.0.0.1:1/n", "ca_file": self.cfg["ca_file"],
                               "on_revoke": True, "retries": [0.1], "timeout": 1})
        self.assertEqual(self.c.ok("GET", "/notify"), got)
        self.c.ok("POST", "/reset")                                  # reset forgets the handler
        self.assertEqual(self.c.ok("GET", "/notify"), {"url": None, "ca_file": None, "on_revoke": False,
                                                       "retries": [0.2, 0.5, 1.0, 2.0], "timeout": 2.0})
        for spec in ({"event_type": "X", "resource": {}, "mutate": "explode"},
                     {"event_type": "", "resource": {}}, {"event_type": "X", "resource": []},
                     {"event_type": "X", "resource": {}, "url": "http://192.168.1.1/"},
                     {"event_type": "X", "resource": {}, "signing": "magic"},
                     {"event_type": "X", "resource": {}, "wait": 1}, {"resource": {}}):
            self.assertEqual(self.c.control("POST", "/notify/send", spec)[0], 400, spec)

    def test_notify_pay(self):
        r = self.receiver()
        self.c.ok("POST", "/notify", {"url": r.url})
        order = self.new_order(trade_state="NOTPAY", total=888)
        paid = self.c.ok("POST", "/orders/" + order["out_trade_no"] + "/pay")
        self.assertEqual(paid["order"]["trade_state"], "SUCCESS")
        self.assertAlmostEqual(paid["order"]["paid_at"], time.time(), delta=5)
        nid = paid["notification"]["id"]
        self.assertEqual(paid["notification"]["event_type"], "TRANSACTION.SUCCESS")
        (path, headers, body, _), = r.wait(1)
        self.assertEqual(path, "/wx/notify")
        obj = self.check_wire_format(headers, body, "TRANSACTION.SUCCESS", "transaction", "支付成功")
        self.assertEqual(obj["id"], nid)
        self.assertEqual(headers["wechatpay-serial"], self.cfg["platform_serial"])
        self.assertTrue(self.note_verifies(headers, body))
        ok, out = openssl_verify(self.public_pem(headers["wechatpay-serial"]), Answer(200, headers, body),
                                 self.tmp)
        self.assertTrue(ok, out)
        plain = json.loads(self.note_plaintext(body))
        self.assertEqual((plain["trade_state"], plain["mchid"], plain["out_trade_no"],
                          plain["transaction_id"], plain["id"], plain["amount"]["total"]),
                         ("SUCCESS", self.cfg["mchid"], order["out_trade_no"], order["transaction_id"],
                          order["transaction_id"], 888))
        self.assertRegex(plain["success_time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$")
        q = self.c.query(order["out_trade_no"]).json()            # the query agrees
        self.assertEqual({k: q[k] for k in q}, {k: plain[k] for k in q})
        time.sleep(0.1)
        st = self.c.stats()
        self.assertEqual([st[k] for k in ("notifications", "notification_attempts", "notification_acks",
                                          "notification_failures")], [1, 1, 1, 0])
        log = self.c.ok("GET", "/notify/log")
        self.assertEqual([(e["id"], e["event_type"], e["attempt"], e["status"], e["error"]) for e in log],
                         [(nid, "TRANSACTION.SUCCESS", 1, 204, None)])
        # paying again re-sends; closed orders cannot be paid; unknown ones are 404
        self.assertEqual(self.c.ok("POST", "/orders/" + order["out_trade_no"] + "/pay")["order"]["paid_at"],
                         paid["order"]["paid_at"])
        self.assertEqual(len(r.wait(2)), 2)
        closed = self.new_order(trade_state="CLOSED")["out_trade_no"]
        self.assertEqual(self.c.control("POST", "/orders/" + closed + "/pay")[0], 409)
        self.assertEqual(self.c.control("POST", "/orders/NOPE/pay")[0], 404)
        # institutional: sp_mchid + sub_mchid in the resource, no mchid
        sp, sub = self.cfg["sp_mchid"], "1900000777"
        inst = self.new_order(sp_mchid=sp, sub_mchid=sub, trade_state="USERPAYING")["out_trade_no"]
        self.new_order(inst, trade_state="NOTPAY")                # same number, common mode
        got = self.c.ok("POST", "/orders/" + inst + "/pay", {"sp_mchid": sp, "sub_mchid": sub})
        self.assertEqual(got["order"]["mode"], "institutional")
        plain = json.loads(self.note_plaintext(r.wait(3)[2][2]))
        self.assertEqual((plain["sp_mchid"], plain["sub_mchid"], plain["out_trade_no"]), (sp, sub, inst))
        self.assertNotIn("mchid", plain)
        self.assertEqual(self.c.ok("GET", "/orders/" + inst + "?mchid=" + self.cfg["mchid"])["trade_state"],
                         "NOTPAY")
        self.c.ok("POST", "/notify", {"url": None})                # no handler: paying still works
        other = self.new_order(trade_state="NOTPAY")["out_trade_no"]
        self.assertIsNone(self.c.ok("POST", "/orders/" + other + "/pay")["notification"])
        self.assertEqual(self.c.stats()["notifications"], 3)

    def test_notify_https(self):
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        creds = os.path.dirname(self.cfg["ca_file"])
        tls.load_cert_chain(os.path.join(creds, "server_cert.pem"), os.path.join(creds, "server_key.pem"))
        r = self.receiver(tls=tls, host="127.0.0.1")
        for url, ca in ((r.url, None), (r.url.replace("127.0.0.1", "localhost"), self.cfg["ca_file"])):
            spec = {"event_type": "TRANSACTION.SUCCESS", "resource": {"x": 1}, "url": url}
            if ca:
                spec["ca_file"] = ca
            got = self.c.ok("POST", "/notify/send", spec)           # the sandbox's own CA by default
            self.assertEqual((got["sent"], got["status"], got["error"]), (True, 204, None), got)
        self.assertEqual(len(r.wait(2)), 2)
        # a CA that did not sign the handler's certificate: every try fails, then it gives up
        other_ca = os.path.join(self.tmp, "other-ca.pem")
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "other")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        with open(other_ca, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        self.c.ok("POST", "/notify", {"url": r.url, "ca_file": other_ca, "retries": [0.05]})
        self.c.ok("POST", "/orders/" + self.new_order(trade_state="NOTPAY")["out_trade_no"] + "/pay")
        deadline = time.time() + 5
        while self.c.stats()["notification_failures"] < 1 and time.time() < deadline:
            time.sleep(0.05)
        log = self.c.ok("GET", "/notify/log")[-2:]
        self.assertEqual([(e["attempt"], e["status"]) for e in log], [(1, None), (2, None)])
        self.assertIn("CERTIFICATE_VERIFY_FAILED", log[0]["error"])
        self.assertEqual(len(r.got), 2)                             # nothing reached the handler

    def test_notify_retries(self):
        r = self.receiver(statuses=[500, 503])
        self.c.ok("POST", "/notify", {"url": r.url, "retries": [0.1, 0.2, 0.3, 0.3]})
        t0 = time.time()
        nid = self.c.ok("POST", "/orders/" + self.new_order(trade_state="NOTPAY")["out_trade_no"] +
                        "/pay")["notification"]["id"]
        got = r.wait(3)
        self.assertEqual(len(got), 3)
        times = [g[3] - t0 for g in got]
        self.assertGreaterEqual(times[1] - times[0], 0.09)           # the configured delays
        self.assertGreaterEqual(times[2] - times[1], 0.19)
        bodies = {g[2] for g in got}
        self.assertEqual(len(bodies), 1, "retries resend the same body (same id)")
        self.assertEqual(json.loads(got[0][2])["id"], nid)
        self.assertEqual(len({g[1]["wechatpay-nonce"] for g in got}), 3, "each try is signed anew")
        for _, headers, body, _ in got:
            self.assertTrue(self.note_verifies(headers, body))
        time.sleep(0.5)                                               # acked by the 204: no 4th
        self.assertEqual(len(r.got), 3)
        log = self.c.ok("GET", "/notify/log")
        self.assertEqual([(e["id"], e["attempt"], e["status"]) for e in log],
                         [(nid, 1, 500), (nid, 2, 503), (nid, 3, 204)])
        st = self.c.stats()
        self.assertEqual([st[k] for k in ("notifications", "notification_attempts", "notification_acks",
                                          "notification_failures")], [1, 3, 1, 0])
        # a refused connection: 5 tries in all, then it gives up
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed_port = s.getsockname()[1]
        self.c.ok("POST", "/notify", {"url": f"http://127.0.0.1:{closed_port}/n",
                                      "retries": [0.02, 0.02, 0.02, 0.02]})
        self.c.ok("POST", "/orders/" + self.new_order(trade_state="NOTPAY")["out_trade_no"] + "/pay")
        deadline = time.time() + 5
        while self.c.stats()["notification_failures"] < 1 and time.time() < deadline:
            time.sleep(0.05)
        log = self.c.ok("GET", "/notify/log")[3:]
        self.assertEqual([e["attempt"] for e in log], [1, 2, 3, 4, 5])
        self.assertTrue(all(e["status"] is None and "Connection" in e["error"] for e in log), log)
        st = self.c.stats()
        self.assertEqual([st[k] for k in ("notifications", "notification_attempts", "notification_acks",
                                          "notification_failures")], [2, 8, 1, 1])
        # a handler slower than the timeout counts as a failed try
        slow = self.receiver(delay=0.6)
        self.c.ok("POST", "/notify", {"url": slow.url, "retries": [0.05], "timeout": 0.2})
        self.c.ok("POST", "/orders/" + self.new_order(trade_state="NOTPAY")["out_trade_no"] + "/pay")
        deadline = time.time() + 5
        while self.c.stats()["notification_failures"] < 2 and time.time() < deadline:
            time.sleep(0.05)
        log = self.c.ok("GET", "/notify/log")[8:]
        self.assertEqual([(e["attempt"], e["status"]) for e in log], [(1, None), (2, None)])
        self.assertIn("timed out", log[0]["error"])
        # POST /reset stops the retries of earlier notifications
        failing = self.receiver(default=500)
        self.c.ok("POST", "/notify", {"url": failing.url, "retries": [0.3, 0.3]})
        self.c.ok("POST", "/orders/" + self.new_order(trade_state="NOTPAY")["out_trade_no"] + "/pay")
        failing.wait(1)
        self.c.ok("POST", "/reset")
        time.sleep(0.5)
        self.assertEqual(len(failing.got), 1)
        self.assertEqual(self.c.ok("GET", "/notify/log"), [])

    def test_notify_on_revoke(self):
        r = self.receiver()
        self.c.ok("POST", "/notify", {"url": r.url})
        paid = self.new_order(total=500)
        self.assertEqual(self.c.revoke(paid["out_trade_no"]).status, 204)
        time.sleep(0.3)
        self.assertEqual(r.got, [], "no refund notification by default")
        self.c.ok("POST", "/notify", {"url": r.url, "on_revoke": True})
        unpaid = self.new_order(trade_state="NOTPAY")
        self.assertEqual(self.c.revoke(unpaid["out_trade_no"]).status, 204)   # closed: no refund
        paid = self.new_order(total=500)
        self.assertEqual(self.c.revoke(paid["out_trade_no"]).status, 204)
        (_, headers, body, _), = r.wait(1)
        self.check_wire_format(headers, body, "REFUND.SUCCESS", "refund", "退款成功")
        self.assertTrue(self.note_verifies(headers, body))
        plain = json.loads(self.note_plaintext(body))
        self.assertEqual((plain["mchid"], plain["out_trade_no"], plain["transaction_id"],
                          plain["refund_status"], plain["amount"]["refund"], plain["amount"]["total"]),
                         (self.cfg["mchid"], paid["out_trade_no"], paid["transaction_id"], "SUCCESS",
                          500, 500))
        for k in ("out_refund_no", "refund_id", "success_time"):
            self.assertTrue(plain[k], k)
        self.assertEqual(self.c.revoke(paid["out_trade_no"]).status, 204)   # no second refund
        time.sleep(0.3)
        self.assertEqual(len(r.got), 1)
        self.assertEqual(self.c.stats()["notifications"], 1)

    def test_notify_send_mutations(self):
        self.c.download()
        r = self.receiver()
        self.c.ok("POST", "/notify", {"url": r.url})
        resource = {"mchid": self.cfg["mchid"], "out_trade_no": "N1", "trade_state": "SUCCESS"}
        platform = self.c.keys[self.cfg["platform_serial"]]

        def send(mutate=None, **kw):
            spec = {"event_type": "TRANSACTION.SUCCESS", "resource": resource, **kw}
            if mutate:
                spec["mutate"] = mutate
            before = len(r.got)
            got = self.c.ok("POST", "/notify/send", spec)
            self.assertEqual((got["sent"], got["status"], got["error"], got["answer"]), (True, 204, None, ""))
            path, headers, body, _ = r.wait(before + 1)[-1]
            self.assertEqual(body, base64.b64decode(got["body_base64"]), "answers what it POSTed")
            self.assertEqual(got["body"], body.decode("utf-8", "replace"))
            self.assertEqual({k.lower(): v for k, v in got["headers"].items()}, headers)
            return headers, body, got

        headers, body, got = send()                                   # the honest one
        self.check_wire_format(headers, body, "TRANSACTION.SUCCESS", "transaction", "支付成功")
        self.assertTrue(self.note_verifies(headers, body))
        self.assertEqual(json.loads(self.note_plaintext(body)), resource)
        self.assertEqual(json.loads(got["plaintext"]), resource)

        headers, body, _ = send("bad_signature")
        self.assertEqual(headers["wechatpay-serial"], self.cfg["platform_serial"])
        self.assertFalse(self.note_verifies(headers, body))
        self.assertEqual(json.loads(self.note_plaintext(body)), resource)

        headers, body, _ = send("other_key")
        self.assertEqual(headers["wechatpay-serial"], self.cfg["platform_serial"])
        self.assertFalse(self.note_verifies(headers, body))

        headers, body, _ = send("stale")
        self.assertAlmostEqual(int(headers["wechatpay-timestamp"]), time.time() - 600, delta=5)
        self.assertTrue(self.note_verifies(headers, body))            # validly signed, but old

        headers, body, _ = send("unknown_serial")
        self.assertNotIn(headers["wechatpay-serial"], (self.cfg["platform_serial"], self.cfg["public_key_id"]))
        self.assertRegex(headers["wechatpay-serial"], r"^[0-9A-F]{40}$")
        self.assertTrue(self.note_verifies(headers, body, platform))

        headers, body, _ = send("wrong_algorithm")
        self.assertTrue(self.note_verifies(headers, body))
        self.assertEqual(json.loads(body)["resource"]["algorithm"], "AEAD_AES_128_GCM")
        self.assertEqual(json.loads(self.note_plaintext(body)), resource)   # only the label lies

        for mutate in ("wrong_aad", "other_apiv3_key", "truncated_ciphertext"):
            headers, body, _ = send(mutate)
            self.assertTrue(self.note_verifies(headers, body), mutate)
            self.assertEqual(json.loads(body)["resource"]["algorithm"], "AEAD_AES_256_GCM")
            with self.assertRaises(InvalidTag, msg=mutate):
                self.note_plaintext(body)
        self.assertEqual(json.loads(body)["resource"]["associated_data"], "transaction")

        headers, body, _ = send("not_json_body")
        self.assertTrue(self.note_verifies(headers, body))
        with self.assertRaises(ValueError):
            json.loads(body)

        headers, body, got = send("plaintext_not_json")
        self.assertTrue(self.note_verifies(headers, body))
        with self.assertRaises(ValueError):
            json.loads(self.note_plaintext(body))

        headers, body, _ = send("no_headers")
        self.assertEqual([h for h in headers if h.startswith("wechatpay-")], [])
        self.assertEqual(headers["content-type"], "application/json")

        for kw in ({"mutate": "public_key"}, {"signing": "public_key"}):
            headers, body, _ = send(**kw)
            self.assertEqual(headers["wechatpay-serial"], self.cfg["public_key_id"])
            ok, out = openssl_verify(self.cfg["public_key"], Answer(200, headers, body), self.tmp)
            self.assertTrue(ok, out)
            self.assertFalse(self.note_verifies(headers, body, platform))

        # own id, summary, types; no URL: built and answered, not sent
        self.c.ok("POST", "/notify", {"url": None})
        got = self.c.ok("POST", "/notify/send", {"event_type": "REFUND.ABNORMAL", "resource": {"a": "退"},
                                                 "id": "EV-1", "summary": "s", "associated_data": ""})
        self.assertEqual((got["sent"], got["status"], got["url"]), (False, None, None))
        headers = {k.lower(): v for k, v in got["headers"].items()}
        body = base64.b64decode(got["body_base64"])
        obj = json.loads(body)
        self.assertEqual((obj["id"], obj["summary"], obj["event_type"], obj["resource"]["original_type"],
                          obj["resource"]["associated_data"]), ("EV-1", "s", "REFUND.ABNORMAL", "refund", ""))
        self.assertTrue(self.note_verifies(headers, body))
        self.assertEqual(json.loads(self.note_plaintext(body)), {"a": "退"})
        # wait=false: answered at once, delivered in the background
        got = self.c.ok("POST", "/notify/send", {"event_type": "TRANSACTION.SUCCESS", "resource": {},
                                                 "url": r.url, "wait": False})
        self.assertEqual((got["sent"], got["status"]), (True, None))
        self.assertEqual(r.wait(15)[14][2], base64.b64decode(got["body_base64"]))
        time.sleep(0.1)
        st = self.c.stats()
        self.assertEqual([st[k] for k in ("notifications", "notification_attempts", "notification_acks",
                                          "notification_failures")], [15, 15, 15, 0])
        # a one-try send that is not acknowledged counts as given up
        failing = self.receiver(default=400)
        got = self.c.ok("POST", "/notify/send", {"event_type": "X.Y", "resource": {}, "url": failing.url,
                                                 "mutate": "bad_signature"})
        self.assertEqual((got["status"], got["answer"]), (400, "ok"))
        self.assertEqual(self.c.stats()["notification_failures"], 1)
        self.assertEqual(self.c.ok("GET", "/notify/log")[-1]["mutate"], "bad_signature")

    # -- answer binding faults -------------------------------------------------------------------------
    def test_fault_wrong_order(self):
        order = self.new_order()
        no, txid = order["out_trade_no"], order["transaction_id"]
        self.fault(fault="wrong_order")
        other = self.new_order(trade_state="NOTPAY")["out_trade_no"]
        self.assertEqual(self.c.revoke(other).status, 204)       # a revoke does not take it
        a = self.c.query(no)
        self.assertEqual(a.status, 200)
        self.assertTrue(self.c.check(a))
        j = a.json()
        self.assertNotEqual(j["out_trade_no"], no)
        self.assertNotEqual(j["id"], txid)
        self.assertRegex(j["out_trade_no"], r"^[0-9A-Za-z_|*@-]{1,32}$")
        self.assertRegex(j["id"], r"^[0-9]{28}$")
        self.assertEqual((j["mchid"], j["trade_state"]), (self.cfg["mchid"], "SUCCESS"))
        self.assertEqual(self.c.query(no).json()["out_trade_no"], no)     # one answer only
        self.fault(fault="wrong_order", field="id")
        j = self.c.query(no).json()
        self.assertEqual(j["out_trade_no"], no)
        self.assertNotEqual(j["id"], txid)
        self.fault(fault="wrong_order", field="out_trade_no")
        j = self.c.call("GET", "/v3/global/transactions/id/" + txid + "?mchid=" + self.cfg["mchid"]).json()
        self.assertEqual(j["id"], txid)
        self.assertNotEqual(j["out_trade_no"], no)
        self.fault(fault="wrong_order")                           # an unknown order: still a 200
        a = self.c.query("NOSUCH77")
        self.assertEqual(a.status, 200)
        self.assertTrue(self.c.check(a))
        self.assertNotEqual(a.json()["out_trade_no"], "NOSUCH77")
        self.assertEqual(self.c.control("POST", "/faults", {"fault": "wrong_order", "field": "x"})[0], 400)

    def test_fault_wrong_merchant(self):
        no = self.new_order()["out_trade_no"]
        self.fault(fault="wrong_merchant")
        a = self.c.query(no)
        self.assertEqual(a.status, 200)
        self.assertTrue(self.c.check(a))
        j = a.json()
        self.assertNotEqual(j["mchid"], self.cfg["mchid"])
        self.assertRegex(j["mchid"], r"^[0-9]+$")
        self.assertEqual(j["out_trade_no"], no)
        sp, sub = self.cfg["sp_mchid"], self.cfg["sub_mchid"]
        inst = self.new_order(sp_mchid=sp, sub_mchid=sub)["out_trade_no"]
        q = {"sp_mchid": sp, "sub_mchid": sub}
        for field, changed in ((None, "sub_mchid"), ("sp_mchid", "sp_mchid"), ("sub_mchid", "sub_mchid")):
            self.fault(**({"fault": "wrong_merchant"} if field is None else
                          {"fault": "wrong_merchant", "field": field}))
            j = self.c.query(inst, q=q, mchid=sp).json()
            same = "sp_mchid" if changed == "sub_mchid" else "sub_mchid"
            self.assertNotEqual(j[changed], q[changed], field)
            self.assertEqual(j[same], q[same], field)
            self.assertNotIn("mchid", j)

    def test_fault_no_trade_state(self):
        no = self.new_order()["out_trade_no"]
        self.fault(fault="no_trade_state")
        a = self.c.query(no)
        self.assertEqual(a.status, 200)
        self.assertTrue(self.c.check(a))
        self.assertNotIn("trade_state", a.json())
        self.assertEqual(a.json()["out_trade_no"], no)
        self.assertEqual(self.c.query(no).json()["trade_state"], "SUCCESS")

    def test_fault_replay(self):
        self.c.download()
        no = self.new_order()["out_trade_no"]
        conn = self.c.connect()
        first = self.c.revoke(no, conn=conn)
        self.assertEqual(first.status, 204)
        self.fault(fault="replay")
        again = self.c.revoke(no, conn=conn)                      # the keep-alive goes on
        self.assertEqual((again.status, again.body), (204, b""))
        self.assertEqual(again.headers, first.headers)          # byte for byte: nonce, signature, date
        self.assertTrue(self.c.check(again), "a replay verifies: only a nonce memory catches it")
        log = self.c.ok("GET", "/requests")
        self.assertEqual((log[-1]["status"], log[-1]["fault"]), (204, "replay"))
        fresh = self.c.revoke(no, conn=conn)                      # later answers are new again
        self.assertNotEqual(fresh.headers["wechatpay-nonce"], first.headers["wechatpay-nonce"])
        # a query: the old body, after the order changed; only honest answers are copied
        q1 = self.c.query(no, conn=conn)
        self.fault(fault="no_trade_state")
        self.assertNotIn("trade_state", self.c.query(no, conn=conn).json())
        self.fault(fault="replay")
        q2 = self.c.query(no, conn=conn)
        self.assertEqual((q2.status, q2.body, q2.headers), (200, q1.body, q1.headers))
        # apply=false: a genuine-looking 204 for an order that stays paid
        self.new_order(no)                                        # the same order, paid again
        self.fault(fault="replay", apply=False)
        self.assertEqual(self.c.revoke(no, conn=conn).headers, fresh.headers)
        self.assertEqual(self.c.order(no)["trade_state"], "SUCCESS")
        conn.close()
        # nothing to replay yet: a normal answer
        other = self.new_order()["out_trade_no"]
        self.fault(fault="replay")
        a = self.c.revoke(other)
        self.assertEqual(a.status, 204)
        self.assertTrue(self.c.check(a))
        self.assertEqual(self.c.order(other)["trade_state"], "REVOKED")

    # -- rate limit ----------------------------------------------------------------------------------
    def test_ratelimit(self):
        self.c.download()
        orders = [self.new_order(trade_state="NOTPAY")["out_trade_no"] for _ in range(8)]
        got = self.c.ok("POST", "/ratelimit", {"per_second": 5})
        self.assertEqual(got, {"per_second": 5, "include_queries": False, "window": "sliding 1 s"})
        conn = self.c.connect()
        answers = [self.c.revoke(no, conn=conn) for no in orders]        # 5 + 3 within 1 s
        self.assertEqual([a.status for a in answers], [204] * 5 + [429] * 3)
        for a in answers[5:]:
            self.assertEqual(self.assert_error(a, 429, "RATELIMIT_EXCEEDED")["detail"]["limit"], 5)
        self.assertEqual([self.c.order(no)["trade_state"] for no in orders],
                         ["CLOSED"] * 5 + ["NOTPAY"] * 3)                 # a 429 applies nothing
        for _ in range(3):                                                # queries do not count
            self.assertEqual(self.c.query(orders[0], conn=conn).status, 200)
        st = self.c.stats()
        self.assertEqual((st["ratelimited"], st["revokes"], st["queries"]), (3, 8, 3))
        # sliding: 0.6 s later the window still holds 5 (a fixed 1-s bucket might not)
        time.sleep(0.6)
        self.assertEqual(self.c.revoke(orders[5], conn=conn).status, 429)
        time.sleep(0.5)                                                   # > 1 s after the 5
        self.assertEqual(self.c.revoke(orders[5], conn=conn).status, 204)
        # include_queries: queries share the window and get 429 too
        self.c.ok("POST", "/ratelimit", {"per_second": 2, "include_queries": True})
        statuses = [self.c.query(orders[0], conn=conn).status,
                    self.c.revoke(orders[6], conn=conn).status,
                    self.c.query(orders[0], conn=conn).status,
                    self.c.revoke(orders[7], conn=conn).status]
        self.assertEqual(statuses, [200, 204, 429, 429])
        self.assertEqual(self.c.stats()["ratelimited"], 6)
        self.assertEqual(self.c.ok("POST", "/ratelimit", {"per_second": 0})["per_second"], None)
        self.assertEqual(self.c.revoke(orders[7], conn=conn).status, 204)
        self.c.ok("POST", "/ratelimit", {"per_second": 1})
        self.c.ok("POST", "/reset")                                       # reset switches it off
        self.assertEqual(self.c.ok("GET", "/ratelimit")["per_second"], None)
        conn.close()
        for bad in ({"per_second": -1}, {"per_second": "5"}, {"per_second": 1.5},
                    {"per_second": 5, "include_queries": 1}, {"rate": 5}):
            self.assertEqual(self.c.control("POST", "/ratelimit", bad)[0], 400, bad)
        self.assertEqual(self.c.ok("POST", "/ratelimit", {"per_second": None})["per_second"], None)

    # -- concurrency and throughput -----------------------------------------------------------------
    def test_counters_concurrent(self):
        orders = [self.new_order(trade_state="NOTPAY")["out_trade_no"] for _ in range(10)]
        self.c.ok("POST", "/reset")
        orders = [self.new_order(no, trade_state="NOTPAY")["out_trade_no"] for no in orders]
        statuses, lock = [], threading.Lock()

        def client(no):
            conn = self.c.connect()
            got = [self.c.call("GET", "/v3/global/certificates", conn=conn).status]
            for _ in range(6):
                got.append(self.c.query(no, conn=conn).status)
            got += [self.c.revoke(no, conn=conn).status for _ in range(2)]
            got.append(self.c.revoke(no, conn=conn, serial="ABCDEF").status)   # rejected
            conn.close()
            with lock:
                statuses.extend(got)

        threads = [threading.Thread(target=client, args=(no,)) for no in orders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(statuses), sorted([200] * 70 + [204] * 20 + [401] * 10))
        st = self.c.stats()
        self.assertEqual({k: st[k] for k in ("connections", "handshakes", "requests", "downloads",
                                             "queries", "revokes", "rejected", "refunds")},
                         {"connections": 10, "handshakes": 10, "requests": 100, "downloads": 10,
                          "queries": 60, "revokes": 30, "rejected": 10, "refunds": 0})
        self.assertEqual(len(self.c.ok("GET", "/requests")), 100)

    def test_throughput(self):
        """450 revokes at 150/s over 40 keep-alive connections (4 nginx workers x 10)."""
        self.c.download()
        total, rate, nconn = 450, 150.0, 40
        orders = [self.new_order(total=1 + i)["out_trade_no"] for i in range(total)]
        before = self.c.stats()
        results, lock, next_i = [], threading.Lock(), [0]
        conns = [self.c.connect() for _ in range(nconn)]
        for conn in conns:
            conn.connect()
        t0 = time.monotonic() + 0.05

        def worker(conn):
            while True:
                with lock:
                    i = next_i[0]
                    next_i[0] += 1
                if i >= total:
                    return
                time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                sent = time.monotonic()
                try:
                    a = self.c.revoke(orders[i], conn=conn)
                    r = (a.status, self.c.check(a, refresh=False), time.monotonic() - sent)
                except Exception as e:                                  # noqa: BLE001
                    r = (repr(e), False, 0)
                with lock:
                    results.append(r)

        threads = [threading.Thread(target=worker, args=(conn,)) for conn in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        for conn in conns:
            conn.close()
        self.assertEqual([r for r in results if r[:2] != (204, True)], [])
        self.assertEqual(len(results), total)
        self.assertLess(elapsed, total / rate + 2.5)
        self.assertLess(max(r[2] for r in results), 1.5, "no answer waits long")
        st = self.c.stats()
        self.assertEqual((st["revokes"] - before["revokes"], st["refunds"] - before["refunds"],
                          st["handshakes"] - before["handshakes"]), (total, total, nconn))
        states = {o["trade_state"] for o in self.c.ok("GET", "/orders")}
        self.assertEqual(states, {"REVOKED"})

    # -- control endpoint -----------------------------------------------------------------------------
    def test_control_orders_and_log(self):
        order = self.new_order("LOG-1", trade_state="NOTPAY", transaction_id="4200000000000000000000000042",
                               total=5, created_at=1700000000)
        self.assertEqual((order["transaction_id"], order["total"], order["created_at"], order["mchid"]),
                         ("4200000000000000000000000042", 5, 1700000000, self.cfg["mchid"]))
        self.assertEqual((order["refunds"], order["revokes"]), (0, 0))
        status, body = self.c.control("GET", "/orders/NOPE")
        self.assertEqual(status, 404)
        self.c.query("LOG-1")
        log = self.c.ok("GET", "/requests")
        self.assertEqual(len(log), 1)
        entry = log[0]
        self.assertEqual((entry["method"], entry["status"], entry["body"]), ("GET", 200, ""))
        self.assertEqual(entry["target"], "/v3/global/transactions/out-trade-no/LOG-1?mchid=" + self.cfg["mchid"])
        self.assertTrue(entry["headers"]["Authorization"].startswith(SCHEME))
        self.assertAlmostEqual(entry["time"], time.time(), delta=10)
        self.c.ok("POST", "/reset")
        self.assertEqual(self.c.ok("GET", "/requests"), [])
        self.assertEqual(self.c.ok("GET", "/orders"), [])
        self.assertEqual(set(self.c.stats().values()), {0})

    def test_control_bad_input(self):
        bad = [("POST", "/orders", None, b"{nope"), ("POST", "/orders", [], None),
               ("POST", "/orders", {}, None),
               ("POST", "/orders", {"out_trade_no": "x" * 33}, None),
               ("POST", "/orders", {"out_trade_no": "A B"}, None),
               ("POST", "/orders", {"out_trade_no": "A1", "trade_state": "PAID"}, None),
               ("POST", "/orders", {"out_trade_no": "A1", "transaction_id": "12x"}, None),
               ("POST", "/orders", {"out_trade_no": "A1", "transaction_id": 12}, None),
               ("POST", "/orders", {"out_trade_no": "A1", "created_at": "now"}, None),
               ("POST", "/orders", {"out_trade_no": "A1", "created_at": True}, None),
               ("POST", "/orders", {"out_trade_no": "A1", "total": -1}, None),
               ("POST", "/orders", {"out_trade_no": "A1", "total": 1.5}, None),
               ("POST", "/orders", {"out_trade_no": "A1", "mchid": "abc"}, None),
               ("POST", "/orders", {"out_trade_no": "A1", "sp_mchid": "1"}, None),
               ("POST", "/orders", {"out_trade_no": "A1", "mchid": "1", "sp_mchid": "1",
                                    "sub_mchid": "2"}, None),
               ("POST", "/orders", {"out_trade_no": "A1", "colour": "red"}, None),
               ("POST", "/faults", {"fault": "explode"}, None),
               ("POST", "/faults", {}, None),
               ("POST", "/faults", {"fault": "delay"}, None),
               ("POST", "/faults", {"fault": "delay", "ms": "10"}, None),
               ("POST", "/faults", {"fault": "delay", "ms": -1}, None),
               ("POST", "/faults", {"fault": "status", "status": 99}, None),
               ("POST", "/faults", {"fault": "status", "status": 204}, None),
               ("POST", "/faults", {"fault": "status", "count": 0}, None),
               ("POST", "/faults", {"fault": "status", "count": True}, None),
               ("POST", "/faults", {"fault": "drop", "ms": 5}, None),
               ("POST", "/faults", {"fault": "drop", "method": "FETCH"}, None),
               ("POST", "/faults", {"fault": "drop", "match": 5}, None),
               ("POST", "/faults", {"fault": "oversized", "bytes": 1}, None),
               ("POST", "/faults", "drop", None),
               ("POST", "/signing", {"mode": "magic"}, None),
               ("POST", "/signing", None, b"\xff\xfe"),
               ("POST", "/certificates/extra", {"kind": "future"}, None),
               ("POST", "/apiv3_key", {"key": "short"}, None),
               ("POST", "/apiv3_key", {"key": 12}, None)]
        for method, path, obj, raw in bad:
            status, body = self.c.control(method, path, obj, raw)
            self.assertEqual(status, 400, (path, obj, raw, body))
            self.assertIsInstance(body.get("error"), str)
        self.assertEqual(self.c.control("GET", "/nothing")[0], 404)
        self.c.ok("POST", "/orders", {"out_trade_no": "T-OK"})
        self.assertEqual(self.c.control("POST", "/orders", {"out_trade_no": "T-OK2",
                                        "transaction_id": self.c.order("T-OK")["transaction_id"]})[0], 400)
        self.assertEqual(self.c.ok("GET", "/faults"), [])
        self.assertEqual(set(self.c.stats()), STATS)
        self.assertEqual(self.c.query("T-OK").status, 200)    # the API still answers

    def test_api_garbage(self):
        # Not TLS, a bare TCP close, and malformed HTTP must not hurt the server.
        with socket.create_connection(("127.0.0.1", self.c.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            s.settimeout(5)
            try:
                s.recv(100)
            except OSError:
                pass
        socket.create_connection(("127.0.0.1", self.c.port), timeout=5).close()
        sock = socket.create_connection(("127.0.0.1", self.c.port), timeout=5)
        with self.c.ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"NONSENSE / HTTP/1.1\r\n\r\n")
            self.assertTrue(tls.recv(100).startswith(b"HTTP/1.1 501"))
        self.assertEqual(self.c.query("NOSUCH1").status, 404)


class RestartTest(unittest.TestCase):
    """Runs after SandboxTest: restart on the same directory, idle close, stop."""

    def test_restart_reuses_dir(self):
        directory = SandboxTest.dir
        ctl("stop", directory)
        self.assertFalse(os.path.exists(os.path.join(directory, "sandbox.json")))
        with open(os.path.join(directory, "creds", "apiclient_key.pem"), "rb") as f:
            key_before = f.read()
        cfg, elapsed, _ = start_sandbox(directory, "--idle-timeout", "1")
        try:
            self.assertLess(elapsed, 2.0 * load_factor(), "startup with existing credentials")
            for name in ("serial_no", "platform_serial", "public_key_id", "apiv3_key"):
                self.assertEqual(cfg[name], SandboxTest.cfg[name], name)
            with open(cfg["private_key"], "rb") as f:
                self.assertEqual(f.read(), key_before)
            c = Client(cfg)
            c.ok("POST", "/orders", {"out_trade_no": "R1"})
            conn = c.connect()
            self.assertEqual(c.query("R1", conn=conn).status, 200)
            self.assertTrue(c.check(c.query("R1", conn=conn)))
            time.sleep(1.6)                                     # idle longer than 1 s
            self.assertEqual(conn.sock.recv(1), b"")            # the server closed it
            conn.close()
            # start on a running dir replaces the old server
            old_pid = cfg["pid"]
            cfg2, _, _ = start_sandbox(directory)
            self.assertNotEqual(cfg2["pid"], old_pid)
            self.assertFalse(os.path.exists(f"/proc/{old_pid}/cmdline") and
                             b"server.py" in open(f"/proc/{old_pid}/cmdline", "rb").read())
            cfg = cfg2
        finally:
            self.assertEqual(ctl("stop", directory).returncode, 0)
        self.assertFalse(os.path.exists(os.path.join(directory, "sandbox.json")))
        time.sleep(0.1)
        self.assertFalse(os.path.exists(f"/proc/{cfg['pid']}/status") and
                         "State:\tZ" not in open(f"/proc/{cfg['pid']}/status").read())
        self.assertEqual(ctl("stop", directory).returncode, 0)   # already stopped: still 0
        broken = tempfile.mkdtemp(prefix="wxsandbox-bad-")
        try:
            bad = ctl("start", broken, "--port", "abc")          # the server cannot start
            self.assertNotEqual(bad.returncode, 0)
            self.assertIn("server.log", bad.stderr)
            self.assertIn("--port", bad.stderr)                  # the log tail is shown
            self.assertFalse(os.path.exists(os.path.join(broken, "sandbox.json")))
        finally:
            shutil.rmtree(broken, ignore_errors=True)


def main():
    verbosity = 2 if "-v" in sys.argv[1:] else 1
    loader = unittest.TestLoader()
    suite = unittest.TestSuite([loader.loadTestsFromTestCase(SandboxTest),
                                loader.loadTestsFromTestCase(RestartTest)])
    t0 = time.monotonic()
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=verbosity,
                                     ).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped)
    if not os.environ.get("SANDBOX_SELFTEST_DIR") and getattr(SandboxTest, "dir", None):
        shutil.rmtree(SandboxTest.dir, ignore_errors=True)
    print(f"(took {time.monotonic() - t0:.1f} s)")
    print(f"sandbox: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
