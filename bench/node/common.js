'use strict';
// Shared by the peer benches: load the sandbox config, seed the order, read
// counters, time N sequential revokes and print one JSON line.
const fs = require('fs');
const http = require('http');
const path = require('path');

const PEERS = process.env.BENCH_PEERS_DIR || path.join(__dirname, '..', 'peers');

function peerRequire(name) {
  return require(require.resolve(name, { paths: [path.join(PEERS, 'node_modules')] }));
}

function control(cfg, method, p, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const req = http.request(cfg.control_url + p, {
      method, headers: data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {},
      agent: false,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        if (res.statusCode !== 200) return reject(new Error(`control ${p}: ${res.statusCode} ${text}`));
        return resolve(JSON.parse(text));
      });
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

function quantile(sorted, q) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

function vmHWM() {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : null;
}

// run(name, setup) : setup(cfg) -> { revoke: async (out_trade_no) -> true (throws on failure),
//                                    verifies: bool, notes: string }
async function run(name, setup) {
  const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const n = Number(process.argv[3] || 2000);
  const orderNo = `BP${name.replace(/[^A-Za-z0-9]/g, '')}${Date.now() % 1e9}`;
  const out = { peer: name, n, ok: false };
  try {
    await control(cfg, 'POST', '/orders', { out_trade_no: orderNo, mchid: cfg.mchid });
    const before = await control(cfg, 'GET', '/stats');
    const client = setup(cfg);
    out.verifies = client.verifies;
    out.notes = client.notes;
    await client.revoke(orderNo); // warm-up: connection + TLS handshake, order becomes REVOKED
    const lat = new Array(n);
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i += 1) {
      const s = process.hrtime.bigint();
      await client.revoke(orderNo);
      lat[i] = Number(process.hrtime.bigint() - s) / 1e6;
    }
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(c0);
    const after = await control(cfg, 'GET', '/stats');
    const order = await control(cfg, 'GET', `/orders/${orderNo}`);
    // proof of verification: a 204 whose signature was tampered with must fail
    await control(cfg, 'POST', '/faults', { fault: 'flip_signature', count: 1, apply: false });
    try {
      await client.revoke(orderNo);
      out.rejects_forged = false;
    } catch (e) {
      out.rejects_forged = true;
    }
    await control(cfg, 'DELETE', '/faults');
    lat.sort((a, b) => a - b);
    Object.assign(out, {
      ok: true,
      calls_per_s: n / wall,
      wall_s: wall,
      cpu_ms_per_call: (cpu.user + cpu.system) / 1000 / n,
      user_ms_per_call: cpu.user / 1000 / n,
      sys_ms_per_call: cpu.system / 1000 / n,
      p50_ms: quantile(lat, 0.5),
      p99_ms: quantile(lat, 0.99),
      handshakes: after.handshakes - before.handshakes,
      connections: after.connections - before.connections,
      requests: after.requests - before.requests,
      rejected: after.rejected - before.rejected,
      trade_state: order.trade_state,
      peak_rss_kb: vmHWM(),
    });
  } catch (e) {
    out.error = String((e && e.stack) || e).split('\n').slice(0, 3).join(' | ');
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

module.exports = { run, peerRequire };
