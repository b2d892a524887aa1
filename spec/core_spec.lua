-- wxpay.core on its own: keys, signatures (checked against the openssl CLI),
-- base64, nonces, AES-256-GCM, object lifetime.
local core = require "wxpay.core"
local H = require "helpers"

local tmp = os.tmpname()
os.remove(tmp)
local dir = tmp .. ".d"

local function openssl(args)
  local _, ok = H.sh("openssl " .. args .. " 2>&1")
  return ok
end

describe("wxpay.core", function()
  setup(function()
    assert(os.execute("mkdir -p " .. dir) ~= false)
    assert(openssl(("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s/key8.pem"):format(dir)))
    assert(openssl(("pkey -in %s/key8.pem -traditional -out %s/key1.pem"):format(dir, dir)))
    assert(openssl(("pkey -in %s/key8.pem -pubout -out %s/pub.pem"):format(dir, dir)))
    assert(openssl(("rsa -in %s/key8.pem -RSAPublicKey_out -out %s/pub1.pem"):format(dir, dir)))
    assert(openssl(("req -new -x509 -key %s/key8.pem -subj /CN=wxpay-test -days 30 "
      .. "-set_serial 0x5157F09EFDC096DE15EBE81A47057A7232F1B8E1 -out %s/cert.pem"):format(dir, dir)))
    assert(openssl(("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s/ec.pem"):format(dir)))
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  describe("keys", function()
    it("loads PKCS#8 and PKCS#1 private keys alike", function()
      local k8 = assert(core.load_private_key(H.read(dir .. "/key8.pem")))
      local k1 = assert(core.load_private_key(H.read(dir .. "/key1.pem")))
      assert.matches("BEGIN RSA PRIVATE KEY", H.read(dir .. "/key1.pem"))
      -- PKCS#1 v1.5 is deterministic: same key, same signature
      assert.equal(k8:sign("abc"), k1:sign("abc"))
    end)

    it("refuses a certificate, a public key, garbage and an EC key as private key", function()
      local k, err = core.load_private_key(H.read(dir .. "/cert.pem"))
      assert.is_nil(k); assert.matches("certificate", err)
      k, err = core.load_private_key(H.read(dir .. "/pub.pem"))
      assert.is_nil(k); assert.matches("public key", err)
      k, err = core.load_private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
      assert.is_nil(k); assert.is_string(err)
      k, err = core.load_private_key("hello")
      assert.is_nil(k); assert.matches("PEM", err)
      k, err = core.load_private_key(H.read(dir .. "/ec.pem"))
      assert.is_nil(k); assert.matches("RSA", err)
    end)

    it("reads a certificate's serial (uppercase hex) and validity", function()
      local pub, info = assert(core.load_certificate(H.read(dir .. "/cert.pem")))
      assert.equal("5157F09EFDC096DE15EBE81A47057A7232F1B8E1", info.serial_no)
      assert.truthy(info.not_before <= os.time() + 60)
      assert.truthy(math.abs(info.not_after - info.not_before - 30 * 86400) < 5)
      assert.matches("wxpay.PublicKey{RSA%-2048}", tostring(pub))
    end)

    it("loads SPKI and PKCS#1 public keys, refuses a private key as public key", function()
      assert(core.load_public_key(H.read(dir .. "/pub.pem")))
      assert(core.load_public_key(H.read(dir .. "/pub1.pem")))
      local k, err = core.load_public_key(H.read(dir .. "/key8.pem"))
      assert.is_nil(k); assert.matches("private key", err)
      k, err = core.load_certificate(H.read(dir .. "/pub.pem"))
      assert.is_nil(k); assert.matches("not a certificate", err)
    end)
  end)

  describe("RSA-SHA256 against the openssl CLI", function()
    it("a signature made by the core verifies with openssl dgst -verify", function()
      local key = assert(core.load_private_key(H.read(dir .. "/key8.pem")))
      local msg = "POST\n/v3/global/micropay/transactions/out-trade-no/A1/reverse\n1554208460\nNONCE\n{}\n"
      H.write(dir .. "/msg", msg)
      H.write(dir .. "/sig.b64", key:sign(msg))
      assert(openssl(("base64 -d -A -in %s/sig.b64 -out %s/sig.bin"):format(dir, dir)))
      assert.is_true(openssl(("dgst -sha256 -verify %s/pub.pem -signature %s/sig.bin %s/msg")
        :format(dir, dir, dir)))
      H.write(dir .. "/msg", msg .. "x")
      assert.is_false(openssl(("dgst -sha256 -verify %s/pub.pem -signature %s/sig.bin %s/msg")
        :format(dir, dir, dir)))
    end)

    it("a signature made by openssl dgst -sign verifies in the core", function()
      local msg = "1554209980\nc5ac7061fccab6bf3e254dcf98995b8c\n\n"
      H.write(dir .. "/msg2", msg)
      assert(openssl(("dgst -sha256 -sign %s/key8.pem -out %s/sig2.bin %s/msg2"):format(dir, dir, dir)))
      local sig = core.b64encode(H.read(dir .. "/sig2.bin"))
      local pub = assert(core.load_public_key(H.read(dir .. "/pub.pem")))
      assert.is_true(pub:verify(msg, sig))
      assert.is_true(pub:verify_response("1554209980", "c5ac7061fccab6bf3e254dcf98995b8c", "", sig))
      local cert = assert(core.load_certificate(H.read(dir .. "/cert.pem")))
      assert.is_true(cert:verify(msg, sig))
      assert.is_false(pub:verify(msg .. " ", sig))
      assert.is_false(pub:verify_response("1554209981", "c5ac7061fccab6bf3e254dcf98995b8c", "", sig))
    end)

    it("treats a signature that is not base64 or has the wrong length as invalid, not an error", function()
      local pub = assert(core.load_public_key(H.read(dir .. "/pub.pem")))
      for _, bad in ipairs { "", "!!!!", "abc", "AAAA", ("A"):rep(344), ("A"):rep(10000), "\0\0\0\0" } do
        assert.is_false(pub:verify("x", bad))
      end
    end)

    it("builds the Authorization header over the exact string to sign", function()
      local key = assert(core.load_private_key(H.read(dir .. "/key8.pem")))
      local pub = assert(core.load_public_key(H.read(dir .. "/pub.pem")))
      local body = '{"mchid":"1900000109"}'
      local target = "/v3/global/micropay/transactions/out-trade-no/A1/reverse"
      local auth, ts, nonce = key:authorization("1900000109", "5157F09E", "POST", target, body)
      assert.matches('^WECHATPAY2%-SHA256%-RSA2048 mchid="1900000109",nonce_str="%w+",'
        .. 'signature="[%w+/=]+",timestamp="%d+",serial_no="5157F09E"$', auth)
      assert.equal(32, #nonce)
      assert.truthy(math.abs(tonumber(ts) - os.time()) <= 2)
      local sig = auth:match('signature="([^"]+)"')
      assert.is_true(pub:verify(("POST\n%s\n%s\n%s\n%s\n"):format(target, ts, nonce, body), sig))
      -- fixed timestamp and nonce reproduce the same header
      local a1 = key:authorization("1", "AB", "GET", "/v3/x?y=1", "", 1554208460, "n1")
      local a2 = key:authorization("1", "AB", "GET", "/v3/x?y=1", "", 1554208460, "n1")
      assert.equal(a1, a2)
      assert.is_true(pub:verify("GET\n/v3/x?y=1\n1554208460\nn1\n\n", a1:match('signature="([^"]+)"')))
    end)

    it("refuses header-breaking values in the Authorization parameters", function()
      local key = assert(core.load_private_key(H.read(dir .. "/key8.pem")))
      assert.has_error(function() key:authorization('1"x', "AB", "GET", "/v3/x", "") end)
      assert.has_error(function() key:authorization("1", "A\r\nB", "GET", "/v3/x", "") end)
      assert.has_error(function() key:authorization("1", "AB", "GET", "/v3/x\r\nX: y", "") end)
    end)
  end)

  describe("base64 and nonces", function()
    it("round-trips every length and rejects non-canonical input", function()
      for n = 0, 70 do
        local s = {}
        for i = 1, n do s[i] = string.char((i * 37 + n) % 256) end
        s = table.concat(s)
        assert.equal(s, core.b64decode(core.b64encode(s)))
      end
      assert.equal("aGVsbG8=", core.b64encode("hello"))
      for _, bad in ipairs { "aGVsbG8", "aGVsbG9=", "aGV sbG8=", "aGVsbG8==", "====", "a===", "aGVs\nbG8=" } do
        assert.is_nil(core.b64decode(bad), bad)
      end
    end)

    it("makes 32 alphanumeric nonces that do not repeat", function()
      local seen = {}
      for _ = 1, 2000 do
        local n = core.nonce()
        assert.matches("^%w+$", n)
        assert.equal(32, #n)
        assert.is_nil(seen[n])
        seen[n] = true
      end
    end)
  end)

  describe("AES-256-GCM", function()
    -- vector made with python3-cryptography: AESGCM(key).encrypt(nonce, pt, aad)
    it("decrypts what the sandbox-style encryption produced, and refuses tampering", function()
      local py = [[
import base64,sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key=b"0123456789abcdef0123456789abcdef"
print(base64.b64encode(AESGCM(key).encrypt(b"abcdefghijkl", b"-----BEGIN CERTIFICATE-----", b"certificate")).decode())
]]
      H.write(dir .. "/gcm.py", py)
      local ct = H.sh("/usr/bin/python3 " .. dir .. "/gcm.py"):gsub("%s", "")
      local key = "0123456789abcdef0123456789abcdef"
      assert.equal("-----BEGIN CERTIFICATE-----", core.aes_gcm_decrypt(key, "abcdefghijkl", "certificate", ct))
      local pt, err = core.aes_gcm_decrypt(key, "abcdefghijkl", "certificatE", ct)
      assert.is_nil(pt); assert.matches("authentication failed", err)
      pt, err = core.aes_gcm_decrypt(("x"):rep(32), "abcdefghijkl", "certificate", ct)
      assert.is_nil(pt); assert.matches("wrong APIv3 key", err)
      pt, err = core.aes_gcm_decrypt("short", "abcdefghijkl", "certificate", ct)
      assert.is_nil(pt); assert.matches("32 bytes", err)
      pt = core.aes_gcm_decrypt(key, "abcdefghijkl", "certificate", "not base64!")
      assert.is_nil(pt)
      local raw = core.b64decode(ct)
      local flipped = raw:sub(1, 3) .. string.char((raw:byte(4) + 1) % 256) .. raw:sub(5)
      assert.is_nil(core.aes_gcm_decrypt(key, "abcdefghijkl", "certificate", core.b64encode(flipped)))
      assert.is_nil(core.aes_gcm_decrypt(key, "abcdefghijkl", "certificate", core.b64encode("short")))
    end)
  end)

  describe("objects", function()
    it("close is idempotent, later use raises, tostring never shows key material", function()
      local key = assert(core.load_private_key(H.read(dir .. "/key8.pem")))
      local s = tostring(key)
      assert.matches("^wxpay.PrivateKey{RSA%-2048}$", s)
      key:close()
      key:close()
      assert.matches("closed", tostring(key))
      assert.has_error(function() key:sign("x") end, nil)
      local ok, err = pcall(key.sign, key, "x")
      assert.is_false(ok); assert.matches("closed", err)
      local sess = core.session { timeout_ms = 1000 }
      assert.matches("open", tostring(sess))
      sess:close(); sess:close()
      assert.has_error(function() sess:request("GET", "https://localhost:1/", {}) end)
    end)

    it("sets __name on every class and locks the metatables", function()
      local key = assert(core.load_private_key(H.read(dir .. "/key8.pem")))
      assert.equal("locked", getmetatable(key))
      assert.equal("wxpay.Session", tostring(core.session {}):match("^[%w.]+"))
    end)

    it("maps a refused connection to NETWORK_ERROR, not sent", function()
      local sess = core.session { timeout_ms = 2000, connect_timeout_ms = 1000 }
      -- port 1 on loopback: nothing listens there
      local st, code, msg, sent = sess:request("GET", "https://127.0.0.1:1/v3/x", {})
      assert.is_nil(st)
      assert.equal("NETWORK_ERROR", code)
      assert.is_string(msg)
      assert.is_false(sent)
      sess:close()
    end)
  end)
end)
