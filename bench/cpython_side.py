"""The CPython side of the multiprocess benchmark harness (stdlib only).

The harness (bench/src/main.rs) runs this once per round and cell:

    python3 cpython_side.py version
    python3 cpython_side.py process_start_join {fork|forkserver|spawn} ITERATIONS [--warmup W]
    python3 cpython_side.py pipe_pingpong {typed|bytes} ITERATIONS [--warmup W]
                            [--cpu PARENT_CPU] [--child-cpu CHILD_CPU]
    python3 cpython_side.py pipe_bulk SIZE_BYTES MESSAGES [--warmup W] [--cpu P --child-cpu C]
    python3 cpython_side.py lock_uncontended lock ITERATIONS [--warmup W]
    python3 cpython_side.py lock_contended lock ITERATIONS [--warmup W] [--cpu P --child-cpu C]
    python3 cpython_side.py sync_pingpong {event|semaphore|barrier|condition} ITERATIONS [--warmup W]
                            [--cpu PARENT_CPU] [--child-cpu CHILD_CPU]
    python3 cpython_side.py value_increment value ITERATIONS [--warmup W] [--cpu P --child-cpu C]
    python3 cpython_side.py array_fill_sum array LENGTH
    python3 cpython_side.py shared_memory cycle ITERATIONS [--warmup W]
    python3 cpython_side.py {queue|simplequeue} {int|bytes} PER_PRODUCER [--warmup W]
                            [--producers K] [--size BYTES] [--cpu P --child-cpus C1,C2,...]
    python3 cpython_side.py pool_startup_shutdown {fork|forkserver|spawn} ITERATIONS [--warmup W]
    python3 cpython_side.py pool_map map ITEMS [--warmup WARM_ITEMS] [--repeat R] [--chunksize C]
    python3 cpython_side.py pool_apply apply ITERATIONS [--warmup W] [--cpu P --child-cpu C]
    python3 cpython_side.py managers_start_shutdown {fork|forkserver|spawn} ITERATIONS [--warmup W]
                            [--cpu P --child-cpu C]
    python3 cpython_side.py managers_proxy {dict|queue|lock} ITERATIONS [--warmup W]
                            [--cpu CLIENT_CPU --child-cpu SERVER_CPU]
    python3 cpython_side.py managers_remote put_get ITERATIONS [--warmup W]
                            [--cpu CLIENT_CPU --child-cpu SERVER_CPU]
    python3 cpython_side.py managers_remote 4_clients PER_CLIENT [--warmup W] [--clients K]
                            [--cpu CPU --child-cpu CPU]

and reads one line of JSON from stdout: {"value": <value>, "unit": ..., ...}, the value in
the row's unit: microseconds per process or round trip, nanoseconds per acquire + release,
operations per second (lock_contended, value_increment), barrier passes per second
(sync_pingpong barrier). Workloads timed in phases add one field per phase, which rows of
their own read: array_fill_sum's value is ms for create + fill + sum, with create_us,
fill_gbps and sum_gbps beside it; shared_memory's value is us per create, with attach_us,
close_us and unlink_us. queue and simplequeue give messages per second (all producers
together), and for bytes the payload's GB/s beside it (gbps). pool_startup_shutdown gives ms
per Pool(2) started, closed and joined; pool_map tasks per second; pool_apply us per apply;
managers_start_shutdown ms per Manager() started and shut down; managers_proxy us per pair of
proxy calls (d[k] = v; d[k], or q.put(x); q.get(), or l.acquire(); l.release()).
managers_remote serves a queue from a BaseManager on ('127.0.0.1', 0) with an authkey, to
clients that connect() by address and key: us per q.put(x); q.get() pair (put_get), or items
per second got by this process while K client processes put (4_clients).
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


def bulk_receiver(conn, n, size, cpu):
    _pin(cpu)
    for _ in range(n):
        if len(conn.recv_bytes()) != size:
            raise SystemExit("short message")
    conn.send_bytes(b"k")
    conn.close()


def pipe_bulk(size, iterations, warmup, cpu, child_cpu):
    """send_bytes of `size`-byte messages through a duplex Pipe() to a child that
    recv_bytes each and answers one byte after the last: GB/s of payload."""
    _pin(cpu)
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    p = ctx.Process(target=bulk_receiver, args=(child_end, warmup + iterations, size, child_cpu))
    p.start()
    child_end.close()
    payload = bytes(i & 0xFF for i in range(256)) * (size // 256) + bytes(size % 256)
    for _ in range(warmup):
        parent_end.send_bytes(payload)
    t0 = time.perf_counter()
    for _ in range(iterations):
        parent_end.send_bytes(payload)
    parent_end.recv_bytes()
    elapsed = time.perf_counter() - t0
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"receiver exited with {p.exitcode}")
    return size * iterations / elapsed / 1e9, "fork", "GB/s"


def lock_uncontended(iterations, warmup):
    """acquire() + release() of a multiprocessing.Lock in one process: ns per pair."""
    lock = multiprocessing.get_context("fork").Lock()
    for _ in range(warmup):
        lock.acquire()
        lock.release()
    t0 = time.perf_counter()
    for _ in range(iterations):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - t0) / iterations * 1e9, "fork", "ns"


def contender(lock, counter, warmup, n, ready, go, done, cpu):
    _pin(cpu)
    for _ in range(warmup):
        lock.acquire()
        counter.value += 1
        lock.release()
    ready.set()
    go.wait()
    for _ in range(n):
        lock.acquire()
        counter.value += 1
        lock.release()
    done.set()


def lock_contended(iterations, warmup, cpu, child_cpu):
    """Two processes each do `lock; counter.value += 1; unlock` on a RawValue('i'), a few
    untimed, then `iterations` from a common start; the final count must be exact.
    Operations per second, both processes together."""
    _pin(cpu)
    ctx = multiprocessing.get_context("fork")
    lock = ctx.Lock()
    counter = ctx.RawValue("i", 0)
    ready, go, done = ctx.Event(), ctx.Event(), ctx.Event()
    p = ctx.Process(target=contender, args=(lock, counter, warmup, iterations, ready, go, done, child_cpu))
    p.start()
    for _ in range(warmup):
        lock.acquire()
        counter.value += 1
        lock.release()
    ready.wait()
    t0 = time.perf_counter()
    go.set()
    for _ in range(iterations):
        lock.acquire()
        counter.value += 1
        lock.release()
    done.wait()
    elapsed = time.perf_counter() - t0
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"partner child exited with {p.exitcode}")
    expected = 2 * (warmup + iterations)
    if counter.value != expected:
        raise SystemExit(f"count {counter.value}, expected {expected}: mutual exclusion failed")
    return 2 * iterations / elapsed, "fork", "operations/s"


def value_contender(v, warmup, n, ready, go, done, cpu):
    _pin(cpu)
    for _ in range(warmup):
        with v.get_lock():
            v.value += 1
    ready.set()
    go.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    done.set()


def value_increment(iterations, warmup, cpu, child_cpu):
    """Two processes each do `with v.get_lock(): v.value += 1` on a Value('d'), a few
    untimed, then `iterations` from a common start; the final value must be exact.
    Operations per second, both processes together."""
    _pin(cpu)
    ctx = multiprocessing.get_context("fork")
    v = ctx.Value("d", 0.0)
    ready, go, done = ctx.Event(), ctx.Event(), ctx.Event()
    p = ctx.Process(target=value_contender, args=(v, warmup, iterations, ready, go, done, child_cpu))
    p.start()
    for _ in range(warmup):
        with v.get_lock():
            v.value += 1
    ready.wait()
    t0 = time.perf_counter()
    go.set()
    for _ in range(iterations):
        with v.get_lock():
            v.value += 1
    done.wait()
    elapsed = time.perf_counter() - t0
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"partner child exited with {p.exitcode}")
    expected = 2.0 * (warmup + iterations)
    if v.value != expected:
        raise SystemExit(f"value {v.value}, expected {expected}: increments were lost")
    return 2 * iterations / elapsed, "fork", "operations/s"


def _doubles(arr):
    return memoryview(arr.get_obj()).cast("B").cast("d")


def array_filler(arr, out):
    t0 = time.perf_counter()
    with arr.get_lock():
        mv = _doubles(arr)
        n = len(mv)
        mv[0] = 1.0
        k = 1
        while k < n:  # doubling copies: mv[k:2k] = mv[:k]
            m = min(k, n - k)
            mv[k:k + m] = mv[0:m]
            k += m
        mv.release()
    out.value = time.perf_counter() - t0


def array_fill_sum(n):
    """Array('d', n) created, filled with 1.0 by a child (timing itself), summed by the
    parent; the sum must be exactly n. ms for the three, plus each phase."""
    ctx = multiprocessing.get_context("fork")  # how the child starts is not measured
    fill_s = ctx.RawValue("d", 0.0)
    t0 = time.perf_counter()
    arr = ctx.Array("d", n)
    create_s = time.perf_counter() - t0
    p = ctx.Process(target=array_filler, args=(arr, fill_s))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"filling child exited with {p.exitcode}")
    t0 = time.perf_counter()
    with arr.get_lock():
        mv = _doubles(arr)
        total = sum(mv)
        mv.release()
    sum_s = time.perf_counter() - t0
    if total != n:
        raise SystemExit(f"sum {total}, expected {n}")
    gb = 8 * n / 1e9
    phases = {"create_us": create_s * 1e6, "fill_gbps": gb / fill_s.value, "sum_gbps": gb / sum_s}
    return (create_s + fill_s.value + sum_s) * 1e3, "fork", "ms", phases


def shared_memory_cycle(iterations, warmup):
    """SharedMemory(create=True, size=1 MiB), attach by name, close() both, unlink(), many
    times: us per create (the value), attach, close (per handle) and unlink."""
    from multiprocessing import shared_memory

    size = 1 << 20
    clock = time.perf_counter
    sums = [0.0, 0.0, 0.0, 0.0]
    for i in range(warmup + iterations):
        t0 = clock()
        a = shared_memory.SharedMemory(create=True, size=size)
        t1 = clock()
        try:
            b = shared_memory.SharedMemory(name=a.name)
            t2 = clock()
            b.close()
            a.close()
            t3 = clock()
        finally:
            t4 = clock()
            a.unlink()
            t5 = clock()
        if i >= warmup:
            for k, t in enumerate((t1 - t0, t2 - t1, (t3 - t2) / 2, t5 - t4)):
                sums[k] += t
    create, attach, close, unlink = (s / iterations * 1e6 for s in sums)
    return create, "-", "us", {"attach_us": attach, "close_us": close, "unlink_us": unlink}


def event_partner(ping, pong, n, cpu):
    _pin(cpu)
    for _ in range(n):
        if not ping.wait():
            raise SystemExit("ping.wait() returned False")
        ping.clear()
        pong.set()


def semaphore_partner(ping, pong, n, cpu):
    _pin(cpu)
    for _ in range(n):
        ping.acquire()
        pong.release()


def condition_partner(cond, turn, n, cpu):
    _pin(cpu)
    with cond:
        for i in range(n):
            cond.wait_for(lambda: turn.value == 2 * i + 1)
            turn.value = 2 * i + 2
            cond.notify(1)


def barrier_partner(barrier, n, cpu):
    _pin(cpu)
    for _ in range(n):
        barrier.wait()


def sync_pingpong(kind, iterations, warmup, cpu, child_cpu):
    """A turn handed back and forth with a partner child: two Events (set/wait/clear) or two
    Semaphores (release/acquire), us per round trip; or a Barrier(2) both wait on, passes
    per second."""
    _pin(cpu)
    ctx = multiprocessing.get_context("fork")  # how the partner starts is not measured
    total = warmup + iterations
    if kind == "event":
        ping, pong = ctx.Event(), ctx.Event()
        p = ctx.Process(target=event_partner, args=(ping, pong, total, child_cpu))

        def exchange():
            ping.set()
            if not pong.wait():
                raise SystemExit("pong.wait() returned False")
            pong.clear()
    elif kind == "semaphore":
        ping, pong = ctx.Semaphore(0), ctx.Semaphore(0)
        p = ctx.Process(target=semaphore_partner, args=(ping, pong, total, child_cpu))

        def exchange():
            ping.release()
            pong.acquire()
    elif kind == "condition":
        cond, turn = ctx.Condition(), ctx.RawValue("Q", 0)
        p = ctx.Process(target=condition_partner, args=(cond, turn, total, child_cpu))
        count = [0]

        def exchange():
            i = count[0]
            turn.value = 2 * i + 1
            cond.notify(1)
            cond.wait_for(lambda: turn.value == 2 * i + 2)
            count[0] = i + 1
    else:
        barrier = ctx.Barrier(2)
        p = ctx.Process(target=barrier_partner, args=(barrier, total, child_cpu))
        exchange = barrier.wait
    p.start()
    if kind == "condition":
        cond.acquire()
    for _ in range(warmup):
        exchange()
    t0 = time.perf_counter()
    for _ in range(iterations):
        exchange()
    elapsed = time.perf_counter() - t0
    if kind == "condition":
        cond.release()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"partner child exited with {p.exitcode}")
    if kind == "barrier":
        return iterations / elapsed, "fork", "waits/s"
    return elapsed / iterations * 1e6, "fork", "us"


def queue_producer(q, payload, warmup, n, ready, go, cpu):
    _pin(cpu)
    put = q.put
    if payload is None:
        for i in range(warmup):
            put(i)
        ready.release()
        go.wait()
        for i in range(warmup, warmup + n):
            put(i)
    else:
        for _ in range(warmup):
            put(payload)
        ready.release()
        go.wait()
        for _ in range(n):
            put(payload)


def queue_stream(kind, variant, n, warmup, producers, size, cpu, child_cpus):
    """K producer children each put `warmup` items, wait for the start, then put `n` more
    into a Queue() or SimpleQueue(): small ints (i) or one bytes object of `size` bytes;
    the parent gets them all (summing the ints, checking each length). Timed from the start
    (go.set()) to the last get: messages per second, and GB/s of payload."""
    _pin(cpu)
    ctx = multiprocessing.get_context("fork")  # how the producers start is not measured
    q = ctx.SimpleQueue() if kind == "simplequeue" else ctx.Queue()
    payload = None if variant == "int" else b"x" * size
    ready, go = ctx.Semaphore(0), ctx.Event()
    cpus = child_cpus or [None]
    procs = [
        ctx.Process(target=queue_producer, args=(q, payload, warmup, n, ready, go, cpus[k % len(cpus)]))
        for k in range(producers)
    ]
    for p in procs:
        p.start()
    get = q.get
    for _ in range(producers * warmup):
        get()
    for _ in range(producers):
        ready.acquire()
    count = producers * n
    t0 = time.perf_counter()
    go.set()
    if payload is None:
        total = 0
        for _ in range(count):
            total += get()
    else:
        for _ in range(count):
            if len(get()) != size:
                raise SystemExit("an item came damaged")
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"producer exited with {p.exitcode}")
    if payload is None:
        expected = producers * (warmup + n - 1 + warmup) * n // 2
        if total != expected:
            raise SystemExit(f"sum {total}, expected {expected}: items lost or repeated")
    extra = {} if payload is None else {"gbps": count * size / elapsed / 1e9}
    return count / elapsed, "fork", "messages/s", extra


def square(x):
    return x * x


def pool_startup_shutdown(method, iterations, warmup):
    """get_context(method).Pool(2), then close() + join(): ms per pool."""
    ctx = multiprocessing.get_context(method)

    def one():
        pool = ctx.Pool(2)
        pool.close()
        pool.join()

    for _ in range(warmup):  # starts the fork server, warms caches
        one()
    t0 = time.perf_counter()
    for _ in range(iterations):
        one()
    return (time.perf_counter() - t0) / iterations * 1e3, method, "ms"


def _check_squares(r, n):
    if len(r) != n or any(v != i * i for i, v in enumerate(r)):
        raise SystemExit("map gave a wrong result")


def pool_map(items, warm_items, repeat, chunksize):
    """multiprocessing.Pool(2) (default start method), started and warmed up with an untimed
    map of warm_items; then `repeat` maps of square over range(items) on the clock, with the
    default chunk size or `chunksize`. Tasks per second; the last result is checked after
    the clock."""
    pool = multiprocessing.Pool(2)
    try:
        _check_squares(pool.map(square, range(warm_items), chunksize), warm_items)
        last = None
        t0 = time.perf_counter()
        for _ in range(repeat):
            last = pool.map(square, range(items), chunksize)
        elapsed = time.perf_counter() - t0
        _check_squares(last, items)
    finally:
        pool.close()
        pool.join()
    return items * repeat / elapsed, multiprocessing.get_start_method(), "tasks/s"


def pool_apply(iterations, warmup, cpu, child_cpu):
    """A started multiprocessing.Pool(1) (default start method): `iterations` of
    apply(square, (x,)) after `warmup` untimed ones, us per round trip. Pinned: this process
    (and the pool's threads, made after) to `cpu`, the worker by its initializer to
    `child_cpu`."""
    _pin(cpu)
    if child_cpu is not None:
        pool = multiprocessing.Pool(1, initializer=_pin, initargs=(child_cpu,))
    else:
        pool = multiprocessing.Pool(1)
    try:
        for x in range(warmup):
            if pool.apply(square, (x,)) != x * x:
                raise SystemExit("apply gave a wrong result")
        t0 = time.perf_counter()
        for x in range(iterations):
            if pool.apply(square, (x,)) != x * x:
                raise SystemExit("apply gave a wrong result")
        elapsed = time.perf_counter() - t0
    finally:
        pool.close()
        pool.join()
    return elapsed / iterations * 1e6, multiprocessing.get_start_method(), "us"


def _pin_process(pid, cpus):
    """Every thread of process `pid` to `cpus` (os.sched_setaffinity(pid) reaches only its
    main thread, and threads it made before keep their own CPU set)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass


def managers_start_shutdown(method, iterations, warmup, cpu):
    """get_context(method).Manager() (started), then shutdown(): ms per manager. Pinned to
    `cpu` if given, before anything starts: the fork server and the managers inherit it. The
    warm-up managers also serve a dict."""
    _pin(cpu)
    ctx = multiprocessing.get_context(method)

    def one(check):
        m = ctx.Manager()
        if check:
            d = m.dict()
            d["a"] = 1
            if d["a"] != 1:
                raise SystemExit("the manager's dict read back wrong")
            del d
        m.shutdown()
        if m._process.exitcode != 0:
            raise SystemExit(f"the manager's server exited with {m._process.exitcode}")

    for _ in range(warmup):  # starts the fork server, warms caches
        one(True)
    t0 = time.perf_counter()
    for _ in range(iterations):
        one(False)
    return (time.perf_counter() - t0) / iterations * 1e3, method, "ms"


def managers_proxy(kind, iterations, warmup, cpu, child_cpu):
    """A forkserver Manager() started before the clock; then pairs of proxy calls from this
    process: d[k] = i; d[k] on a dict (16 short keys), q.put(i); q.get() on a Queue(), or
    acquire(); release() on a Lock(); values read back are checked. us per pair. Pinned: this
    process to `cpu`, every thread of the server to `child_cpu`, after the start and again
    once the proxy's connection (and its server thread) exists."""
    _pin(cpu)
    m = multiprocessing.get_context("forkserver").Manager()
    try:
        pid = m._process.pid
        server_cpus = {child_cpu} if child_cpu is not None else os.sched_getaffinity(0)
        _pin_process(pid, server_cpus)
        if kind == "dict":
            d = m.dict()
            keys = [f"key-{k}" for k in range(16)]

            def op(i):
                k = keys[i & 15]
                d[k] = i
                if d[k] != i:
                    raise SystemExit("the dict read back wrong")
        elif kind == "queue":
            q = m.Queue()

            def op(i):
                q.put(i)
                if q.get() != i:
                    raise SystemExit("the queue gave back a wrong item")
        else:
            lock = m.Lock()

            def op(i):
                lock.acquire()
                lock.release()
        half = warmup // 2
        for i in range(half):
            op(i)
        _pin_process(pid, server_cpus)
        for i in range(half, warmup):
            op(i)
        t0 = time.perf_counter()
        for i in range(iterations):
            op(i)
        elapsed = time.perf_counter() - t0
        if kind == "queue" and q.qsize() != 0:
            raise SystemExit("items left in the queue")
        if kind == "lock":
            if not lock.acquire(False):
                raise SystemExit("the lock is held after the last release")
            if lock.acquire(False):
                raise SystemExit("the lock was acquired twice")
            lock.release()
    finally:
        m.shutdown()
    return elapsed / iterations * 1e6, "forkserver", "us"


# managers_remote: the remote queue of the multiprocessing.managers documentation. The
# registry is pickled for a forkserver server process, so the callable and the class are
# module-level (the server re-imports this script, and makes its own queue there).

REMOTE_AUTHKEY = b"multiprocess-bench"
_remote_queue_obj = None


def _remote_queue():
    """The served queue (`callable=lambda: queue` in the documentation)."""
    global _remote_queue_obj
    if _remote_queue_obj is None:
        import queue

        _remote_queue_obj = queue.Queue()
    return _remote_queue_obj


from multiprocessing.managers import BaseManager  # noqa: E402


class QueueManager(BaseManager):
    pass


QueueManager.register("get_queue", callable=_remote_queue)

SEQ_BITS = 40


def _remote_client(address):
    """A client that knows only the address and the key."""
    m = QueueManager(address=address, authkey=REMOTE_AUTHKEY)
    m.connect()
    return m, m.get_queue()


def remote_putter(address, index, warmup, n, ready, go, cpu):
    _pin(cpu)
    _m, q = _remote_client(address)
    put = q.put
    base = index << SEQ_BITS
    for i in range(warmup):
        put(base | i)
    ready.release()
    go.wait()
    for i in range(warmup, warmup + n):
        put(base | i)


def managers_remote(kind, iterations, warmup, clients, cpu, child_cpu):
    """A QueueManager (forkserver) serving a queue on ('127.0.0.1', 0), started before the
    clock; this process connects by address and key. put_get: pairs q.put(i); q.get(),
    checked, us per pair; pinned: this process to `cpu`, every thread of the server to
    `child_cpu`, after the start and again once the proxy's connection exists. 4_clients:
    `clients` children (fork) connect and put `warmup` items, wait for the start, put
    `iterations` more, while this process gets them all, each client's in order: items per
    second from the start to the last get; pinned: everything to `cpu`."""
    _pin(cpu)
    ctx = multiprocessing.get_context("forkserver")
    m = QueueManager(address=("127.0.0.1", 0), authkey=REMOTE_AUTHKEY, ctx=ctx)
    m.start()
    procs = []
    try:
        pid = m._process.pid
        server_cpus = {child_cpu} if child_cpu is not None else os.sched_getaffinity(0)
        _pin_process(pid, server_cpus)
        _client, q = _remote_client(m.address)
        if kind == "put_get":
            def op(i):
                q.put(i)
                if q.get() != i:
                    raise SystemExit("the queue gave back a wrong item")

            half = warmup // 2
            for i in range(half):
                op(i)
            _pin_process(pid, server_cpus)
            for i in range(half, warmup):
                op(i)
            t0 = time.perf_counter()
            for i in range(iterations):
                op(i)
            value = (time.perf_counter() - t0) / iterations * 1e6
            unit = "us"
        else:
            fork = multiprocessing.get_context("fork")  # how the clients start is not measured
            ready, go = fork.Semaphore(0), fork.Event()
            procs = [
                fork.Process(target=remote_putter, args=(m.address, k, warmup, iterations, ready, go, child_cpu))
                for k in range(clients)
            ]
            for p in procs:
                p.start()
            nxt = [0] * clients
            get = q.get
            mask = (1 << SEQ_BITS) - 1

            def take(count):
                for _ in range(count):
                    v = get()
                    c = v >> SEQ_BITS
                    if v & mask != nxt[c]:
                        raise SystemExit(f"item {v:#x} came out of order")
                    nxt[c] += 1

            take(clients * warmup)
            for _ in range(clients):
                ready.acquire()
            _pin_process(pid, server_cpus)
            t0 = time.perf_counter()
            go.set()
            take(clients * iterations)
            value = clients * iterations / (time.perf_counter() - t0)
            unit = "items/s"
            for p in procs:
                p.join()
                if p.exitcode != 0:
                    raise SystemExit(f"a client exited with {p.exitcode}")
            if nxt != [warmup + iterations] * clients:
                raise SystemExit(f"items per client {nxt}, expected {warmup + iterations} each")
        if q.qsize() != 0:
            raise SystemExit("items left in the queue")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        m.shutdown()
    return value, "forkserver", unit


def _cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def idle_on_lock(lock, ready):
    ready.release()
    lock.acquire()
    lock.release()


def idle_in_get(q, ready):
    ready.release()
    q.get()


def idle_at_barrier(b, ready):
    ready.release()
    b.wait()


def idle_waiters(kind, n, window_ms):
    """The CPU use of n children blocked on a held Lock, in Queue.get, or at a barrier, as a
    percentage of the CPUs this process may use, over window_ms after a pause."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Semaphore(0)
    if kind == "lock":
        obj = ctx.Lock()
        obj.acquire()
        target = idle_on_lock
    elif kind == "queue_get":
        obj = ctx.Queue()
        target = idle_in_get
    else:
        obj = ctx.Barrier(n + 1)
        target = idle_at_barrier
    procs = [ctx.Process(target=target, args=(obj, ready)) for _ in range(n)]
    for p in procs:
        p.start()
    for _ in range(n):
        ready.acquire()
    window = window_ms / 1000.0
    time.sleep(min(0.5, window / 4))
    before = sum(_cpu_ticks(p.pid) for p in procs)
    time.sleep(window)
    after = sum(_cpu_ticks(p.pid) for p in procs)
    cpus = len(os.sched_getaffinity(0))
    percent = (after - before) / os.sysconf("SC_CLK_TCK") / (window * cpus) * 100.0
    if kind == "lock":
        obj.release()
    elif kind == "queue_get":
        for _ in procs:
            obj.put(0)
    else:
        obj.wait()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a child failed: {p.exitcode}")
    return percent, "fork", "%"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload")
    parser.add_argument("variant", nargs="?")
    parser.add_argument("iterations", nargs="?", type=int)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--child-cpu", type=int)
    parser.add_argument("--child-cpus", type=lambda v: [int(c) for c in v.split(",") if c])
    parser.add_argument("--producers", type=int, default=1)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--chunksize", type=int)
    parser.add_argument("--clients", type=int, default=4)
    a = parser.parse_args()

    out = {"python": platform.python_version(), "implementation": platform.python_implementation()}
    if a.workload == "version":
        print(json.dumps(out))
        return
    if a.iterations is None or a.iterations < 1:
        parser.error("ITERATIONS must be a positive integer")
    unit = "us"
    phases = {}
    if a.workload == "process_start_join":
        value, method = process_start_join(a.variant, a.iterations, a.warmup, a.cpu)
    elif a.workload == "pipe_pingpong":
        if a.variant not in ("typed", "bytes"):
            parser.error("pipe_pingpong takes typed or bytes")
        value, method = pipe_pingpong(a.variant, a.iterations, a.warmup, a.cpu, a.child_cpu)
    elif a.workload == "pipe_bulk":
        try:
            size = int(a.variant)
        except (TypeError, ValueError):
            parser.error("pipe_bulk takes a message size in bytes")
        value, method, unit = pipe_bulk(size, a.iterations, a.warmup, a.cpu, a.child_cpu)
    elif a.workload == "lock_uncontended":
        if a.variant != "lock":
            parser.error("lock_uncontended takes lock")
        value, method, unit = lock_uncontended(a.iterations, a.warmup)
    elif a.workload == "lock_contended":
        if a.variant != "lock":
            parser.error("lock_contended takes lock")
        value, method, unit = lock_contended(a.iterations, a.warmup, a.cpu, a.child_cpu)
    elif a.workload == "sync_pingpong":
        if a.variant not in ("event", "semaphore", "barrier", "condition"):
            parser.error("sync_pingpong takes event, semaphore, barrier or condition")
        value, method, unit = sync_pingpong(a.variant, a.iterations, a.warmup, a.cpu, a.child_cpu)
    elif a.workload == "idle_waiters":
        if a.variant not in ("lock", "queue_get", "barrier"):
            parser.error("idle_waiters takes lock, queue_get or barrier")
        value, method, unit = idle_waiters(a.variant, a.iterations, a.warmup)  # --warmup: the window in ms
    elif a.workload == "value_increment":
        if a.variant != "value":
            parser.error("value_increment takes value")
        value, method, unit = value_increment(a.iterations, a.warmup, a.cpu, a.child_cpu)
    elif a.workload == "array_fill_sum":
        if a.variant != "array":
            parser.error("array_fill_sum takes array")
        value, method, unit, phases = array_fill_sum(a.iterations)
    elif a.workload == "shared_memory":
        if a.variant != "cycle":
            parser.error("shared_memory takes cycle")
        value, method, unit, phases = shared_memory_cycle(a.iterations, a.warmup)
    elif a.workload in ("queue", "simplequeue"):
        if a.variant not in ("int", "bytes"):
            parser.error(f"{a.workload} takes int or bytes")
        if a.producers < 1 or a.size < 1:
            parser.error("--producers and --size must be positive")
        value, method, unit, phases = queue_stream(
            a.workload, a.variant, a.iterations, a.warmup, a.producers, a.size, a.cpu, a.child_cpus
        )
    elif a.workload == "pool_startup_shutdown":
        if a.variant not in ("fork", "forkserver", "spawn"):
            parser.error("pool_startup_shutdown takes fork, forkserver or spawn")
        value, method, unit = pool_startup_shutdown(a.variant, a.iterations, a.warmup)
    elif a.workload == "pool_map":
        if a.variant != "map":
            parser.error("pool_map takes map")
        if a.repeat < 1 or a.warmup < 1 or (a.chunksize is not None and a.chunksize < 1):
            parser.error("--repeat, --warmup and --chunksize must be positive")
        value, method, unit = pool_map(a.iterations, a.warmup, a.repeat, a.chunksize)
    elif a.workload == "pool_apply":
        if a.variant != "apply":
            parser.error("pool_apply takes apply")
        value, method, unit = pool_apply(a.iterations, a.warmup, a.cpu, a.child_cpu)
    elif a.workload == "managers_start_shutdown":
        if a.variant not in ("fork", "forkserver", "spawn"):
            parser.error("managers_start_shutdown takes fork, forkserver or spawn")
        value, method, unit = managers_start_shutdown(a.variant, a.iterations, a.warmup, a.cpu)
    elif a.workload == "managers_proxy":
        if a.variant not in ("dict", "queue", "lock"):
            parser.error("managers_proxy takes dict, queue or lock")
        value, method, unit = managers_proxy(a.variant, a.iterations, a.warmup, a.cpu, a.child_cpu)
    elif a.workload == "managers_remote":
        if a.variant not in ("put_get", "4_clients"):
            parser.error("managers_remote takes put_get or 4_clients")
        if a.clients < 1:
            parser.error("--clients must be positive")
        value, method, unit = managers_remote(a.variant, a.iterations, a.warmup, a.clients, a.cpu, a.child_cpu)
    else:
        parser.error(f"unknown workload {a.workload!r}")
    out.update(value=value, unit=unit, iterations=a.iterations, start_method=method, **phases)
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
