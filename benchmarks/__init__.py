"""minigrad's benchmark suite: the engine against a hand-written NumPy floor and PyTorch.

Run from the repository root:  python -m benchmarks [--quick] [--only W1,W4] [--full]
[--check] [--json PATH] [--markdown PATH].  See benchmarks/RESULTS.md for the latest table.

Every implementation runs in one process, on one thread: the thread-count variables are set
here, before anything imports NumPy, so BLAS starts single-threaded (and `harness.pin_threads`
also asks threadpoolctl and torch for one thread once they are imported).
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
del _var
