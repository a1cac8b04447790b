#!/usr/bin/env python3
"""Memory with many concurrent open streams (DESIGN §9: ≤ 100 MB RSS with 1,000 streams).

Starts the built-in mock (slow streams: 4 characters every 50 ms) and Jimini with the shipped
packs on loopback, opens N concurrent streaming chat requests with PII in them, samples Jimini's
RSS while every stream is open, checks every stream completed with [DONE] and no PII, and prints
the figures. Bounded: each stream lasts ~6 s; the whole run stops by itself.
"""
import asyncio, json, os, socket, subprocess, sys, tempfile, time, pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = os.environ.get("JIMINI_BIN", str(ROOT / "target" / "release" / "jimini"))
N = int(os.environ.get("STREAMS", "1000"))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(p):
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", p), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {p} never opened")

def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

async def one_stream(port, i, done):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    text = f"Stream {i}: please email jane.doe{i}@example.com about the quarterly plan and the migration of the reporting pipeline, then summarise risks. " * 2
    body = json.dumps({"model": "gpt-4o", "stream": True,
                       "messages": [{"role": "user", "content": text}]}).encode()
    w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await w.drain()
    data = await r.read()
    w.close()
    ok = b"data: [DONE]" in data and f"jane.doe{i}@example.com".encode() not in data
    done.append(ok)

async def main(port, pid):
    done, peak = [], 0.0
    # Streams open over ~1.5 s (each lasts ~6 s, so all N are open together): N simultaneous
    # SYNs overflowed the mock's accept queue and a few upstream connections were reset.
    tasks = []
    for i in range(N):
        tasks.append(asyncio.create_task(one_stream(port, i, done)))
        if i % 50 == 49:
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.075)
    start = time.time()
    while not all(t.done() for t in tasks):
        peak = max(peak, rss_mb(pid))
        await asyncio.sleep(0.1)
        if time.time() - start > 120:
            break
    await asyncio.gather(*tasks, return_exceptions=True)
    return done, peak

def run():
    tmp = tempfile.mkdtemp()
    mp, pp, ap = free_port(), free_port(), free_port()
    mock = subprocess.Popen([BIN, "mock-upstream", "--listen", f"127.0.0.1:{mp}",
                             "--chunk-chars", "4", "--chunk-delay-ms", "50"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cfg = pathlib.Path(tmp) / "j.yaml"
    cfg.write_text(f"listen: 127.0.0.1:{pp}\nadmin: {{listen: 127.0.0.1:{ap}}}\n"
                   f"upstreams:\n  - name: mock\n    base_url: http://127.0.0.1:{mp}\n"
                   f"rules: {{dir: {ROOT / 'rules'}}}\naudit: {{dir: {tmp}/audit}}\n"
                   "telemetry: {log_level: warn}\n")
    jim = subprocess.Popen([BIN, "serve", "-c", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(mp); wait_port(pp)
        idle = rss_mb(jim.pid)
        done, peak = asyncio.run(main(pp, jim.pid))
        ok = sum(done)
        print(f"streams: {N}, completed clean: {ok}, RSS idle {idle:.1f} MB, peak {peak:.1f} MB "
              f"(target ≤ 100 MB)")
        return 0 if ok == N else 1
    finally:
        for p in (jim, mock):
            p.terminate()
            try: p.wait(5)
            except subprocess.TimeoutExpired: p.kill()

if __name__ == "__main__":
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sys.exit(run())
