"""The exact solve of a track's block-pentadiagonal Gauss-Newton system
(`block_pentadiagonal_solve`), and the BLAS settings that solves and fits hold
(`one_blas_thread`, `flush_denormals`)."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import torch
from scipy.linalg import get_blas_funcs, get_lapack_funcs
from threadpoolctl import ThreadpoolController

_BLAS = ThreadpoolController()
_BLAS_LOCK = threading.Lock()
_BLAS_USERS = [0, None]  # solves running, the limiter they share


@contextmanager
def flush_denormals():
    """Subnormal floats flushed to zero on this thread (the x86 FTZ/DAZ flags, through
    `torch.set_flush_denormal`) while the block runs, then the thread's own setting back.

    The block Cholesky's eliminations leave values far below float32's normal range (the
    couplings of parameters that little else constrains decay geometrically along the
    track: about 40,000 subnormal entries per 300-frame solve), and the CPU takes a slow
    path on each: the solve with the shape's columns took 80 ms instead of 33, and the whole
    default fit 1.42 s instead of 1.15 s on `bench/fitting_speed.py`, with the same result to
    0.01 mm. Values that small are nothing against the O(1e-3..1e4) entries they join."""
    probe = np.array([1e-30], dtype=np.float32)
    already = bool((probe * np.float32(1e-10))[0] == 0)  # a subnormal product came out 0
    changed = not already and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(False)


@contextmanager
def one_blas_thread():
    """NumPy's BLAS/LAPACK (OpenBLAS) on one thread while any solve or fit runs: the blocks
    are small (63 x 63), and OpenBLAS's threads on them made a solve three to six times slower
    on two cores. Counted, because the limit is process-wide and tracks are fitted in threads.

    Whole fits on threads hold it too (`TrackFitter`, `contacts.plant_feet`): OpenBLAS sums in a
    different order on one thread than on two, so a fit whose NumPy products ran on one or two
    threads depending on whether another thread was inside a solve came out differently from
    run to run (up to 30 mm on a one-second Sports2D clip)."""
    with _BLAS_LOCK:
        if _BLAS_USERS[0] == 0:
            _BLAS_USERS[1] = _BLAS.limit(limits=1, user_api="blas")
        _BLAS_USERS[0] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS[0] -= 1
            if _BLAS_USERS[0] == 0:
                _BLAS_USERS[1].restore_original_limits()


def block_pentadiagonal_solve(D: torch.Tensor, U1: torch.Tensor, U2: torch.Tensor, rhs: torch.Tensor,
                              damp: torch.Tensor | float = 0.0,
                              precision: torch.dtype = torch.float32) -> torch.Tensor | None:
    """Solve the symmetric positive definite block-pentadiagonal system with diagonal blocks
    D (T, P, P) + diag(damp) (damp (T, P) or a number), upper blocks U1 (T-1, P, P) (H[t, t+1])
    and U2 (T-2, P, P) (H[t, t+2]), right-hand sides rhs (T, P, r); returns (T, P, r) float64,
    or None where the matrix is not positive definite in `precision`.

    A block Cholesky frame by frame: each frame's factor eliminates it from the next two.
    Written by hand because neither torch nor scipy solves block-banded systems well here:
    scipy's `solveh_banded` on the same band took about five times longer, batched cyclic
    reduction in torch twice as long (twice the flops), and torch's per-call overhead on
    63 x 63 blocks made its own loop 1.5x slower than this one in LAPACK/BLAS. float32 by
    default: 1.5x faster than float64, and a Levenberg-Marquardt step needs no more (its
    relative error is 1e-5 to 5e-3 on real tracks, and a step is only taken if the cost falls).
    On these small blocks the calls' own overhead is most of the time, so each frame's row
    [H[t, t] | H[t, t+1] | H[t, t+2] | rhs] is kept Fortran-ordered and updated in place by
    BLAS (`gemm` with beta = 1 into column ranges of the next rows, `trmm` in place): 12%
    faster than NumPy products and in-place subtractions (31 -> 27 ms for 300 frames).
    """
    np_dtype = np.float32 if precision == torch.float32 else np.float64
    potrf, trtri = get_lapack_funcs(("potrf", "trtri"), dtype=np_dtype)
    gemm, trmm = get_blas_funcs(("gemm", "trmm"), dtype=np_dtype)
    T, P = D.shape[:2]
    nr = rhs.shape[-1]
    # rows[t].T is frame t's row (P, 3P + r): a column range of it is a contiguous Fortran
    # matrix that BLAS can write into; two empty frames after the last take the eliminations'
    # spill, so every frame runs alike
    rows = np.zeros((T + 2, 3 * P + nr, P), dtype=np_dtype)
    rows[:T, :P] = D.detach().cpu().numpy()  # symmetric: its own transpose
    idx = np.arange(P)
    rows[:T, idx, idx] += np.broadcast_to(np.asarray(damp.cpu() if torch.is_tensor(damp) else damp,
                                                     dtype=np_dtype), (T, P))
    rows[:max(T - 1, 0), P:2 * P] = U1.detach().cpu().numpy().transpose(0, 2, 1)
    rows[:max(T - 2, 0), 2 * P:3 * P] = U2.detach().cpu().numpy().transpose(0, 2, 1)
    rows[:T, 3 * P:] = rhs.detach().cpu().numpy().transpose(0, 2, 1)

    def put(out: np.ndarray, into: np.ndarray) -> None:
        # LAPACK/BLAS wrote in place where the wrapper could; where it made a copy, copy back
        if not np.shares_memory(out, into):
            into[...] = out

    with one_blas_thread(), flush_denormals():
        inplace = None  # whether the wrappers wrote in place (checked on the first frame)
        for t in range(T):
            row, next1, next2 = rows[t].T, rows[t + 1].T, rows[t + 2].T
            L, info = potrf(row[:, :P], lower=1, clean=1, overwrite_a=1)
            if info != 0:
                return None
            # L^-1 as a matrix, then multiplied in place: OpenBLAS's triangular solve on these
            # small blocks took twice as long
            L, info = trtri(L, lower=1, overwrite_c=1)
            # [W1 | W2 | y] = L^-1 [H[t, t+1] | H[t, t+2] | rhs], in place of them
            Z = trmm(1.0, L, row[:, P:], lower=1, overwrite_b=1)
            W1, W2, y = Z[:, :P], Z[:, P:2 * P], Z[:, 2 * P:]
            # the Schur updates of the next two frames (W2' W1 is the transpose of W1' W2: skipped)
            o1 = gemm(-1.0, W1, Z[:, :2 * P], 1.0, next1[:, :2 * P], trans_a=1, overwrite_c=1)
            o2 = gemm(-1.0, W1, y, 1.0, next1[:, 3 * P:], trans_a=1, overwrite_c=1)
            o3 = gemm(-1.0, W2, W2, 1.0, next2[:, :P], trans_a=1, overwrite_c=1)
            o4 = gemm(-1.0, W2, y, 1.0, next2[:, 3 * P:], trans_a=1, overwrite_c=1)
            if inplace is None:
                # the wrappers write in place into these contiguous Fortran views; where they
                # do not, each result is copied back, on every frame
                inplace = all(np.shares_memory(a, b) for a, b in (
                    (L, row), (Z, row), (o1, next1), (o2, next1), (o3, next2), (o4, next2)))
            if not inplace:
                put(L, row[:, :P])
                put(Z, row[:, P:])
                put(o1, next1[:, :2 * P])
                put(o2, next1[:, 3 * P:])
                put(o3, next2[:, :P])
                put(o4, next2[:, 3 * P:])
        x = np.zeros((T + 2, P, nr), dtype=np_dtype)
        for t in range(T - 1, -1, -1):
            row = rows[t].T  # [L^-1 | W1 | W2 | y]
            v = row[:, 3 * P:] - row[:, P:3 * P] @ x[t + 1:t + 3].reshape(2 * P, nr)
            x[t] = row[:, :P].T @ v
    return torch.from_numpy(x[:T]).double()
