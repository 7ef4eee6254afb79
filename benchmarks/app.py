"""``python tools/benchmark.py app``: a bounded load test of ``d2im app`` on localhost.

Starts ``d2im app`` (the bundled model by default) as a subprocess on a free port of 127.0.0.1, then:
a baseline in the same run, one client sending ``--baseline`` requests one after another; then
``--clients`` concurrent clients sending ``--requests`` requests in all, every ``--bad-every``-th a
corrupt image. Reports requests per second, p50/p95 latency (client side, of the 200s) and the
server's own time (``X-Server-Time``), both as ratios against the one-client baseline; counts per status;
and the server's resident memory after start, after the baseline and after each ``--rounds`` of the
load (the result store keeps the last 8 results, so memory grows until it is full). Every response
is checked: a 200 must be a GLB (glTF 2.0 header, its declared length, a mesh trimesh loads with
faces), a 503 or 4xx must be a JSON ``{"error": ...}``; anything else is a failure. Bounded: a fixed
count of requests, each with a timeout; the server is stopped at the end.
"""

from __future__ import annotations

import io
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLE = REPOSITORY / "examples" / "03001627_syn00005.png"
HELP = "load test of d2im app on localhost: req/s, p50/p95, statuses, memory"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TBB_NUM_THREADS")


def configure(parser) -> None:
    parser.add_argument("--model", default=None, help="SavedModel folder (default: the bundled model)")
    parser.add_argument("--image", type=Path, default=EXAMPLE, help="the image every good request sends")
    parser.add_argument("--resolution", default="128", choices=("64", "128", "256"))
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--requests", type=int, default=64, help="requests of the load phase in all (default 64)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="the load's requests in this many rounds, the server's memory read after each "
        "(default 2: the second shows whether it stays flat once the result store is full)",
    )
    parser.add_argument("--baseline", type=int, default=4, help="requests of the one-client baseline (default 4)")
    parser.add_argument(
        "--bad-every",
        type=int,
        default=8,
        help="every n-th request of the load sends a corrupt image (0: none; default 8)",
    )
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers (default 1)")
    parser.add_argument("--queue", type=int, default=16, help="the server's --queue (default 16)")
    parser.add_argument("--queue-timeout", type=float, default=60.0, help="the server's --queue-timeout")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a client waits for one response")


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(args) -> tuple[subprocess.Popen, str]:
    """``d2im app`` on a free port; returns the process and its URL once it serves."""
    command = [
        sys.executable,
        "-m",
        "d2im_tf.cli",
        "app",
        "--port",
        "0",
        "--workers",
        str(args.workers),
        "--queue",
        str(args.queue),
        "--queue-timeout",
        str(args.queue_timeout),
    ]
    if args.model:
        command += ["--model", args.model]
    environment = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES}
    environment["PYTHONPATH"] = str(REPOSITORY) + os.pathsep + environment.get("PYTHONPATH", "")
    server = subprocess.Popen(command, cwd=REPOSITORY, env=environment, stdout=subprocess.PIPE, text=True)
    found = {}

    def read():  # the URL line, then keep draining stdout
        for line in server.stdout:
            if " on http://" in line and "url" not in found:
                found["url"] = line.split(" on ", 1)[1].split("/ ", 1)[0].rstrip("/")

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 600
    while "url" not in found:
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError("d2im app did not start")
        time.sleep(0.1)
    return server, found["url"]


def check_response(status: int, headers: dict, body: bytes) -> str | None:
    """None if the response is a valid GLB (200) or a clean JSON error (4xx, 503); else what is wrong."""
    import trimesh

    if status == 200:
        if headers.get("content-type") != "model/gltf-binary" or len(body) < 12:
            return f"200 without a GLB ({headers.get('content-type')})"
        magic, version, length = struct.unpack_from("<4sII", body)
        if (magic, version, length) != (b"glTF", 2, len(body)):
            return "200 with a malformed GLB header"
        if len(trimesh.load(io.BytesIO(body), file_type="glb", force="mesh").faces) == 0:
            return "200 with an empty mesh"
        return None
    if status == 503 or 400 <= status < 500:
        try:
            message = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            return f"{status} without a JSON error"
        return None if isinstance(message, str) and "\n" not in message else f"{status} with a bad message"
    return f"status {status}"


def send(url: str, data: bytes, resolution: str, timeout: float) -> dict:
    from d2im_tf.app.client import multipart, request

    body, content_type = multipart({"image": ("image.png", data), "resolution": resolution})
    start = time.perf_counter()
    try:
        status, headers, payload = request(
            f"{url}/api/reconstruct", "POST", body, {"Content-Type": content_type}, timeout=timeout
        )
    except OSError as error:
        return {"status": None, "seconds": time.perf_counter() - start, "problem": f"connection: {error}"}
    seconds = time.perf_counter() - start
    server = float(headers["x-server-time"]) if status == 200 else None
    return {
        "status": status,
        "seconds": seconds,
        "server_seconds": server,
        "problem": check_response(status, headers, payload),
    }


def percentile(values, fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(responses: list, wall: float) -> dict:
    ok = [r["seconds"] for r in responses if r["status"] == 200]
    server = [r["server_seconds"] for r in responses if r["status"] == 200]
    statuses = {}
    for response in responses:
        statuses[str(response["status"])] = statuses.get(str(response["status"]), 0) + 1
    return {
        "requests": len(responses),
        "seconds": wall,
        "requests_per_second": len(responses) / wall,
        "glb_per_second": len(ok) / wall,
        "p50": percentile(ok, 0.5),
        "p95": percentile(ok, 0.95),
        "server_p50": statistics.median(server) if server else None,
        "statuses": statuses,
        "failures": sorted({r["problem"] for r in responses if r["problem"]}),
    }


def _split(total: int, parts: int) -> list[int]:
    return [total * (i + 1) // parts - total * i // parts for i in range(parts)]


def load_round(url: str, good: bytes, corrupt: bytes, args, count: int, first: int) -> list:
    """``count`` requests (numbered from ``first``; every ``--bad-every``-th corrupt) sent by
    ``--clients`` concurrent clients; their responses."""
    counter = iter(range(first, first + count))
    lock = threading.Lock()
    responses = []

    def client():
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            bad = args.bad_every > 0 and index % args.bad_every == args.bad_every - 1
            response = send(url, corrupt if bad else good, args.resolution, args.timeout)
            response["bad"] = bad
            with lock:
                responses.append(response)

    with ThreadPoolExecutor(args.clients) as pool:
        for future in [pool.submit(client) for _ in range(args.clients)]:
            future.result()
    return responses


def run(args) -> dict:
    from d2im_tf.app.client import request
    from d2im_tf.errors import UserError

    if not args.image.is_file():
        raise UserError(f"{args.image}: image not found")
    if min(args.clients, args.requests, args.baseline, args.rounds) < 1:
        raise UserError("--clients, --requests, --rounds and --baseline must be at least 1")
    good = args.image.read_bytes()
    corrupt = good[:200] + bytes(4096)
    server, url = start_server(args)
    try:
        memory = {"started": rss_mb(server.pid)}
        load_before = os.getloadavg()
        start = time.perf_counter()
        baseline = [send(url, good, args.resolution, args.timeout) for _ in range(args.baseline)]
        baseline_summary = summary(baseline, time.perf_counter() - start)
        memory["after_baseline"] = rss_mb(server.pid)
        responses = []
        start = time.perf_counter()
        for round_index, count in enumerate(_split(args.requests, args.rounds)):
            responses += load_round(url, good, corrupt, args, count, args.requests * round_index // args.rounds)
            memory[f"after_round_{round_index + 1}"] = rss_mb(server.pid)
        load_summary = summary(responses, time.perf_counter() - start)
        wrong = [r for r in responses if r["bad"] and r["status"] != 400] + [
            r for r in responses if not r["bad"] and r["status"] not in (200, 503)
        ]
        load_summary["unexpected"] = len(wrong)
        health = json.loads(request(f"{url}/api/health")[2])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    ratios = {
        "throughput_vs_baseline": load_summary["glb_per_second"] / baseline_summary["glb_per_second"],
        "p50_vs_baseline": _ratio(load_summary["p50"], baseline_summary["p50"]),
        "p95_vs_baseline": _ratio(load_summary["p95"], baseline_summary["p50"]),
        "server_p50_vs_baseline": _ratio(load_summary["server_p50"], baseline_summary["server_p50"]),
    }
    return {
        "model": args.model or "bundled",
        "resolution": int(args.resolution),
        "clients": args.clients,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "baseline": baseline_summary,
        "load": load_summary,
        "ratios": ratios,
        "server_rss_mb": memory,
        "health_after": health["status"],
    }


def _ratio(a, b):
    return None if a is None or not b else a / b


def show(result: dict) -> None:
    base, load, ratios = result["baseline"], result["load"], result["ratios"]
    print(
        f"d2im app at {result['resolution']}³, {result['workers']} worker(s), {result['cpus']} CPUs; load average "
        f"before {result['load_average_before'][0]:.1f}, after {result['load_average_after'][0]:.1f}"
    )
    print(
        f"baseline, 1 client, {base['requests']} requests: {base['glb_per_second']:.2f} GLB/s, "
        f"p50 {base['p50']:.2f} s (server {base['server_p50']:.2f} s)"
    )
    p50 = "-" if load["p50"] is None else f"{load['p50']:.2f} s"
    p95 = "-" if load["p95"] is None else f"{load['p95']:.2f} s"
    print(
        f"load, {result['clients']} clients, {load['requests']} requests: {load['requests_per_second']:.2f} req/s, "
        f"{load['glb_per_second']:.2f} GLB/s ({ratios['throughput_vs_baseline']:.2f}× the baseline), "
        f"p50 {p50}, p95 {p95}"
    )
    print(
        f"statuses {load['statuses']}; unexpected {load['unexpected']}; failures {load['failures'] or 'none'}; "
        f"health after: {result['health_after']}"
    )
    memory = result["server_rss_mb"]
    print("server RSS: " + ", ".join(f"{value:.0f} MB {name.replace('_', ' ')}" for name, value in memory.items()))
