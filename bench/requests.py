"""The cost of one request (issue 11): each common request against a trivial FastAPI endpoint
on the same uvicorn (uvloop + httptools), in the same run, interleaved, driven by wrk.

    .venv/bin/python bench/requests.py [--backend sqlite|postgresql|both] [--seconds 5]
                                       [--rounds 2] [--connections 64] [--workers 1]
                                       [--only me,wallet,...]
    .venv/bin/python bench/requests.py --rss 100000,1000000 [--backend postgresql]

Rows (``--only`` picks some):
  unknown   GET /api/no-such-thing: middleware + router + problem+json 404, no database
  healthz   GET /healthz
  me        GET /api/me with a user token
  wallet    GET /api/wallet with a user token
  replay    POST /api/purchases re-sending a completed Idempotency-Key (201, byte-identical
            body, ``Idempotent-Replayed: true``: checked before measuring)
Baseline: ``GET /ping`` returning a constant, in a FastAPI app of its own run by the same
uvicorn (same loop and parser, one process), measured in alternating rounds with the
subject (wrk ``-c`` connections, ``-t 2`` threads, the same duration each side).
ratio = subject req/s / baseline req/s. p50/p99 are wrk's latency percentiles of the
subject (the worst round). Every response is checked: wrk's non-2xx count must equal the
expected one (all of them for ``unknown``, none for the rest) or the row fails.

``--rss N,M``: one worker serves a mix (per 100 requests: 2 purchases with a new key,
38 replays, 30 wallet reads, 30 ``/api/me``) and its resident set size is read from
/proc after N and after M requests in total.

Needs ``wrk`` (``apt-get install -y wrk``). The server runs with request logs on (the
default), as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from _support import (
    Buyer,
    backends,
    bench_database,
    console,
    expect,
    free_port,
    http_client,
    open_database,
    payguard_server,
    seed_buyers,
    seed_product,
    table,
)

ROWS = ("unknown", "healthz", "me", "wallet", "replay")

PING_APP = textwrap.dedent("""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port={port}, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)
""")


@dataclass
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if not done:
        raise RuntimeError(f"could not parse wrk output:\n{out}")
    seconds = float(done.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[done.group(3)]
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     out)
    pct = dict(re.findall(r"^\s*(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, flags=re.M))
    if "50" not in pct or "99" not in pct:
        raise RuntimeError(f"no latency percentiles in wrk output:\n{out}")
    return WrkResult(
        requests=int(done.group(1)), seconds=seconds,
        non_2xx=int(non.group(1)) if non else 0,
        errors=sum(int(g) for g in errs.groups()) if errs else 0,
        p50_ms=_ms(pct["50"]), p99_ms=_ms(pct["99"]),
    )


def lua_script(directory: Path, *, method: str = "GET", headers: dict[str, str] | None = None,
               body: str | None = None) -> Path:
    lines = [f'wrk.method = "{method}"']
    for name, value in (headers or {}).items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(body)}")
    path = directory / f"req-{uuid.uuid4().hex[:8]}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def wrk(url: str, *, seconds: float, connections: int, script: Path | None) -> WrkResult:
    cmd = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds:g}s", "--latency",
           "--timeout", "30s"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


@dataclass
class Target:
    name: str
    url: str
    script: Path | None
    expect_non_2xx: bool = False  # every response is a 4xx (the unknown path)


async def prepare(url: str, workdir: Path, buyer: Buyer, product_id: str
                  ) -> dict[str, Target]:
    """The requests, each checked once by hand before wrk fires it."""
    user = {"Authorization": f"Bearer {buyer.token}"}
    key = str(uuid.uuid4())
    body = json.dumps({"product_id": product_id, "quantity": 1})
    async with http_client(url, 4) as client:
        first = expect(await client.post("/api/purchases", content=body,
                                         headers={**user, "Idempotency-Key": key,
                                                  "content-type": "application/json"}), 201)
        again = expect(await client.post("/api/purchases", content=body,
                                         headers={**user, "Idempotency-Key": key,
                                                  "content-type": "application/json"}), 201)
        if again.content != first.content or again.headers.get("idempotent-replayed") != "true":
            raise RuntimeError("the replay is not byte-identical with Idempotent-Replayed: true")
        expect(await client.get("/api/no-such-thing"), 404)
        expect(await client.get("/api/me", headers=user), 200)
        expect(await client.get("/api/wallet", headers=user), 200)
        expect(await client.get("/healthz"), 200)
    auth = {"Authorization": f"Bearer {buyer.token}"}
    return {
        "unknown": Target("unknown", f"{url}/api/no-such-thing", None, True),
        "healthz": Target("healthz", f"{url}/healthz", None),
        "me": Target("me", f"{url}/api/me", lua_script(workdir, headers=auth)),
        "wallet": Target("wallet", f"{url}/api/wallet", lua_script(workdir, headers=auth)),
        "replay": Target("replay", f"{url}/api/purchases", lua_script(
            workdir, method="POST", body=body,
            headers={**auth, "Idempotency-Key": key, "Content-Type": "application/json"})),
    }


def check(target: Target, result: WrkResult) -> str:
    problems = []
    if result.errors:
        problems.append(f"{result.errors} socket errors")
    wanted = result.requests if target.expect_non_2xx else 0
    if result.non_2xx != wanted:
        problems.append(f"{result.non_2xx} non-2xx of {result.requests}")
    return "; ".join(problems) or "ok"


async def measure_backend(backend: str, args: argparse.Namespace, ping_url: str,
                          workdir: Path) -> list[list[object]]:
    rows: list[list[object]] = []
    async with bench_database(backend) as db:
        database = open_database(db)
        settings = db.settings()
        buyers = await seed_buyers(database, settings, 1, balance=1_000_000)
        product_id = await seed_product(database, settings, price=1, items=4096)
        await database.dispose()
        async with payguard_server(db, workers=args.workers,
                                   env={"PAYGUARD_LOG_REQUESTS": "true"}) as (url, _admin):
            targets = await prepare(url, workdir, buyers[0], product_id)
            for name in args.only:
                target = targets[name]
                wrk(target.url, seconds=1, connections=args.connections,
                    script=target.script)  # warm-up: pools, caches
                subject, base = [], []
                for r in range(args.rounds):
                    order = ("ping", "subject") if r % 2 == 0 else ("subject", "ping")
                    for side in order:
                        if side == "ping":
                            base.append(wrk(ping_url, seconds=args.seconds,
                                            connections=args.connections, script=None))
                        else:
                            res = wrk(target.url, seconds=args.seconds,
                                      connections=args.connections, script=target.script)
                            subject.append(res)
                sub_rate = sum(r.requests for r in subject) / sum(r.seconds for r in subject)
                base_rate = sum(r.requests for r in base) / sum(r.seconds for r in base)
                notes = "; ".join(sorted({check(target, r) for r in subject}))
                rows.append([backend, name, f"{args.workers}", round(sub_rate),
                             round(base_rate), sub_rate / base_rate,
                             max(r.p50_ms for r in subject), max(r.p99_ms for r in subject),
                             notes])
                console.print(f"  {backend} {name}: {sub_rate:.0f}/s vs ping "
                              f"{base_rate:.0f}/s ({notes})")
    return rows


MIX_LUA = """
local n = 0
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  n = 0
end
function request()
  n = n + 1
  local slot = n % 100
  if slot < 2 then
    return wrk.format("POST", "/api/purchases", {
      ["Authorization"] = "Bearer TOKEN", ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = "mix-" .. tid .. "-" .. n .. "-RUN"}, BODY)
  elseif slot < 40 then
    return wrk.format("POST", "/api/purchases", {
      ["Authorization"] = "Bearer TOKEN", ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = "REPLAYKEY"}, BODY)
  elseif slot < 70 then
    return wrk.format("GET", "/api/wallet", {["Authorization"] = "Bearer TOKEN"})
  else
    return wrk.format("GET", "/api/me", {["Authorization"] = "Bearer TOKEN"})
  end
end
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def server_pid(server_port: int) -> int:
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{server_port}"], capture_output=True,
                         text=True, check=True).stdout
    m = re.search(r"pid=(\d+)", out)
    if not m:
        raise RuntimeError(f"no listener on {server_port}: {out}")
    return int(m.group(1))


async def measure_rss(backend: str, args: argparse.Namespace, workdir: Path
                      ) -> list[list[object]]:
    checkpoints = sorted(int(x) for x in args.rss.split(","))
    rows: list[list[object]] = []
    async with bench_database(backend) as db:
        database = open_database(db)
        settings = db.settings()
        buyer = (await seed_buyers(database, settings, 1, balance=1_000_000_000))[0]
        # 2 % of the biggest checkpoint are purchases: one stock item each.
        product_id = await seed_product(database, settings, price=1,
                                        items=checkpoints[-1] // 50 + 1000)
        await database.dispose()
        port = free_port()
        async with payguard_server(db, port=port,
                                   env={"PAYGUARD_LOG_REQUESTS": "true"}) as (url, _admin):
            pid = server_pid(port)
            body = json.dumps({"product_id": product_id, "quantity": 1})
            key = str(uuid.uuid4())
            async with http_client(url, 2) as client:
                expect(await client.post("/api/purchases", content=body, headers={
                    "Authorization": f"Bearer {buyer.token}", "Idempotency-Key": key,
                    "content-type": "application/json"}), 201)
            rss_start = rss_kib(pid)
            done = 0
            for target in checkpoints:
                script = MIX_LUA.replace("TOKEN", buyer.token).replace(
                    "REPLAYKEY", key).replace("BODY", json.dumps(body)).replace(
                    "RUN", uuid.uuid4().hex[:6])
                path = workdir / f"mix-{target}.lua"
                path.write_text(script)
                while done < target:
                    # Short wrk runs until the checkpoint: wrk has no request-count limit.
                    res = wrk(url, seconds=args.seconds, connections=args.connections,
                              script=path)
                    if res.errors or res.non_2xx:
                        raise RuntimeError(f"mix run failed: {res}")
                    done += res.requests
                rss = rss_kib(pid)
                rows.append([backend, f"{done:,}", f"{rss_start / 1024:.1f}",
                             f"{rss / 1024:.1f}"])
                console.print(f"  {backend} after {done:,} requests: RSS {rss / 1024:.1f} MiB")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--only", default=",".join(ROWS))
    parser.add_argument("--rss", default=None,
                        help="request counts at which to read one worker's RSS")
    args = parser.parse_args()
    args.only = [r for r in args.only.split(",") if r]
    if unknown := set(args.only) - set(ROWS):
        parser.error(f"unknown rows {sorted(unknown)}")
    if shutil.which("wrk") is None:
        console.print("[red]wrk is not installed: apt-get install -y wrk[/red]")
        sys.exit(2)
    asyncio.run(run(args))


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="payguard-requests-") as tmp:
        workdir = Path(tmp)
        if args.rss:
            rows: list[list[object]] = []
            for backend in backends(args.backend):
                rows += await measure_rss(backend, args, workdir)
            table("RSS of one worker (mixed requests)",
                  ["backend", "requests", "RSS at start MiB", "RSS MiB"], rows)
            return
        ping_url = f"http://127.0.0.1:{free_port()}"
        ping = start_ping(workdir, ping_url)
        try:
            await wait_ping(ping, ping_url)
            rows = []
            for backend in backends(args.backend):
                rows += await measure_backend(backend, args, f"{ping_url}/ping", workdir)
        finally:
            ping.terminate()
            ping.wait(timeout=10)
        table(f"requests at {args.connections} connections vs GET /ping on the same uvicorn "
              f"({args.rounds} rounds of {args.seconds:g} s each side)",
              ["backend", "request", "workers", "req/s", "ping req/s", "ratio", "p50 ms",
               "p99 ms", "check"], rows)


def start_ping(workdir: Path, url: str) -> subprocess.Popen[bytes]:
    """The trivial endpoint, in a process of its own (not a payguard process)."""
    script = workdir / "ping_app.py"
    script.write_text(PING_APP.replace("{port}", url.rsplit(":", 1)[1]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGUARD_")}
    return subprocess.Popen([sys.executable, str(script)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_ping(proc: subprocess.Popen[bytes], url: str) -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError("the ping app exited")
            try:
                if (await client.get(f"{url}/ping")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the ping app did not start")


if __name__ == "__main__":
    main()
