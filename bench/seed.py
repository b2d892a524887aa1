#!/usr/bin/python3
"""Seeds paid orders PREFIX1..PREFIXCOUNT into a sandbox (bench step 6).

    bench/seed.py CONTROL_URL PREFIX COUNT [MCHID]

One control request per order (the control endpoint takes one order per POST),
four at a time. Prints the number of orders created; exits 1 if any failed.
"""
import concurrent.futures
import json
import sys
import urllib.parse
import http.client


def main():
    url, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    mchid = sys.argv[4] if len(sys.argv) > 4 else None
    u = urllib.parse.urlsplit(url)

    def seed(i):
        body = {"out_trade_no": f"{prefix}{i}"}
        if mchid:
            body["mchid"] = mchid
        for _ in range(5):
            try:
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
                c.request("POST", "/orders", json.dumps(body), {"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return True
            except OSError:
                pass
        return False

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ok = sum(pool.map(seed, range(1, count + 1)))
    print(ok)
    sys.exit(0 if ok == count else 1)


if __name__ == "__main__":
    main()
