--- The wxpay command's help texts: `wxpay --help` and `wxpay COMMAND --help`
-- (docs/cli.md is the long form; spec/docs_spec.lua keeps the two in step).
-- Must not: hold logic; only text.
local M = {}

M.USAGE = [[
Usage: wxpay [OPTIONS] COMMAND [COMMAND OPTIONS]

Revoke, query and cancel WeChat Pay Global quick-pay orders (API v3) by hand.

Commands:
  revoke         send one Revoke Order call, then show the order's state
  query          show an order's state
  cancel         drive an order whose payment failed or is unknown to REVOKED
                 or CLOSED: waits, retries and confirms (like client:cancel)
  certificates   list the platform certificates/keys answers are verified with
  config         check the configuration and show where each value came from
  notification   verify and decrypt a notification WeChat Pay posted to a handler
                 (--headers FILE --body FILE, or the raw HTTP request on stdin)
  help [COMMAND] this text, or a command's

Order (revoke, query, cancel):
  --out-trade-no NO       the merchant's order number
  --transaction-id ID     WeChat Pay's order number
  --sub-mchid ID          sub-merchant (institutional mode)
cancel only:
  --paid-at UNIX          when the payment call was made (Unix seconds): the
                          revoke is not sent sooner than 15 s after it
  --deadline-ms N         give up after N ms (default 60000)

Configuration (flags override the environment, which overrides the file):
  --config FILE           JSON or Lua file (default: $WXPAY_CONFIG, else
                          ~/.config/wxpay/config when it exists)
  --mchid ID              WXPAY_MCHID          merchant id (common mode)
  --sp-mchid ID           WXPAY_SP_MCHID       institution's merchant id
                          WXPAY_SUB_MCHID      default sub-merchant
  --serial-no HEX         WXPAY_SERIAL_NO      merchant API certificate serial
  --private-key FILE      WXPAY_PRIVATE_KEY    apiclient_key.pem
  --platform-cert FILE    WXPAY_PLATFORM_CERT  repeatable (env: FILE:FILE...)
  --public-key FILE       WXPAY_PUBLIC_KEY     WeChat Pay public key
  --public-key-id ID      WXPAY_PUBLIC_KEY_ID  its PUB_KEY_ID_...
  --apiv3-key-file FILE   WXPAY_APIV3_KEY      (the variable holds the key)
  --base-url URL          WXPAY_BASE_URL       default https://apihk.mch.weixin.qq.com
  --ca-file FILE          WXPAY_CA_FILE        CA bundle for the server
  --timeout-ms N          WXPAY_TIMEOUT_MS     whole-request limit
  --cache-dir DIR         WXPAY_CACHE_DIR      where downloaded platform certificates
                          are kept (encrypted, as WeChat sent them) for the next
                          run; default $XDG_CACHE_HOME/wxpay, else ~/.cache/wxpay
  --no-cache              neither read nor keep downloaded certificates

Output:
  --json                  one JSON object on stdout, also on failure
  -v, --verbose           log every request on stderr
  -h, --help              this help; 'wxpay COMMAND --help' for a command
  -V, --version           print the version

Sandbox (from a source checkout only):
  --sandbox               run against a local sandbox started for this command
  --seed STATE            with --sandbox: first create the order in STATE
                          (SUCCESS NOTPAY USERPAYING PAYERROR CLOSED REVOKED REFUND)

Order states: REVOKED = the customer was refunded, CLOSED = never charged.
Exit status: 0 done, 1 API or network failure, 2 usage or configuration error.
]]

local ORDER_USAGE = "(--out-trade-no NO | --transaction-id ID) [--sub-mchid ID]"
local GLOBAL_NOTE = "\nConfiguration, --json, --sandbox and the other global options: see 'wxpay --help'.\n"

M.COMMAND_HELP = {
  revoke = "Usage: wxpay revoke " .. ORDER_USAGE .. [[


Sends one Revoke Order call (POST .../reverse).  When WeChat Pay accepts it
(HTTP 204) the order becomes REVOKED if it was paid (the customer is refunded)
or CLOSED if it was not (never charged); wxpay then queries the order to show
which.  Only orders of the last 7 days can be revoked, and not sooner than 15 s
after the payment call: 'wxpay cancel --paid-at' waits and retries for you.
]] .. GLOBAL_NOTE,
  query = "Usage: wxpay query " .. ORDER_USAGE .. [[


Shows the order's trade_state (SUCCESS, NOTPAY, USERPAYING, PAYERROR, CLOSED,
REVOKED, REFUND), what it means for the customer, the amount and the ids.
]] .. GLOBAL_NOTE,
  cancel = "Usage: wxpay cancel " .. ORDER_USAGE .. [[ [--paid-at UNIX] [--deadline-ms N]

Drives an order whose payment failed or whose outcome is unknown to a final
state, following WeChat Pay's guidance: not sooner than 15 s after --paid-at
(without it wxpay does not wait), never past the 7-day window, retrying
retryable failures with backoff and querying to confirm.  Progress goes to
stderr, one line per attempt.  Ends with REVOKED (the customer was refunded)
or CLOSED (never charged).

  --paid-at UNIX      when the payment call was made (Unix seconds)
  --deadline-ms N     give up after N milliseconds (default 60000)
]] .. GLOBAL_NOTE,
  certificates = [[
Usage: wxpay certificates

Lists the keys answers are verified with: serial, source (config, download or
public_key) and validity.  With an APIv3 key, downloads the platform
certificates first.
]] .. GLOBAL_NOTE,
  config = [[
Usage: wxpay config

Checks the configuration without sending anything (exit 2 when wxpay.new
refuses it) and shows each value and where it came from (flag, environment,
file).  The APIv3 key and private key contents are never shown.
]] .. GLOBAL_NOTE,
}
M.COMMAND_HELP.notification = [[
Usage: wxpay notification --headers FILE --body FILE
       wxpay notification < request.txt

Checks a notification exactly as client:notification does (the Wechatpay-*
headers, the timestamp within 300 s of now, the signing key, the RSA
signature over the exact body bytes, then AES-256-GCM with the APIv3 key) and
prints the event and its decrypted resource.  Needs apiv3_key in the
configuration.  Exit 1 when it does not verify or decrypt (the message says
which check failed).  A notification more than 300 s old no longer verifies.

  --headers FILE   the request's headers, one "Name: value" a line (a request
                   line such as "POST /notify HTTP/1.1" is skipped)
  --body FILE      the request body, byte for byte
  (neither)        stdin holds the whole request: request line, headers, an
                   empty line, the body (Content-Length bytes of it when given)
]] .. GLOBAL_NOTE
M.COMMAND_HELP.help = M.USAGE

return M
