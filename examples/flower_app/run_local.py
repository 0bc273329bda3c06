"""Run the app on loopback with Flower's own deployment processes.

Starts a SuperLink and two SuperNodes (one per data partition) on free local ports,
submits the app with ``flwr run``, waits for it to finish, and stops the processes.
Writes ``traffic.json`` and ``global.twr`` into ``--out-dir``. Usage::

    python examples/flower_app/run_local.py --rounds 3 --out-dir /tmp/twflower
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--codec", default="shuffle+zstd")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--timeout", type=float, default=240)
    args = ap.parse_args(argv)
    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="twflower-home-"))
    http = free_port()  # SuperLink's Fleet, Control and Runtime HTTP APIs
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{http}"\ninsecure = true\n'
    )
    env = dict(os.environ, FLWR_HOME=str(home), FLWR_DISABLE_UPDATE_CHECK="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, cmd: list[str]) -> None:
        f = open(logs / f"{name}.log", "wb")
        procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env))

    try:
        start(
            "superlink",
            [
                tool("flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--port",
                str(http),
                "--health-server-address",
                f"127.0.0.1:{free_port()}",
            ],
        )
        wait_port(http, 60)
        for pid in range(2):
            start(
                f"supernode{pid}",
                [
                    tool("flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{http}",
                    "--port",
                    str(free_port()),
                    "--node-config",
                    f"partition-id={pid} num-partitions=2",
                    "--health-server-address",
                    f"127.0.0.1:{free_port()}",
                ],
            )
        run = subprocess.run(
            [
                tool("flwr"),
                "run",
                str(APP),
                "local",
                "--stream",
                "--run-config",
                f"num-server-rounds={args.rounds} codec='{args.codec}' out-dir='{out}'",
            ],
            env=env,
            capture_output=True,
            timeout=args.timeout,
        )
        (logs / "flwr-run.log").write_bytes(run.stdout + run.stderr)
        traffic = out / "traffic.json"
        if run.returncode != 0 or not traffic.exists():
            sys.stderr.write(run.stdout.decode(errors="replace")[-4000:])
            sys.stderr.write(run.stderr.decode(errors="replace")[-4000:])
            return 1
        rounds = json.loads(traffic.read_text())
        for r in rounds:
            ratio = (r["bytes_up"] + r["bytes_down"]) / (
                r["default_bytes_up"] + r["default_bytes_down"]
            )
            print(
                f"round {r['round']}: {r['clients']} clients, up {r['bytes_up']:,} B, "
                f"down {r['bytes_down']:,} B ({ratio:.2f}x Flower's default), "
                f"aggregate {r['aggregate_seconds'] * 1e3:.1f} ms, loss {r['train_loss']:.3f}"
            )
        return 0 if len(rounds) == args.rounds else 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
