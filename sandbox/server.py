#!/usr/bin/python3
"""Local WeChat Pay Global API v3 sandbox.

An HTTPS server on 127.0.0.1 that speaks the part of the WeChat Pay Global API v3
the wxpay library uses (revoke, query, platform certificates), verifies every request
the way WeChat does and signs every answer, plus a plain-HTTP control endpoint to seed
orders, inject faults, limit the rate, send signed and encrypted notifications to a
merchant's handler on loopback, and read counters.  See README.md beside this file.

Runs on Debian's /usr/bin/python3 with python3-cryptography only; it never loads the
project's C code.

    /usr/bin/python3 sandbox/server.py --dir DIR [--port N] [--control-port N]
"""

import argparse
import base64
import binascii
import collections
import concurrent.futures
import datetime
import email.utils
import http
import http.server
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import socketserver
import ssl
import string
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MCHID = "1900000109"          # common mode merchant
SP_MCHID = "1900000100"       # institution (institutional mode)
SUB_MCHID = "1900000101"      # default sub-merchant
SCHEME = "WECHATPAY2-SHA256-RSA2048"
AUTH_PARAMS = ("mchid", "nonce_str", "signature", "timestamp", "serial_no")
MAX_SKEW = 300                # seconds, request timestamp tolerance
REVOKE_WINDOW = 7 * 86400     # orders older than this cannot be revoked
MAX_BODY = 1 << 20            # largest request body accepted
LOG_SIZE = 1000               # request log length

ALNUM = string.ascii_letters + string.digits
CST = datetime.timezone(datetime.timedelta(hours=8))   # WeChat prints +08:00 times
UTC = datetime.timezone.utc

TRADE_STATES = {
    "SUCCESS": "Payment successful",
    "NOTPAY": "Not paid",
    "USERPAYING": "User is paying",
    "PAYERROR": "Payment failed",
    "CLOSED": "Order closed",
    "REVOKED": "Order revoked",
    "REFUND": "Order refunded",
}

MESSAGES = {
    "SIGN_ERROR": "Signature verification failed",
    "PARAM_ERROR": "Parameter format verification error",
    "INVALID_REQUEST": "Invalid request",
    "INVALID_TRANSACTIONID": "Invalid transaction_id",
    "ORDER_NOT_EXIST": "The order does not exist",
    "REVERSE_EXPIRE": "The order cannot be canceled",
    "TRADE_ERROR": "Order error",
    "RESOURCE_NOT_EXISTS": "The requested resource does not exist",
    "SYSTEM_ERROR": "System error",
    "USERPAYING": "The user is paying, please try again later",
    "RATELIMIT_EXCEEDED": "Rate limit exceeded, please slow down",
    "SERVICE_UNAVAILABLE": "Service unavailable, please try again later",
    "NO_AUTH": "No permission for this operation",
}

TXID_RE = re.compile(r"[0-9]{1,32}")
OUT_TRADE_NO_RE = re.compile(r"[0-9A-Za-z_|*@-]{1,32}")
MCHID_RE = re.compile(r"[0-9]{1,32}")
AUTH_PARAM_RE = re.compile(r'\s*([A-Za-z_]+)="([^"]*)"\s*(?:,|$)')
REVOKE_RE = re.compile(r"/v3/global/micropay/transactions/(id|out-trade-no)/([^/]*)/reverse")
QUERY_RE = re.compile(r"/v3/global/transactions/(id|out-trade-no)/([^/]*)")
CERTS_PATH = "/v3/global/certificates"

# notifications (POST /notify, /notify/send, /orders/{no}/pay)
NOTIFY_RETRIES = (0.2, 0.5, 1.0, 2.0)   # seconds before tries 2..5 (WeChat: 15 s, 15 s, 30 s, 3 min, ...)
NOTIFY_TIMEOUT = 2.0                     # seconds a try may take
NOTIFY_MUTATIONS = ("bad_signature", "other_key", "stale", "unknown_serial", "wrong_algorithm",
                    "wrong_aad", "other_apiv3_key", "truncated_ciphertext", "not_json_body",
                    "plaintext_not_json", "no_headers", "public_key")
SUMMARIES = {"TRANSACTION.SUCCESS": "支付成功", "REFUND.SUCCESS": "退款成功",
             "REFUND.ABNORMAL": "退款异常", "REFUND.CLOSED": "退款关闭"}
NOTIFY_USER_AGENT = "Mozilla/4.0 (wxpay-sandbox notification)"

# /stats counters, all zeroed by POST /reset
STATS = ("requests", "connections", "handshakes", "downloads", "revokes", "queries", "refunds",
         "rejected", "ratelimited", "notifications", "notification_attempts",
         "notification_acks", "notification_failures")


def api_kind(method, target):
    """"revoke", "query", "download" or None for a request line."""
    path = target.partition("?")[0]
    if method == "POST" and REVOKE_RE.fullmatch(path):
        return "revoke"
    if method == "GET" and QUERY_RE.fullmatch(path):
        return "query"
    if method == "GET" and path == CERTS_PATH:
        return "download"
    return None


def rand_alnum(n):
    return "".join(secrets.choice(ALNUM) for _ in range(n))


def rand_digits(n):
    return "".join(secrets.choice(string.digits) for _ in range(n))


def rfc3339(ts_or_dt):
    if isinstance(ts_or_dt, datetime.datetime):
        dt = ts_or_dt if ts_or_dt.tzinfo else ts_or_dt.replace(tzinfo=UTC)
    else:
        dt = datetime.datetime.fromtimestamp(ts_or_dt, UTC)
    return dt.astimezone(CST).isoformat(timespec="seconds")


def other_value(value, make):
    """make() until it differs from value."""
    while True:
        new = make()
        if new != value:
            return new


def compact_json(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def utf8_json(obj):
    """Compact JSON with non-ASCII text as UTF-8, as WeChat writes notification bodies."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def sign_message(key, ts, nonce, body):
    """RSA-SHA256 PKCS#1 v1.5 over TS\nNONCE\nBODY\n (protocol.md section 3): answers
    and notifications are signed alike."""
    return key.sign(f"{ts}\n{nonce}\n".encode() + body + b"\n", padding.PKCS1v15(), hashes.SHA256())


# --------------------------------------------------------------------------- keys

def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_serial():
    """A random serial that prints as exactly 40 uppercase hex digits (< 2**159)."""
    return 2 ** 156 + secrets.randbelow(2 ** 159 - 2 ** 156)


def serial_hex(cert):
    return format(cert.serial_number, "X")


def make_cert(cn, key, issuer=None, *, not_before=None, not_after=None,
              ca=False, server=False):
    """Certificate for `key`; issuer is (cert, key) or None for self-signed."""
    now = datetime.datetime.now(UTC).replace(tzinfo=None)
    not_before = not_before or now - datetime.timedelta(days=1)
    not_after = not_after or now + datetime.timedelta(days=5 * 365)
    subject = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wxpay sandbox"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer_cert.subject if issuer_cert else subject)
               .public_key(key.public_key())
               .serial_number(new_serial())
               .not_valid_before(not_before)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, content_commitment=False,
                   key_encipherment=not ca, data_encipherment=False, key_agreement=False,
                   key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False),
                   critical=True))
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    if server:
        builder = (builder
                   .add_extension(x509.SubjectAlternativeName([
                       x509.DNSName("localhost"),
                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False))
    return builder.sign(issuer_key, hashes.SHA256())


def pem_key(key, pkcs1=False):
    fmt = (serialization.PrivateFormat.TraditionalOpenSSL if pkcs1
           else serialization.PrivateFormat.PKCS8)
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def write_file(path, data, private=False):
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600 if private else 0o644)


class Creds:
    """The credential set in DIR/creds, generated once and reused afterwards."""

    PRIVATE = ("ca_key.pem", "server_key.pem", "apiclient_key.pem", "apiclient_key_pkcs1.pem",
               "platform_key.pem", "pub_key_private.pem", "apiv3_key.txt")

    def __init__(self, path):
        self.path = path
        self.file = lambda name: os.path.join(path, name)
        read = lambda name: open(self.file(name), "rb").read()
        load_key = lambda name: serialization.load_pem_private_key(read(name), None)
        load_cert = lambda name: x509.load_pem_x509_certificate(read(name))
        self.ca_cert, self.ca_key = load_cert("ca.pem"), load_key("ca_key.pem")
        self.merchant_cert = load_cert("apiclient_cert.pem")
        self.merchant_public = self.merchant_cert.public_key()
        self.serial_no = serial_hex(self.merchant_cert)
        self.platform_cert, self.platform_key = load_cert("platform_cert.pem"), load_key("platform_key.pem")
        self.pub_key_private = load_key("pub_key_private.pem")
        self.pub_key_id = read("pub_key_id.txt").decode().strip()
        self.apiv3_key = read("apiv3_key.txt").decode().strip()
        load_key("apiclient_key.pem")              # must be readable and well formed
        load_key("apiclient_key_pkcs1.pem")
        if len(self.apiv3_key) != 32 or not self.pub_key_id.startswith("PUB_KEY_ID_"):
            raise ValueError("bad apiv3_key.txt or pub_key_id.txt")

    @classmethod
    def load_or_create(cls, path):
        if not os.path.isdir(path):
            parent = os.path.dirname(path)
            tmp = tempfile.mkdtemp(prefix=".creds-", dir=parent)
            try:
                cls.generate(tmp)
                os.rename(tmp, path)               # atomic: a half-made creds dir never shows
            except OSError:
                if not os.path.isdir(path):
                    raise
            finally:
                if os.path.isdir(tmp):             # lost a race with another starter
                    for name in os.listdir(tmp):
                        os.unlink(os.path.join(tmp, name))
                    os.rmdir(tmp)
        try:
            return cls(path)
        except (OSError, ValueError) as e:
            raise SystemExit(f"sandbox: unusable credentials in {path} ({e}); "
                             f"delete that directory to regenerate them")

    @staticmethod
    def generate(path):
        # Key generation releases the GIL: make the five keys in parallel.
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            ca_key, server_key, mch_key, plat_key, pub_key = [
                f.result() for f in [pool.submit(new_key) for _ in range(5)]]
        now = datetime.datetime.now(UTC).replace(tzinfo=None)
        ca_cert = make_cert("wxpay sandbox CA", ca_key, ca=True,
                            not_before=now - datetime.timedelta(days=1),
                            not_after=now + datetime.timedelta(days=10 * 365))
        ca = (ca_cert, ca_key)
        server_cert = make_cert("localhost", server_key, ca, server=True)
        mch_cert = make_cert(f"{MCHID} merchant API certificate", mch_key, ca)
        plat_cert = make_cert("Tenpay.com Root CA sandbox platform", plat_key, ca)
        p = lambda name: os.path.join(path, name)
        write_file(p("ca.pem"), pem_cert(ca_cert))
        write_file(p("ca_key.pem"), pem_key(ca_key), private=True)
        write_file(p("server_cert.pem"), pem_cert(server_cert) + pem_cert(ca_cert))
        write_file(p("server_key.pem"), pem_key(server_key), private=True)
        write_file(p("apiclient_key.pem"), pem_key(mch_key), private=True)
        write_file(p("apiclient_key_pkcs1.pem"), pem_key(mch_key, pkcs1=True), private=True)
        write_file(p("apiclient_cert.pem"), pem_cert(mch_cert))
        write_file(p("platform_key.pem"), pem_key(plat_key), private=True)
        write_file(p("platform_cert.pem"), pem_cert(plat_cert))
        write_file(p("pub_key_private.pem"), pem_key(pub_key), private=True)
        write_file(p("pub_key.pem"), pub_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        write_file(p("pub_key_id.txt"), "PUB_KEY_ID_01" + rand_digits(26) + "\n")
        write_file(p("apiv3_key.txt"), rand_alnum(32) + "\n", private=True)
        os.chmod(path, 0o700)


class PlatformCert:
    def __init__(self, cert, key=None):
        self.cert, self.key = cert, key
        self.serial = serial_hex(cert)
        self.pem = pem_cert(cert)


# ---------------------------------------------------------------------- responses

class Response:
    """An answer before it is written.  `effect` names a fault that spoils it."""

    def __init__(self, status, body=b"", content_type="application/json; charset=utf-8"):
        self.status, self.body, self.content_type = status, body, content_type
        self.effect = None          # see ApiHandler.send_response_obj
        self.params = {}
        self.unsigned = False
        self.drop = False
        self.rejected = False
        self.raw = None             # bytes to send as they are (the replay fault)


def json_response(status, obj):
    return Response(status, compact_json(obj))


def error_response(status, code, message=None, **detail):
    body = {"code": code, "message": message or MESSAGES.get(code, code)}
    body["detail"] = detail
    return json_response(status, body)


def param_error(field, value, issue, location="body"):
    return error_response(400, "PARAM_ERROR", None, field=field, value=value,
                          issue=issue, location=location)


class ControlError(Exception):
    """Bad control input: answered 400 {"error": reason}."""


# ------------------------------------------------------------------------ faults

INT, STR, BOOL, OBJ = "integer", "string", "boolean", "object"
ERROR_PARAMS = {"status": (INT, 500, 200, 599), "code": (STR, "SYSTEM_ERROR"),
                "message": (STR, None), "detail": (OBJ, None)}
APPLY = {"apply": (BOOL, True)}
FAULTS = {
    "delay": {"ms": (INT, None, 0, 600000)},
    "status": ERROR_PARAMS,
    "apply_then_status": ERROR_PARAMS,
    "unsigned_error": ERROR_PARAMS,
    "drop": {},
    "drop_after_apply": {},
    "truncate": APPLY,
    "flip_signature": APPLY,
    "unknown_serial": APPLY,
    "stale_timestamp": dict(APPLY, seconds=(INT, 600, -10 ** 9, 10 ** 9)),
    "missing_signature": APPLY,
    "bad_base64_signature": APPLY,
    "connection_close": APPLY,
    "oversized": dict(APPLY, bytes=(INT, 2 * 1024 * 1024, 16, 256 * 1024 * 1024)),
    "non_json": dict(APPLY, content_type=(STR, "text/html; charset=utf-8")),
    "wrong_order": {"field": (STR, "both")},
    "wrong_merchant": {"field": (STR, None)},
    "no_trade_state": {},
    "replay": APPLY,
}
CHOICES = {("wrong_order", "field"): ("both", "out_trade_no", "id"),
           ("wrong_merchant", "field"): ("mchid", "sp_mchid", "sub_mchid")}
QUERY_FAULTS = ("wrong_order", "wrong_merchant", "no_trade_state")   # taken by queries only
REPLAY_SIZE = 1000            # signed answers kept for the replay fault
TYPES = {INT: int, STR: str, BOOL: bool, OBJ: dict}


def check_type(name, value, kind, lo=None, hi=None):
    ok = isinstance(value, TYPES[kind]) and not (kind == INT and isinstance(value, bool))
    if not ok:
        raise ControlError(f"{name} must be a {kind}")
    if kind == INT and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        raise ControlError(f"{name} must be between {lo} and {hi}")
    return value


class Fault:
    def __init__(self, spec):
        if not isinstance(spec, dict):
            raise ControlError("body must be a JSON object")
        name = spec.get("fault")
        if name not in FAULTS:
            raise ControlError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULTS))}")
        allowed = FAULTS[name]
        for key in spec:
            if key not in allowed and key not in ("fault", "count", "match", "method"):
                raise ControlError(f"fault {name} takes no parameter {key!r}")
        self.name = name
        self.count = check_type("count", spec.get("count", 1), INT, 1, 10 ** 6)
        self.match = spec.get("match")
        if self.match is not None:
            check_type("match", self.match, STR)
        self.method = spec.get("method")
        if self.method is not None:
            check_type("method", self.method, STR)
            self.method = self.method.upper()
            if self.method not in ("GET", "POST", "PUT", "DELETE", "PATCH"):
                raise ControlError("method must be GET, POST, PUT, DELETE or PATCH")
        self.params = {}
        for key, (kind, default, *rng) in allowed.items():
            if key in spec:
                self.params[key] = check_type(key, spec[key], kind, *rng)
            elif default is None and key in ("ms",):
                raise ControlError(f"fault {name} needs {key!r}")
            else:
                self.params[key] = default
        for (fault_name, key), allowed_values in CHOICES.items():
            value = self.params.get(key) if fault_name == name else None
            if value is not None and value not in allowed_values:
                raise ControlError(f"{key} must be one of {', '.join(allowed_values)}")
        if self.params.get("status") in (204, 304):
            raise ControlError("status must carry a body (not 204/304)")
        if "code" in self.params and not self.params["code"]:
            raise ControlError("code must not be empty")

    def matches(self, method, target):
        if self.name in QUERY_FAULTS and api_kind(method, target) != "query":
            return False
        return ((self.match is None or self.match in target)
                and (self.method is None or self.method == method))

    def as_json(self):
        return {"fault": self.name, "remaining": self.count, "match": self.match,
                "method": self.method, **self.params}


# ------------------------------------------------------------------------ orders

class Order:
    def __init__(self, out_trade_no, transaction_id, trade_state, created_at, scope, total):
        self.out_trade_no, self.transaction_id = out_trade_no, transaction_id
        self.trade_state, self.created_at = trade_state, created_at
        self.scope, self.total = scope, total      # scope: (mchid,) or (sp_mchid, sub_mchid)
        self.refunds = self.revokes = 0
        self.paid_at = created_at if trade_state in ("SUCCESS", "REFUND") else None

    def ids(self):
        if len(self.scope) == 1:
            return {"mchid": self.scope[0]}
        return {"sp_mchid": self.scope[0], "sub_mchid": self.scope[1]}

    def api_json(self):
        return {"id": self.transaction_id, "out_trade_no": self.out_trade_no, **self.ids(),
                "trade_type": "MICROPAY", "trade_state": self.trade_state,
                "trade_state_desc": TRADE_STATES[self.trade_state],
                "amount": {"total": self.total, "currency": "HKD",
                           "payer_total": round(self.total * 0.92), "payer_currency": "CNY"},
                "create_time": rfc3339(self.created_at),
                **({"success_time": rfc3339(self.paid_at)}
                   if self.paid_at is not None and self.trade_state in ("SUCCESS", "REFUND")
                   else {})}

    def transaction_json(self):
        """The TRANSACTION.SUCCESS resource: the query answer, with transaction_id too."""
        obj = self.api_json()
        return {"id": obj.pop("id"), "transaction_id": self.transaction_id, **obj}

    def refund_json(self):
        """The REFUND.SUCCESS resource for the refund a revoke of a paid order makes."""
        payer_total = round(self.total * 0.92)
        return {**self.ids(), "out_trade_no": self.out_trade_no,
                "transaction_id": self.transaction_id,
                "out_refund_no": ("REVOKE-" + self.out_trade_no)[:64],
                "refund_id": "50" + rand_digits(26), "refund_status": "SUCCESS",
                "success_time": rfc3339(time.time()),
                "amount": {"total": self.total, "refund": self.total, "currency": "HKD",
                           "payer_total": payer_total, "payer_refund": payer_total,
                           "payer_currency": "CNY"}}

    def control_json(self):
        return {"out_trade_no": self.out_trade_no, "transaction_id": self.transaction_id,
                **self.ids(), "mode": "common" if len(self.scope) == 1 else "institutional",
                "trade_state": self.trade_state, "created_at": self.created_at,
                "create_time": rfc3339(self.created_at), "total": self.total,
                "paid_at": self.paid_at, "refunds": self.refunds, "revokes": self.revokes}


# ----------------------------------------------------------------------- sandbox

class Sandbox:
    """All shared state.  Every mutation happens under self.lock."""

    def __init__(self, directory, creds, idle_timeout):
        self.dir, self.creds, self.idle_timeout = directory, creds, idle_timeout
        self.lock = threading.RLock()
        self.platform = [PlatformCert(creds.platform_cert, creds.platform_key)]
        self.current = self.platform[0]
        self.mode = "certificate"
        self.merchants = {MCHID, SP_MCHID}
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls.load_cert_chain(creds.file("server_cert.pem"), creds.file("server_key.pem"))
        self.config = {}
        self.notifier = Notifier(self)
        self.reset()

    def reset(self):
        with self.lock:
            self.orders = []
            self.faults = []
            self.log = collections.deque(maxlen=LOG_SIZE)
            self.stats = dict.fromkeys(STATS, 0)
            self.download_key = self.creds.apiv3_key
            self.ratelimit = None          # {"per_second", "include_queries"} or None
            self.admitted = collections.deque()     # monotonic times inside the window
            self.answers = collections.OrderedDict()  # (method, path) -> (status, bytes)
            self.notifier.reset()

    def count(self, name, n=1):
        with self.lock:
            self.stats[name] += n

    # -- orders --------------------------------------------------------------
    def add_order(self, spec):
        if not isinstance(spec, dict):
            raise ControlError("body must be a JSON object")
        known = {"out_trade_no", "transaction_id", "trade_state", "created_at", "mchid",
                 "sp_mchid", "sub_mchid", "total"}
        for key in spec:
            if key not in known:
                raise ControlError(f"unknown field {key!r}")
        no = spec.get("out_trade_no")
        if not isinstance(no, str) or not OUT_TRADE_NO_RE.fullmatch(no):
            raise ControlError("out_trade_no must be 1-32 characters of [0-9A-Za-z_|*@-]")
        txid = spec.get("transaction_id")
        if txid is not None and (not isinstance(txid, str) or not TXID_RE.fullmatch(txid)):
            raise ControlError("transaction_id must be a string of 1-32 digits")
        state = spec.get("trade_state", "SUCCESS")
        if state not in TRADE_STATES:
            raise ControlError(f"trade_state must be one of {', '.join(TRADE_STATES)}")
        created = spec.get("created_at", int(time.time()))
        if (not isinstance(created, (int, float)) or isinstance(created, bool)
                or not 0 < created < 2 ** 33):
            raise ControlError("created_at must be unix seconds (a positive number)")
        total = check_type("total", spec.get("total", 100), INT, 1, 10 ** 12)
        if "mchid" in spec and ("sp_mchid" in spec or "sub_mchid" in spec):
            raise ControlError("give mchid (common mode) or sp_mchid+sub_mchid, not both")
        if "sp_mchid" in spec or "sub_mchid" in spec:
            names = ("sp_mchid", "sub_mchid")
        else:
            names = ("mchid",)
            spec = dict(spec, mchid=spec.get("mchid", MCHID))
        scope = []
        for name in names:
            value = spec.get(name)
            if not isinstance(value, str) or not MCHID_RE.fullmatch(value):
                raise ControlError(f"{name} must be a string of digits")
            scope.append(value)
        with self.lock:
            if txid is None:
                txid = "4200" + time.strftime("%Y%m%d") + rand_digits(16)   # 28 digits
            for other in self.orders:
                if other.transaction_id == txid and not (
                        other.out_trade_no == no and other.scope == tuple(scope)):
                    raise ControlError(f"transaction_id {txid} belongs to another order")
            self.orders = [o for o in self.orders
                           if not (o.out_trade_no == no and o.scope == tuple(scope))]
            order = Order(no, txid, state, created, tuple(scope), total)
            self.orders.append(order)
            return order.control_json()

    def existing_order(self, scope, kind, key):
        """(order, None), or (None, the 404 ORDER_NOT_EXIST answer)."""
        order = self.find_order(scope, kind, key)
        if order is None:
            return None, error_response(404, "ORDER_NOT_EXIST", None, issue=(
                f"no order with {'transaction_id' if kind == 'id' else 'out_trade_no'} "
                f"{key} for {'/'.join(scope)}"))
        return order, None

    def find_order(self, scope, kind, key):
        for o in self.orders:
            if o.scope == scope and (o.transaction_id if kind == "id" else o.out_trade_no) == key:
                return o
        return None

    # -- rate limit ------------------------------------------------------------
    def set_ratelimit(self, spec):
        if not isinstance(spec, dict):
            raise ControlError("body must be a JSON object")
        for key in spec:
            if key not in ("per_second", "include_queries"):
                raise ControlError(f"unknown field {key!r}")
        n = spec.get("per_second")
        include = spec.get("include_queries", False)
        if not isinstance(include, bool):
            raise ControlError("include_queries must be a boolean")
        if n is not None:
            check_type("per_second", n, INT, 0, 10 ** 6)
        with self.lock:
            self.ratelimit = ({"per_second": n, "include_queries": include} if n else None)
            self.admitted.clear()
            return self.ratelimit_json()

    def ratelimit_json(self):
        with self.lock:
            rl = self.ratelimit
            return {"per_second": rl["per_second"] if rl else None,
                    "include_queries": rl["include_queries"] if rl else False,
                    "window": "sliding 1 s"}

    def rate_limited(self, kind):
        """The 429 answer if this request is one too many within the last second.

        A sliding window: the request is refused when per_second requests were already
        admitted in the 1.0 s before it.  Refused requests do not count."""
        with self.lock:
            rl = self.ratelimit
            if rl is None or not (kind == "revoke" or
                                  (kind == "query" and rl["include_queries"])):
                return None
            now = time.monotonic()
            window = self.admitted
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) < rl["per_second"]:
                window.append(now)
                return None
            self.stats["ratelimited"] += 1
            n = rl["per_second"]
        return error_response(429, "RATELIMIT_EXCEEDED", None, issue=(
            f"more than {n} {'revoke' if not rl['include_queries'] else 'revoke and query'} "
            f"requests within one second"), limit=n)

    # -- answers for the replay fault -------------------------------------------
    def remember(self, key, status, data):
        with self.lock:
            self.answers[key] = (status, data)
            self.answers.move_to_end(key)
            while len(self.answers) > REPLAY_SIZE:
                self.answers.popitem(last=False)

    def replayed(self, method, target):
        """A Response that re-sends the last remembered answer, or None."""
        with self.lock:
            old = self.answers.get((method, target.partition("?")[0]))
        if old is None:
            return None
        resp = Response(old[0])
        resp.raw = old[1]
        return resp

    # -- answers that describe something else (binding faults) --------------------
    def misbound(self, name, params, target, resp):
        """The signed 200 query answer of a binding fault, from the real one if any."""
        path, _, query = target.partition("?")
        obj = None
        if resp.status == 200:
            try:
                obj = json.loads(resp.body)
            except ValueError:
                obj = None
        if not isinstance(obj, dict):            # unknown order: invent one for the request
            kind, raw = QUERY_RE.fullmatch(path).groups()
            key = urllib.parse.unquote(raw)
            fields = dict(urllib.parse.parse_qsl(query))
            scope = ((fields.get("sp_mchid", SP_MCHID), fields.get("sub_mchid", SUB_MCHID))
                     if "sp_mchid" in fields or "sub_mchid" in fields
                     else (fields.get("mchid", MCHID),))
            obj = Order(key if kind == "out-trade-no" else "SB" + rand_digits(12),
                        key if kind == "id" else "4200" + rand_digits(24),
                        "SUCCESS", int(time.time()), scope, 100).api_json()
        if name == "wrong_order":
            if params["field"] in ("both", "out_trade_no"):
                obj["out_trade_no"] = other_value(obj.get("out_trade_no"), lambda: "OTHER" + rand_digits(10))
            if params["field"] in ("both", "id"):
                obj["id"] = other_value(obj.get("id"), lambda: "4200" + rand_digits(24))
        elif name == "wrong_merchant":
            field = params["field"] or ("mchid" if "mchid" in obj else "sub_mchid")
            obj[field] = other_value(obj.get(field), lambda: "19" + rand_digits(8))
        else:
            obj.pop("trade_state", None)
        return json_response(200, obj)

    # -- faults --------------------------------------------------------------
    def take_fault(self, method, target):
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, target):
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # -- certificates and signing ----------------------------------------------
    def new_platform_cert(self, expired=False):
        key = new_key()
        now = datetime.datetime.now(UTC).replace(tzinfo=None)
        if expired:
            cert = make_cert("Tenpay.com sandbox platform (expired)", key,
                             (self.creds.ca_cert, self.creds.ca_key),
                             not_before=now - datetime.timedelta(days=730),
                             not_after=now - datetime.timedelta(days=365))
        else:
            cert = make_cert("Tenpay.com sandbox platform", key,
                             (self.creds.ca_cert, self.creds.ca_key))
        pc = PlatformCert(cert, None if expired else key)
        certs_dir = os.path.join(self.dir, "certs")
        os.makedirs(certs_dir, exist_ok=True)
        path = os.path.join(certs_dir, f"platform_cert_{pc.serial}.pem")
        write_file(path, pc.pem)
        return pc, path

    def signer(self):
        with self.lock:
            if self.mode == "public_key":
                return self.creds.pub_key_private, self.creds.pub_key_id
            return self.current.key, self.current.serial

    def sign_headers(self, body, resp):
        """The Wechatpay-* headers for an answer, Wechatpay-Signature last."""
        if resp.unsigned or resp.effect == "missing_signature":
            return []
        key, serial = self.signer()
        ts = int(time.time())
        if resp.effect == "stale_timestamp":
            ts -= resp.params.get("seconds", 600)
        nonce = rand_alnum(32)
        sig = sign_message(key, ts, nonce, body)
        if resp.effect == "flip_signature":
            sig = bytearray(sig)
            sig[len(sig) // 2] ^= 0x01
            sig = bytes(sig)
        sig64 = base64.b64encode(sig).decode()
        if resp.effect == "bad_base64_signature":
            sig64 = "%*not-base64*%" + sig64[14:]
        if resp.effect == "unknown_serial":
            serial = format(new_serial(), "X")
        return [("Wechatpay-Nonce", nonce), ("Wechatpay-Timestamp", str(ts)),
                ("Wechatpay-Serial", serial), ("Wechatpay-Signature-Type", SCHEME),
                ("Wechatpay-Signature", sig64)]

    # -- request verification (protocol.md section 2) ----------------------------
    def authenticate(self, method, target, headers, body):
        """Returns (auth params, None) or (None, error Response)."""
        def sign_error(issue, **more):
            return None, error_response(401, "SIGN_ERROR", None, issue=issue, **more)

        value = headers.get("Authorization")
        if not value:
            return sign_error("the Authorization header is missing")
        scheme, _, rest = value.strip().partition(" ")
        if scheme != SCHEME:
            return sign_error(f"the Authorization scheme must be {SCHEME}, got {scheme!r}")
        params, pos, rest = {}, 0, rest.strip()
        while pos < len(rest):
            m = AUTH_PARAM_RE.match(rest, pos)
            if not m or m.end() == pos:
                return sign_error(f"malformed Authorization parameters at {rest[pos:pos + 24]!r}")
            if m.group(1) in params:
                return sign_error(f"Authorization parameter {m.group(1)} appears twice")
            params[m.group(1)] = m.group(2)
            pos = m.end()
        for name in AUTH_PARAMS:
            if not params.get(name):
                return sign_error(f"Authorization parameter {name} is missing or empty")
        for name in params:
            if name not in AUTH_PARAMS:
                return sign_error(f"unknown Authorization parameter {name}")
        if params["mchid"] not in self.merchants:
            return sign_error(f"mchid {params['mchid']} in the Authorization header is not "
                              f"a merchant of this sandbox ({MCHID} or {SP_MCHID})")
        if params["serial_no"] != self.creds.serial_no:
            return sign_error(f"serial_no {params['serial_no']} is not the merchant "
                              f"certificate serial {self.creds.serial_no}")
        ts, nonce = params["timestamp"], params["nonce_str"]
        message = f"{method}\n{target}\n{ts}\n{nonce}\n".encode() + body + b"\n"
        shown = message.decode("utf-8", "replace")
        if not ts.isdigit() or len(ts) > 12:
            return sign_error(f"timestamp {ts!r} is not unix seconds", string_to_sign=shown)
        skew = int(ts) - int(time.time())
        if abs(skew) > MAX_SKEW:
            return sign_error(f"timestamp {ts} is {abs(skew)} s {'ahead' if skew > 0 else 'old'}"
                              f" (more than {MAX_SKEW} s off)", string_to_sign=shown)
        try:
            signature = base64.b64decode(params["signature"], validate=True)
        except (binascii.Error, ValueError):
            return sign_error("signature is not valid base64", string_to_sign=shown)
        try:
            self.creds.merchant_public.verify(signature, message, padding.PKCS1v15(),
                                              hashes.SHA256())
        except (InvalidSignature, ValueError):
            return sign_error("the signature does not verify with the merchant certificate "
                              f"{self.creds.serial_no} over string_to_sign",
                              string_to_sign=shown)
        # header checks (after the signature: the request is authentic but unacceptable)
        def invalid(issue, field):
            return None, error_response(400, "INVALID_REQUEST", None, issue=issue, field=field)
        if not headers.get("User-Agent", "").strip():
            return invalid("the User-Agent header is missing", "User-Agent")
        if "application/json" not in headers.get("Accept", "").lower():
            return invalid("the Accept header must contain application/json", "Accept")
        if method in ("POST", "PUT", "PATCH"):
            ctype = headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return invalid("the Content-Type header must be application/json", "Content-Type")
        return params, None

    # -- the API ---------------------------------------------------------------
    def handle(self, method, target, headers, body):
        """Verify, take a fault, route.  Returns a Response and the fault used."""
        auth, err = self.authenticate(method, target, headers, body)
        if err:
            err.rejected = True
            return err, None
        limited = self.rate_limited(api_kind(method, target))
        if limited:
            return limited, None
        fault = self.take_fault(method, target)
        name = fault.name if fault else None
        p = fault.params if fault else {}
        route = lambda apply: self.route(method, target, body, auth, apply)
        if name is None:
            return route(True), None
        if name == "delay":
            time.sleep(p["ms"] / 1000.0)
            return route(True), fault
        if name in ("status", "unsigned_error", "apply_then_status"):
            if name == "apply_then_status":
                route(True)
            detail = p["detail"] if p["detail"] is not None else {
                "issue": f"injected by the sandbox fault {name}"}
            resp = json_response(p["status"], {
                "code": p["code"], "message": p["message"] or MESSAGES.get(p["code"], p["code"]),
                "detail": detail})
            resp.unsigned = name == "unsigned_error"
            return resp, fault
        if name in ("drop", "drop_after_apply"):
            if name == "drop_after_apply":
                route(True)
            resp = Response(0)
            resp.drop = True
            return resp, fault
        if name in QUERY_FAULTS:
            resp = self.misbound(name, p, target, route(True))
            resp.effect, resp.params = name, p
            return resp, fault
        if name == "replay":
            resp = route(p["apply"])
            return self.replayed(method, target) or resp, fault   # nothing yet: a normal answer
        resp = route(p.get("apply", True))
        if name == "oversized":
            pad = p["bytes"] - len(b'{"padding":""}')
            resp = Response(200, b'{"padding":"' + b"x" * pad + b'"}')
        elif name == "non_json":
            resp = Response(200, b"<html><head><title>502 Bad Gateway</title></head>"
                                 b"<body>502 Bad Gateway</body></html>", p["content_type"])
        resp.effect, resp.params = name, p
        return resp, fault

    def route(self, method, target, body, auth, apply):
        path, _, query = target.partition("?")
        m = REVOKE_RE.fullmatch(path)
        if m and method == "POST":
            return self.revoke(m.group(1), m.group(2), body, auth, apply)
        m = QUERY_RE.fullmatch(path)
        if m and method == "GET":
            return self.query(m.group(1), m.group(2), query, auth)
        if path == CERTS_PATH and method == "GET":
            return self.certificates(apply)
        return error_response(404, "RESOURCE_NOT_EXISTS", None,
                              issue=f"no API answers {method} {path}")

    @staticmethod
    def path_key(kind, raw, invalid_txid_code):
        """Percent-decode and check a path segment: (key, None) or (None, error)."""
        field = "transaction_id" if kind == "id" else "out_trade_no"
        try:
            key = urllib.parse.unquote(raw, errors="strict")
        except UnicodeDecodeError:
            return None, param_error(field, raw, "not valid percent-encoded UTF-8", "path")
        if kind == "id" and not TXID_RE.fullmatch(key):
            if invalid_txid_code:
                return None, error_response(400, "INVALID_TRANSACTIONID", None, field=field,
                                            value=key, issue="must be 1-32 digits",
                                            location="path")
            return None, param_error(field, key, "must be 1-32 digits", "path")
        if kind != "id" and not OUT_TRADE_NO_RE.fullmatch(key):
            return None, param_error(field, key, "must be 1-32 characters of [0-9A-Za-z_|*@-]",
                                     "path")
        return key, None

    def scope_of(self, fields, auth, location):
        """Check mchid or sp_mchid+sub_mchid: (scope, None) or (None, error)."""
        names = ("sp_mchid", "sub_mchid") if ("sp_mchid" in fields or "sub_mchid" in fields) \
            else ("mchid",)
        if location == "body":
            for key in fields:
                if key not in names:
                    return None, param_error(key, fields[key], "unexpected field (common mode "
                                             "takes only mchid, institutional mode only "
                                             "sp_mchid and sub_mchid)")
        for name in names:
            if name not in fields:
                return None, param_error(name, None, f"{name} is required", location)
            value = fields[name]
            if not isinstance(value, str):
                return None, param_error(name, value, f"{name} must be a string", location)
            if not MCHID_RE.fullmatch(value):
                return None, param_error(name, value, f"{name} must be 1-32 digits", location)
        merchant = fields[names[0]]
        if merchant != auth["mchid"]:
            resp = error_response(400, "INVALID_REQUEST", None, field=names[0], value=merchant,
                                  issue=f"{names[0]} {merchant} differs from mchid "
                                        f"{auth['mchid']} of the Authorization header",
                                  location=location)
            resp.rejected = True
            return None, resp
        return tuple(fields[n] for n in names), None

    def revoke(self, kind, raw_key, body, auth, apply):
        try:
            fields = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return param_error("#", body[:200].decode("utf-8", "replace"),
                               "the request body is not valid JSON")
        if not isinstance(fields, dict):
            return param_error("#", fields, "the request body must be a JSON object")
        scope, err = self.scope_of(fields, auth, "body")
        if err:
            return err
        key, err = self.path_key(kind, raw_key, True)
        if err:
            return err
        with self.lock:
            order, err = self.existing_order(scope, kind, key)
            if err:
                return err
            age = time.time() - order.created_at
            if age > REVOKE_WINDOW:
                return error_response(400, "REVERSE_EXPIRE", None, issue=(
                    f"the order was created {int(age // 86400)} days ago; only orders of the "
                    f"last 7 days can be revoked"), field="create_time",
                    value=rfc3339(order.created_at))
            if order.trade_state == "REFUND":
                return error_response(403, "TRADE_ERROR", None, issue=(
                    "the order has been refunded and cannot be revoked"),
                    field="trade_state", value=order.trade_state)
            refund = None
            if apply:
                if order.trade_state == "SUCCESS":
                    order.trade_state = "REVOKED"
                    order.refunds += 1
                    self.stats["refunds"] += 1
                    refund = order.refund_json()
                elif order.trade_state in ("NOTPAY", "USERPAYING", "PAYERROR"):
                    order.trade_state = "CLOSED"
                order.revokes += 1
        if refund is not None and self.notifier.config["on_revoke"]:
            self.notifier.enqueue("REFUND.SUCCESS", refund)     # sent from its own thread
        return Response(204, b"")

    def pay(self, no, want):
        """POST /orders/{no}/pay: the order becomes SUCCESS, TRANSACTION.SUCCESS is sent."""
        for key, value in want.items():
            if key not in ("mchid", "sp_mchid", "sub_mchid"):
                raise ControlError(f"unknown field {key!r} (give mchid or sp_mchid+sub_mchid)")
            if not isinstance(value, str):
                raise ControlError(f"{key} must be a string")
        with self.lock:
            found = [o for o in self.orders if o.out_trade_no == no
                     and all(o.ids().get(k) == v for k, v in want.items())]
            if not found:
                return 404, {"error": f"no order {no}"}
            order = found[-1]
            if order.trade_state in ("NOTPAY", "USERPAYING", "PAYERROR"):
                order.trade_state = "SUCCESS"
                order.paid_at = int(time.time())
            elif order.trade_state != "SUCCESS":
                return 409, {"error": f"order {no} is {order.trade_state}: only NOTPAY, "
                                      f"USERPAYING, PAYERROR (or SUCCESS again) can be paid"}
            if order.paid_at is None:
                order.paid_at = int(time.time())
            resource, result = order.transaction_json(), order.control_json()
        return 200, {"order": result,
                     "notification": self.notifier.enqueue("TRANSACTION.SUCCESS", resource)}

    def query(self, kind, raw_key, query, auth):
        fields = {}
        for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            if name in fields:
                return param_error(name, value, f"{name} is given twice", "query")
            fields[name] = value
        fields = {k: v for k, v in fields.items() if k in ("mchid", "sp_mchid", "sub_mchid")}
        scope, err = self.scope_of(fields, auth, "query")
        if err:
            return err
        key, err = self.path_key(kind, raw_key, False)
        if err:
            return err
        with self.lock:
            order, err = self.existing_order(scope, kind, key)
            if err:
                return err
            return json_response(200, order.api_json())

    def certificates(self, apply):
        with self.lock:
            certs, key = list(self.platform), self.download_key.encode()
            if apply:
                self.stats["downloads"] += 1
        data = []
        for pc in certs:
            nonce = rand_alnum(12)
            ciphertext = AESGCM(key).encrypt(nonce.encode(), pc.pem, b"certificate")
            data.append({
                "serial_no": pc.serial,
                "effective_time": rfc3339(pc.cert.not_valid_before),
                "expire_time": rfc3339(pc.cert.not_valid_after),
                "encrypt_certificate": {
                    "algorithm": "AEAD_AES_256_GCM", "nonce": nonce,
                    "associated_data": "certificate",
                    "ciphertext": base64.b64encode(ciphertext).decode()}})
        return json_response(200, {"data": data})


# ------------------------------------------------------------------- notifications

def loopback_target(url, ca_file=None):
    """Where a notification may go: an http(s) URL on the loopback interface only."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise ControlError("url must be a non-empty string")
    if not re.fullmatch(r"[!-~]+", url):
        raise ControlError("url must be printable ASCII without spaces (percent-encode the rest)")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ControlError(f"url is not a valid URL ({e})")
    if parts.scheme not in ("http", "https"):
        raise ControlError("url must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ControlError("url must not carry user info")
    host = parts.hostname or ""
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ControlError("url must be on the loopback interface: 127.0.0.0/8, "
                               "localhost or [::1]")
    if ca_file is not None:
        if parts.scheme != "https":
            raise ControlError("ca_file is only for https:// URLs")
        if not isinstance(ca_file, str) or not os.path.isabs(ca_file):
            raise ControlError("ca_file must be an absolute path")
        try:
            ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ControlError(f"ca_file is not a usable CA file ({e})")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc = parts.netloc
    return {"url": url, "scheme": parts.scheme, "host": host,
            "port": port or (443 if parts.scheme == "https" else 80),
            "netloc": netloc, "path": path, "ca_file": ca_file}


class Note:
    """One notification: its body is fixed, each try is signed anew."""

    def __init__(self, nid, event_type, body, plaintext, mutate, signing):
        self.id, self.event_type, self.body, self.plaintext = nid, event_type, body, plaintext
        self.mutate, self.signing = mutate, signing
        self.target, self.timeout, self.retries, self.gen = None, NOTIFY_TIMEOUT, (), 0


class Notifier:
    """WeChat Pay's notifications to the merchant's handler (loopback URLs only)."""

    def __init__(self, sb):
        self.sb = sb
        self.gen = 0                  # bumped by reset: older deliveries stop
        self.stranger = None          # the key of the other_key mutation, made on first use
        self.config = {"on_revoke": False}

    def reset(self):
        with self.sb.lock:
            self.gen += 1
            self.config = {"url": None, "ca_file": None, "on_revoke": False,
                           "retries": list(NOTIFY_RETRIES), "timeout": NOTIFY_TIMEOUT,
                           "target": None}
            self.log = collections.deque(maxlen=LOG_SIZE)

    def config_json(self):
        with self.sb.lock:
            return {k: v for k, v in self.config.items() if k != "target"}

    def configure(self, spec):
        if not isinstance(spec, dict):
            raise ControlError("body must be a JSON object")
        for key in spec:
            if key not in ("url", "ca_file", "on_revoke", "retries", "timeout"):
                raise ControlError(f"unknown field {key!r}")
        url, ca_file = spec.get("url"), spec.get("ca_file")
        target = loopback_target(url, ca_file) if url is not None else None
        if url is None and ca_file is not None:
            raise ControlError("ca_file needs an https url")
        on_revoke = spec.get("on_revoke", False)
        if not isinstance(on_revoke, bool):
            raise ControlError("on_revoke must be a boolean")
        retries = spec.get("retries", list(NOTIFY_RETRIES))
        if (not isinstance(retries, list) or len(retries) > 20 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 60
                for x in retries)):
            raise ControlError("retries must be a list of at most 20 delays of 0-60 seconds")
        timeout = spec.get("timeout", NOTIFY_TIMEOUT)
        if (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                or not 0.05 <= timeout <= 60):
            raise ControlError("timeout must be 0.05-60 seconds")
        with self.sb.lock:
            self.config = {"url": url, "ca_file": ca_file, "on_revoke": on_revoke,
                           "retries": retries, "timeout": timeout, "target": target}
        return self.config_json()

    # -- the wire format ----------------------------------------------------------
    def build(self, event_type, resource, summary=None, original_type=None,
              associated_data=None, nid=None, mutate=None, signing=None):
        """The body WeChat posts, with resource encrypted under the APIv3 key."""
        original_type = original_type or event_type.split(".")[0].lower()
        aad = original_type if associated_data is None else associated_data
        plaintext = (b"<xml><return_code>SUCCESS</return_code></xml>"
                     if mutate == "plaintext_not_json" else utf8_json(resource))
        key = self.sb.creds.apiv3_key
        if mutate == "other_apiv3_key":
            key = other_value(key, lambda: rand_alnum(32))
        nonce = rand_alnum(12)
        sealed = AESGCM(key.encode()).encrypt(nonce.encode(), plaintext, aad.encode())
        if mutate == "truncated_ciphertext":
            sealed = sealed[:len(sealed) // 2]
        if mutate == "wrong_aad":
            aad = "refund" if aad != "refund" else "transaction"
        nid = nid or str(uuid.uuid4())
        body = utf8_json({
            "id": nid, "create_time": rfc3339(time.time()),
            "resource_type": "encrypt-resource", "event_type": event_type,
            "summary": SUMMARIES.get(event_type, event_type) if summary is None else summary,
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_128_GCM" if mutate == "wrong_algorithm" else "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(),
                "associated_data": aad, "nonce": nonce}})
        if mutate == "not_json_body":
            body = body[:-2]                       # the closing braces cut off
        return Note(nid, event_type, body, plaintext, mutate, signing)

    def headers(self, note, netloc=None):
        """The request headers of one try: signed now, with a fresh timestamp and nonce."""
        sb, mutate = self.sb, note.mutate
        signing = "public_key" if mutate == "public_key" else note.signing
        with sb.lock:
            if signing == "public_key":
                key, serial = sb.creds.pub_key_private, sb.creds.pub_key_id
            elif signing == "certificate":
                key, serial = sb.current.key, sb.current.serial
            else:                                   # as the API answers are signed now
                key, serial = sb.signer()
        if mutate == "other_key":
            if self.stranger is None:             # made outside the lock: it takes a while
                stranger = new_key()
                with sb.lock:
                    self.stranger = self.stranger or stranger
            key = self.stranger
        if mutate == "unknown_serial":
            serial = format(new_serial(), "X")
        ts = int(time.time()) - (600 if mutate == "stale" else 0)
        nonce = rand_alnum(32)
        signed = note.body + b"x" if mutate == "bad_signature" else note.body
        sig = base64.b64encode(sign_message(key, ts, nonce, signed)).decode()
        h = [("Host", netloc)] if netloc else []
        if mutate != "no_headers":
            h += [("Wechatpay-Timestamp", str(ts)), ("Wechatpay-Nonce", nonce),
                  ("Wechatpay-Signature", sig), ("Wechatpay-Serial", serial),
                  ("Wechatpay-Signature-Type", SCHEME)]
        h += [("Content-Type", "application/json"), ("Content-Length", str(len(note.body))),
              ("User-Agent", NOTIFY_USER_AGENT)]
        if netloc:
            h.append(("Connection", "close"))
        return h

    def post(self, target, headers, body, timeout):
        """One POST: (status or None, error or None, the answer's first bytes)."""
        sock = None
        try:
            addrs = [ai for ai in socket.getaddrinfo(target["host"], target["port"],
                                                      type=socket.SOCK_STREAM)
                     if ipaddress.ip_address(ai[4][0].split("%")[0]).is_loopback]
            if not addrs:
                return None, f"{target['host']} does not resolve to a loopback address", b""
            error = None
            for family, kind, proto, _, addr in addrs:
                candidate = socket.socket(family, kind, proto)
                try:
                    candidate.settimeout(timeout)
                    candidate.connect(addr)
                    sock = candidate
                    break
                except OSError as e:
                    candidate.close()
                    error = e
            if sock is None:
                raise error
            if target["scheme"] == "https":
                ctx = ssl.create_default_context(
                    cafile=target["ca_file"] or self.sb.creds.file("ca.pem"))
                sock = ctx.wrap_socket(sock, server_hostname=target["host"])
            head = f"POST {target['path']} HTTP/1.1\r\n" + "".join(
                f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
            sock.sendall(head.encode("latin-1") + body)
            resp = http.client.HTTPResponse(sock, method="POST")
            resp.begin()
            answer = resp.read(65536)
            return resp.status, None, answer
        except (OSError, http.client.HTTPException, ValueError) as e:
            return None, f"{type(e).__name__}: {e}", b""
        finally:
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass

    def attempt(self, note, n, headers=None):
        """One try of note, logged and counted.  Returns (headers, status, error, answer)."""
        headers = headers or self.headers(note, note.target["netloc"])
        with self.sb.lock:
            if note.gen == self.gen:
                self.sb.stats["notification_attempts"] += 1
        status, error, answer = self.post(note.target, headers, note.body, note.timeout)
        with self.sb.lock:
            if note.gen == self.gen:
                if status in (200, 204):
                    self.sb.stats["notification_acks"] += 1
                self.log.append({"id": note.id, "event_type": note.event_type, "attempt": n,
                                 "status": status, "error": error, "time": time.time(),
                                 "url": note.target["url"], "mutate": note.mutate})
        return headers, status, error, answer

    def give_up(self, note):
        with self.sb.lock:
            if note.gen == self.gen:
                self.sb.stats["notification_failures"] += 1

    # -- delivery ---------------------------------------------------------------
    def enqueue(self, event_type, resource):
        """Send to the configured URL from a background thread, retrying as WeChat does.

        Returns {id, event_type}, or None when no URL is configured."""
        with self.sb.lock:
            cfg, gen = self.config, self.gen
            if cfg["target"] is None:
                return None
            self.sb.stats["notifications"] += 1
        note = self.build(event_type, resource)
        note.target, note.timeout, note.retries, note.gen = (
            cfg["target"], cfg["timeout"], list(cfg["retries"]), gen)
        threading.Thread(target=self.deliver, args=(note,), daemon=True,
                         name=f"notify-{note.id}").start()
        return {"id": note.id, "event_type": event_type}

    def deliver(self, note):
        for n, delay in enumerate([0] + note.retries, 1):
            if delay:
                time.sleep(delay)
            if note.gen != self.gen:                  # POST /reset: stop quietly
                return
            if self.attempt(note, n)[1] in (200, 204):
                return
        self.give_up(note)

    def send(self, spec):
        """POST /notify/send: one notification built as asked, tried once."""
        if not isinstance(spec, dict):
            raise ControlError("body must be a JSON object")
        known = ("event_type", "resource", "summary", "original_type", "associated_data", "id",
                 "mutate", "signing", "url", "ca_file", "deliver", "wait")
        for key in spec:
            if key not in known:
                raise ControlError(f"unknown field {key!r}; known: {', '.join(known)}")
        event_type = spec.get("event_type")
        if not isinstance(event_type, str) or not 1 <= len(event_type) <= 64:
            raise ControlError("event_type must be a string of 1-64 characters")
        resource = spec.get("resource")
        if not isinstance(resource, dict):
            raise ControlError("resource must be a JSON object (the plaintext)")
        for key in ("summary", "original_type", "associated_data", "id"):
            if spec.get(key) is not None and not isinstance(spec[key], str):
                raise ControlError(f"{key} must be a string")
        if spec.get("id") is not None and not 1 <= len(spec["id"]) <= 64:
            raise ControlError("id must be 1-64 characters")
        mutate = spec.get("mutate")
        if mutate is not None and mutate not in NOTIFY_MUTATIONS:
            raise ControlError(f"unknown mutate {mutate!r}; known: {', '.join(NOTIFY_MUTATIONS)}")
        signing = spec.get("signing")
        if signing not in (None, "certificate", "public_key"):
            raise ControlError('signing must be "certificate" or "public_key"')
        for key in ("deliver", "wait"):
            if not isinstance(spec.get(key, True), bool):
                raise ControlError(f"{key} must be a boolean")
        with self.sb.lock:
            target, timeout, gen = self.config["target"], self.config["timeout"], self.gen
        if spec.get("url") is not None:
            target = loopback_target(spec["url"], spec.get("ca_file"))
        elif spec.get("ca_file") is not None:
            raise ControlError("ca_file goes with url")
        note = self.build(event_type, resource, spec.get("summary"), spec.get("original_type"),
                          spec.get("associated_data"), spec.get("id"), mutate, signing)
        note.target, note.timeout, note.gen = target, timeout, gen
        sent = target is not None and spec.get("deliver", True)
        headers = self.headers(note, target["netloc"] if sent else None)
        status = error = None
        answer = b""
        if sent:
            with self.sb.lock:
                if gen == self.gen:
                    self.sb.stats["notifications"] += 1

            def once():
                result = self.attempt(note, 1, headers)
                if result[1] not in (200, 204):
                    self.give_up(note)
                return result

            if spec.get("wait", True):
                _, status, error, answer = once()
            else:
                threading.Thread(target=once, daemon=True).start()
        return {"id": note.id, "event_type": event_type, "sent": sent,
                "url": target["url"] if sent else None, "status": status, "error": error,
                "answer": answer[:2000].decode("utf-8", "replace"),
                "headers": dict(headers), "body": note.body.decode("utf-8", "replace"),
                "body_base64": base64.b64encode(note.body).decode(),
                "plaintext": note.plaintext.decode("utf-8", "replace")}


# --------------------------------------------------------------------- API server

class ApiHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "wxpay-sandbox"
    sys_version = ""

    def setup(self):
        sb = self.server.sandbox
        sb.count("connections")
        self.tls_ok = False
        self.request.settimeout(10)
        # answers go out in several writes: without this, Nagle's algorithm and
        # the client's delayed ACK stall the first answer of a TLS 1.3 connection ~40 ms
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.request = sb.tls.wrap_socket(self.request, server_side=True)
        except (OSError, ValueError) as e:
            print(f"tls handshake failed from {self.client_address[0]}: {e}", flush=True)
            return
        self.tls_ok = True
        sb.count("handshakes")
        self.timeout = sb.idle_timeout          # idle keep-alive connections close after this
        super().setup()

    def handle(self):
        if not self.tls_ok:
            return
        try:
            super().handle()
        except (OSError, ValueError):
            pass                                # client went away mid-request

    def finish(self):
        if not self.tls_ok:
            return
        try:
            super().finish()
        except (OSError, ValueError):
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.connection.close()

    def log_message(self, fmt, *args):
        print(f"api {self.address_string()}: {fmt % args}", flush=True)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"x", 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        n = int(length)
        if not 0 <= n <= MAX_BODY:
            raise ValueError("bad Content-Length")
        body = self.rfile.read(n)
        if len(body) != n:
            raise ValueError("body shorter than Content-Length")
        return body

    def api(self):
        sb = self.server.sandbox
        started = time.time()
        method, target = self.command, self.path
        headers = {}
        for name, value in self.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        entry = {"method": method, "target": target, "headers": headers, "body": "",
                 "time": started, "status": None, "fault": None, "request_id": None}
        kind = api_kind(method, target)
        with sb.lock:                           # counted on arrival, whatever the outcome
            sb.stats["requests"] += 1
            if kind in ("revoke", "query"):
                sb.stats["revokes" if kind == "revoke" else "queries"] += 1
            sb.log.append(entry)
        try:
            body = self.read_body()
        except (ValueError, OSError) as e:
            resp = error_response(400, "INVALID_REQUEST", None,
                                  issue=f"cannot read the request body: {e}", field="body")
            resp.rejected = True
            self.close_connection = True
            fault = None
        else:
            entry["body"] = body.decode("utf-8", "replace")
            resp, fault = sb.handle(method, target, self.headers, body)
        if resp.rejected:
            sb.count("rejected")
        entry["fault"] = fault.name if fault else None
        honest = fault is None or fault.name == "delay"     # answers replay may copy
        status, request_id = self.send_response_obj(
            resp, (method, target.partition("?")[0]) if honest else None)
        entry["status"], entry["request_id"] = status, request_id
        print(f"api {method} {target} -> {status if status else 'dropped'}"
              f"{' [' + fault.name + ']' if fault else ''} {int((time.time() - started) * 1000)} ms",
              flush=True)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = api

    def send_response_obj(self, resp, key=None):
        """Write the answer, spoiled as resp.effect says.  Returns (status, Request-ID).

        A signed, unspoiled 200 or 204 is remembered under key (method, path) for the
        replay fault; resp.raw (a replay) goes out byte for byte."""
        if resp.drop:
            self.close_connection = True
            return None, None
        sb = self.server.sandbox
        if resp.raw is not None:
            head = resp.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            m = re.search(r"\r\nRequest-ID: ([^\r]*)", head)
            try:
                self.wfile.write(resp.raw)
            except OSError:
                self.close_connection = True
            if "\r\nConnection: close" in head:
                self.close_connection = True
            return resp.status, m.group(1) if m else None
        request_id = "08" + secrets.token_hex(16).upper() + "-0"
        close = self.close_connection or resp.effect in ("connection_close", "truncate")
        try:
            phrase = http.HTTPStatus(resp.status).phrase
        except ValueError:
            phrase = "Unknown"
        head = [f"HTTP/1.1 {resp.status} {phrase}",
                f"Server: {self.server_version}",
                f"Date: {email.utils.formatdate(usegmt=True)}",
                "Connection: close" if close else "Connection: keep-alive"]
        if not close:
            head.append(f"Keep-Alive: timeout={int(sb.idle_timeout)}")
        head.append(f"Request-ID: {request_id}")
        body = resp.body
        if resp.status != 204:
            head.append(f"Content-Type: {resp.content_type}")
            head.append(f"Content-Length: {len(body)}")
        else:
            body = b""
        signature = sb.sign_headers(body, resp)
        head += [f"{name}: {value}" for name, value in signature]
        if resp.effect == "truncate":
            if body:                 # full headers, Content-Length larger than what follows
                data = ("\r\n".join(head) + "\r\n\r\n").encode() + body[:len(body) // 2]
            else:                    # a 204 cut before its Wechatpay-Signature header
                data = ("\r\n".join(head[:-1]) + "\r\n").encode()
        else:
            data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        try:
            self.wfile.write(data)
        except OSError:
            close = True
        self.close_connection = close
        if (key and resp.status in (200, 204) and resp.effect is None and not resp.unsigned
                and signature):
            sb.remember(key, resp.status, data)
        return resp.status, request_id


class QuietErrors:
    """Clients that go away mid-answer are normal here; other errors get a traceback."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            super().handle_error(request, client_address)


class ApiServer(QuietErrors, socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    block_on_close = False


# ----------------------------------------------------------------- control server

class ControlHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "wxpay-sandbox-control"
    sys_version = ""
    timeout = 60

    def log_message(self, fmt, *args):
        pass

    def dispatch(self):
        sb = self.server.sandbox
        path, _, query = self.path.partition("?")
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                self.close_connection = True
                raise ControlError("bad Content-Length")
            raw = self.rfile.read(length) if length else b""
            if self.command in ("POST", "PUT") and raw.strip():
                try:
                    data = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    raise ControlError("the body is not valid JSON")
            else:
                data = {}
            status, obj = self.route(sb, self.command, path, query, data)
        except ControlError as e:
            status, obj = 400, {"error": str(e)}
        except Exception as e:       # never let bad input kill the server
            traceback.print_exc()
            status, obj = 500, {"error": f"internal error: {e!r}"}
        body = json.dumps(obj, indent=1).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = dispatch

    @staticmethod
    def obj(data):
        if not isinstance(data, dict):
            raise ControlError("the body must be a JSON object")
        return data

    def route(self, sb, method, path, query, data):
        path = path.rstrip("/") or "/"
        if method == "GET" and path == "/stats":
            with sb.lock:
                return 200, dict(sb.stats)
        if method == "GET" and path == "/config":
            return 200, sb.config
        if method == "POST" and path == "/reset":
            sb.reset()
            return 200, {"ok": True}
        if method == "POST" and path == "/orders":
            return 200, sb.add_order(self.obj(data))
        if method == "POST" and path.startswith("/orders/") and path.endswith("/pay"):
            no = urllib.parse.unquote(path[len("/orders/"):-len("/pay")])
            want = dict(urllib.parse.parse_qsl(query))
            want.update(self.obj(data))
            return sb.pay(no, want)
        if path == "/notify" and method in ("GET", "POST"):
            if method == "POST":
                return 200, sb.notifier.configure(self.obj(data))
            return 200, sb.notifier.config_json()
        if method == "POST" and path == "/notify/send":
            return 200, sb.notifier.send(self.obj(data))
        if method == "GET" and path == "/notify/log":
            with sb.lock:
                return 200, list(sb.notifier.log)
        if method == "GET" and path == "/orders":
            with sb.lock:
                return 200, [o.control_json() for o in sb.orders]
        if method == "GET" and path.startswith("/orders/"):
            no = urllib.parse.unquote(path[len("/orders/"):])
            want = dict(urllib.parse.parse_qsl(query))
            with sb.lock:
                found = [o for o in sb.orders if o.out_trade_no == no
                         and all(o.ids().get(k) == v for k, v in want.items())]
                if not found:
                    return 404, {"error": f"no order {no}"}
                return 200, found[-1].control_json()
        if method == "GET" and path == "/requests":
            with sb.lock:
                return 200, [dict(e) for e in sb.log]
        if path == "/faults":
            if method == "POST":
                fault = Fault(self.obj(data))
                with sb.lock:
                    sb.faults.append(fault)
                return 200, {"queued": fault.as_json()}
            if method == "GET":
                with sb.lock:
                    return 200, [f.as_json() for f in sb.faults]
            if method == "DELETE":
                with sb.lock:
                    sb.faults = []
                return 200, {"ok": True}
        if method == "POST" and path == "/rotate":
            pc, cert_path = sb.new_platform_cert()
            with sb.lock:
                sb.platform.append(pc)
                sb.current = pc
            return 200, {"serial": pc.serial, "platform_cert": cert_path}
        if method == "POST" and path == "/signing":
            mode = self.obj(data).get("mode")
            if mode not in ("certificate", "public_key"):
                raise ControlError('mode must be "certificate" or "public_key"')
            with sb.lock:
                sb.mode = mode
            return 200, {"mode": mode, "serial": sb.signer()[1]}
        if method == "GET" and path == "/signing":
            return 200, {"mode": sb.mode, "serial": sb.signer()[1]}
        if method == "POST" and path == "/certificates/extra":
            if self.obj(data).get("kind") != "expired":
                raise ControlError('kind must be "expired"')
            pc, cert_path = sb.new_platform_cert(expired=True)
            with sb.lock:
                sb.platform.append(pc)
            return 200, {"serial": pc.serial, "platform_cert": cert_path}
        if method == "GET" and path == "/certificates":
            with sb.lock:
                return 200, [{"serial": pc.serial, "current": pc is sb.current,
                              "expire_time": rfc3339(pc.cert.not_valid_after)}
                             for pc in sb.platform]
        if path == "/ratelimit" and method in ("GET", "POST"):
            if method == "POST":
                return 200, sb.set_ratelimit(self.obj(data))
            return 200, sb.ratelimit_json()
        if method == "POST" and path == "/apiv3_key":
            key = self.obj(data).get("key", 0)
            if key is None:
                key = sb.creds.apiv3_key
            if not isinstance(key, str) or len(key) != 32 or not key.isascii():
                raise ControlError("key must be 32 ASCII characters (or null to restore)")
            with sb.lock:
                sb.download_key = key
            return 200, {"ok": True}
        return 404, {"error": f"no control endpoint {method} {path}"}


class ControlServer(QuietErrors, socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


# ------------------------------------------------------------------------- main

def write_json_atomic(path, obj, private=False):
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600 if private else 0o644)
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def client_configs(cfg):
    """The option tables wxpay.new(path) takes as is: {file name: options}."""
    common = {"serial_no": cfg["serial_no"], "private_key": cfg["private_key"],
              "platform_certs": [cfg["platform_cert"]], "apiv3_key": cfg["apiv3_key"],
              "base_url": cfg["base_url"], "ca_file": cfg["ca_file"]}
    return {"client.json": {"mchid": cfg["mchid"], **common},
            "client-institutional.json": {"sp_mchid": cfg["sp_mchid"],
                                          "sub_mchid": cfg["sub_mchid"], **common}}


def main(argv=None):
    ap = argparse.ArgumentParser(description="WeChat Pay Global API v3 sandbox")
    ap.add_argument("--dir", required=True, help="state directory (credentials, sandbox.json)")
    ap.add_argument("--port", type=int, default=0, help="HTTPS API port (0: pick a free one)")
    ap.add_argument("--control-port", type=int, default=0, help="control port (0: free one)")
    ap.add_argument("--idle-timeout", type=float, default=8.0,
                    help="seconds an idle keep-alive connection is kept (default 8)")
    args = ap.parse_args(argv)

    directory = os.path.abspath(args.dir)
    os.makedirs(directory, exist_ok=True)
    creds = Creds.load_or_create(os.path.join(directory, "creds"))
    sb = Sandbox(directory, creds, args.idle_timeout)

    api = ApiServer(("127.0.0.1", args.port), ApiHandler)
    api.sandbox = sb
    control = ControlServer(("127.0.0.1", args.control_port), ControlHandler)
    control.sandbox = sb
    for srv in (api, control):
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    f = creds.file
    sb.config = {
        "pid": os.getpid(),
        "base_url": f"https://localhost:{api.server_address[1]}",
        "control_url": f"http://127.0.0.1:{control.server_address[1]}",
        "ca_file": f("ca.pem"),
        "mchid": MCHID, "sp_mchid": SP_MCHID, "sub_mchid": SUB_MCHID,
        "serial_no": creds.serial_no,
        "private_key": f("apiclient_key.pem"),
        "private_key_pkcs1": f("apiclient_key_pkcs1.pem"),
        "merchant_cert": f("apiclient_cert.pem"),
        "platform_cert": f("platform_cert.pem"),
        "platform_serial": serial_hex(creds.platform_cert),
        "public_key": f("pub_key.pem"),
        "public_key_id": creds.pub_key_id,
        "apiv3_key": creds.apiv3_key,
        "dir": directory,
        "client_config": os.path.join(directory, "client.json"),
        "client_config_institutional": os.path.join(directory, "client-institutional.json"),
    }
    json_path = os.path.join(directory, "sandbox.json")
    for name, options in client_configs(sb.config).items():     # they hold the APIv3 key
        write_json_atomic(os.path.join(directory, name), options, private=True)

    def stop(signum, frame):
        try:
            with open(json_path) as fh:
                if json.load(fh).get("pid") == os.getpid():
                    os.unlink(json_path)
        except (OSError, ValueError):
            pass
        print(f"sandbox: stopped by signal {signum}", flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    write_json_atomic(json_path, sb.config)
    print(f"sandbox: ready pid {os.getpid()} api {sb.config['base_url']} "
          f"control {sb.config['control_url']}", flush=True)
    print(f"sandbox: CA {sb.config['ca_file']}  credentials {json_path}", flush=True)
    print(f"sandbox: client config {sb.config['client_config']} "
          f"(and {sb.config['client_config_institutional']})", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
