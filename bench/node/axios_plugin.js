'use strict';
// wechatpay-axios-plugin: its own chained v3 client, pointed at the sandbox
// (baseURL), with the sandbox platform certificate as `certs`: the library
// signs every request and verifies every 2xx answer (responseVerifier).
const fs = require('fs');
const https = require('https');
const { run, peerRequire } = require('./common');

run('wechatpay-axios-plugin', (cfg) => {
  const { Wechatpay } = peerRequire('wechatpay-axios-plugin');
  const wxpay = new Wechatpay({
    mchid: cfg.mchid,
    serial: cfg.serial_no,
    privateKey: fs.readFileSync(cfg.private_key),
    certs: { [cfg.platform_serial]: fs.readFileSync(cfg.platform_cert) },
    baseURL: `${cfg.base_url}/`,
    // one keep-alive connection, as the other clients use
    httpsAgent: new https.Agent({ keepAlive: true, maxSockets: 1 }),
  });
  const reverse = wxpay.v3.global.micropay.transactions['out-trade-no']['{out_trade_no}'].reverse;
  return {
    verifies: true,
    notes: 'library signs and verifies (responseVerifier on every 2xx)',
    async revoke(outTradeNo) {
      const res = await reverse.post({ mchid: cfg.mchid }, { out_trade_no: outTradeNo });
      if (res.status !== 204) throw new Error(`revoke answered ${res.status}`);
      return true;
    },
  };
});
