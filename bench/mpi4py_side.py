"""The mpi4py.futures side of the MPI benchmark (bench/src/bin/mpi.rs runs it once a round):

    mpirun -n 3 --oversubscribe python3 -m mpi4py.futures bench/mpi4py_side.py [CHUNK1_ITEMS MAP_ITEMS APPLIES]

Rank 0 runs this script; the other ranks are MPIPoolExecutor's workers. It prints one line,
`BENCH {json}`: chunk size 1 tasks/s (map's default chunksize is 1), tasks/s with
chunksize=1000, and the submit+result round trip in microseconds.
"""

import json
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def square(x):
    return x * x


def main():
    chunk1_items, map_items, applies = 20_000, 1_000_000, 2_000
    if len(sys.argv) > 3:
        chunk1_items, map_items, applies = (int(a) for a in sys.argv[1:4])
    with MPIPoolExecutor() as executor:
        # Warm-up: the workers are up and have the function.
        assert list(executor.map(square, range(200))) == [x * x for x in range(200)]

        start = time.perf_counter()
        results = list(executor.map(square, range(chunk1_items)))
        chunk1 = chunk1_items / (time.perf_counter() - start)
        assert results[-1] == (chunk1_items - 1) ** 2

        start = time.perf_counter()
        results = list(executor.map(square, range(map_items), chunksize=1000))
        chunked = map_items / (time.perf_counter() - start)
        assert results[-1] == (map_items - 1) ** 2

        for i in range(100):
            executor.submit(square, i).result()
        start = time.perf_counter()
        for i in range(applies):
            assert executor.submit(square, i).result() == i * i
        apply_us = (time.perf_counter() - start) / applies * 1e6

    print("BENCH " + json.dumps({"chunk1": chunk1, "chunked": chunked, "apply_us": apply_us}), flush=True)


if __name__ == "__main__":
    main()
