"""The CPython side of the multiprocess benchmark harness (stdlib only).

The harness (bench/src/main.rs) runs this once per round and cell:

    python3 cpython_side.py version
    python3 cpython_side.py process_start_join {fork|forkserver|spawn} ITERATIONS [--warmup W]
    python3 cpython_side.py pipe_pingpong {typed|bytes} ITERATIONS [--warmup W]
                            [--cpu PARENT_CPU] [--child-cpu CHILD_CPU]

and reads one line of JSON from stdout: {"value": <microseconds per operation>, ...}.
Times are taken with time.perf_counter around the measured loop only: interpreter start-up,
imports and warm-up (which starts the fork server) are excluded.
"""

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time


def noop():
    pass


def _pin(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def echo_typed(conn, n, cpu):
    _pin(cpu)
    for _ in range(n):
        conn.send(conn.recv())
    conn.close()


def echo_bytes(conn, n, cpu):
    _pin(cpu)
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())
    conn.close()


def process_start_join(method, iterations, warmup, cpu):
    """Process(target=noop).start() + join(), per process, on one start method (pinned to
    `cpu` with the children it forks, if given)."""
    _pin(cpu)
    ctx = multiprocessing.get_context(method)

    def one():
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"child exited with {p.exitcode}")

    for _ in range(warmup):  # starts the fork server, warms caches
        one()
    t0 = time.perf_counter()
    for _ in range(iterations):
        one()
    return (time.perf_counter() - t0) / iterations * 1e6, method


def pipe_pingpong(kind, iterations, warmup, cpu, child_cpu):
    """Round trips of a small integer (send/recv) or of 4 bytes (send_bytes/recv_bytes) with
    an echo child over a duplex multiprocessing.Pipe()."""
    _pin(cpu)
    ctx = multiprocessing.get_context("fork")  # how the echo child starts is not measured
    parent_end, child_end = ctx.Pipe()
    target = echo_typed if kind == "typed" else echo_bytes
    p = ctx.Process(target=target, args=(child_end, warmup + iterations, child_cpu))
    p.start()
    child_end.close()

    if kind == "typed":
        def exchange(i):
            parent_end.send(i)
            if parent_end.recv() != i:
                raise SystemExit("echo mismatch")
    else:
        def exchange(i):
            out = i.to_bytes(4, "little")
            parent_end.send_bytes(out)
            if parent_end.recv_bytes() != out:
                raise SystemExit("echo mismatch")

    for i in range(warmup):
        exchange(i)
    t0 = time.perf_counter()
    for i in range(iterations):
        exchange(i)
    elapsed = time.perf_counter() - t0
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"echo child exited with {p.exitcode}")
    return elapsed / iterations * 1e6, "fork"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload")
    parser.add_argument("variant", nargs="?")
    parser.add_argument("iterations", nargs="?", type=int)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--child-cpu", type=int)
    a = parser.parse_args()

    out = {"python": platform.python_version(), "implementation": platform.python_implementation()}
    if a.workload == "version":
        print(json.dumps(out))
        return
    if a.iterations is None or a.iterations < 1:
        parser.error("ITERATIONS must be a positive integer")
    if a.workload == "process_start_join":
        value, method = process_start_join(a.variant, a.iterations, a.warmup, a.cpu)
    elif a.workload == "pipe_pingpong":
        if a.variant not in ("typed", "bytes"):
            parser.error("pipe_pingpong takes typed or bytes")
        value, method = pipe_pingpong(a.variant, a.iterations, a.warmup, a.cpu, a.child_cpu)
    else:
        parser.error(f"unknown workload {a.workload!r}")
    out.update(value=value, unit="us", iterations=a.iterations, start_method=method)
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
