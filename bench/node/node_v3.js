'use strict';
// wechatpay-node-v3: its methods hard-code the mainland host, so this drives
// the same pieces its own methods use (close(), refunds(), …):
//   authorization = pay.buildAuthorization('POST', url, params)
//   headers = pay.getHeaders(authorization, {'Content-Type': 'application/json'})
//   pay.httpService.post(url, params, headers)
// with the Global path and the sandbox base URL. buildAuthorization strips only
// "https://api.mch.weixin.qq.com" from the URL, so it is given the path itself.
//
// Verification: its HTTP piece (PayRequest.post) returns {status, data} and
// drops the response headers, so the library never verifies an answer by
// itself. It does have pay.verifySign({timestamp, nonce, body, serial,
// signature}); to use it we install, through its createHttp() hook, a copy of
// PayRequest.post that also returns the headers and the raw text, and call
// verifySign on every answer.
const fs = require('fs');
const https = require('https');
const { run, peerRequire } = require('./common');

run('wechatpay-node-v3', (cfg) => {
  const Pay = peerRequire('wechatpay-node-v3');
  const superagent = peerRequire('superagent');
  const pay = new Pay({
    appid: 'wx0000000000000000',
    mchid: cfg.mchid,
    serial_no: cfg.serial_no,
    publicKey: fs.readFileSync(cfg.merchant_cert),
    privateKey: fs.readFileSync(cfg.private_key),
    userAgent: 'bench/wechatpay-node-v3',
  });
  // the platform key its verifySign looks up by Wechatpay-Serial
  Pay.certificates = { [cfg.platform_serial]: fs.readFileSync(cfg.platform_cert, 'utf8') };
  // PayRequest uses superagent without an agent: a new TCP+TLS connection per
  // call. BENCH_NODEV3_AGENT=default keeps that; otherwise one keep-alive
  // connection (superagent's own .agent()), like the other clients.
  const defaultAgent = process.env.BENCH_NODEV3_AGENT === 'default';
  const agent = defaultAgent ? undefined : new https.Agent({ keepAlive: true, maxSockets: 1 });
  pay.createHttp({
    async post(url, params, headers) {
      try {
        let req = superagent.post(url);
        if (agent) req = req.agent(agent);
        const r = await req.send(params).set(headers);
        return { status: r.status, data: r.body, text: r.text || '', headers: r.headers };
      } catch (e) {
        return { status: e.status, error: e.response && e.response.text };
      }
    },
  });
  return {
    verifies: true,
    notes: `its HTTP piece drops response headers: verifySign() called on every answer through a createHttp() `
      + `service (superagent${defaultAgent ? ', its default: a new connection per call' : ' + keep-alive agent'})`,
    async revoke(outTradeNo) {
      const target = `/v3/global/micropay/transactions/out-trade-no/${outTradeNo}/reverse`;
      const params = { mchid: cfg.mchid };
      const authorization = pay.buildAuthorization('POST', target, params);
      const headers = pay.getHeaders(authorization, { 'Content-Type': 'application/json' });
      const res = await pay.httpService.post(cfg.base_url + target, params, headers);
      if (res.status !== 204) throw new Error(`revoke answered ${res.status}: ${res.error}`);
      const h = res.headers;
      const ok = await pay.verifySign({
        timestamp: h['wechatpay-timestamp'], nonce: h['wechatpay-nonce'], body: res.text,
        serial: h['wechatpay-serial'], signature: h['wechatpay-signature'],
      });
      if (!ok) throw new Error('the answer signature does not verify');
      return true;
    },
  };
});
