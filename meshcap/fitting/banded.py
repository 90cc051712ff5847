"""The exact solve of a track's block-pentadiagonal Gauss-Newton system, and the BLAS settings it needs.

`block_pentadiagonal_solve` is a block Cholesky along the track. Written by hand because
neither torch nor SciPy solves block-banded systems well here: SciPy's `solveh_banded` on
the same band took about five times longer, batched cyclic reduction in torch twice as long
(twice the flops), and torch's per-call overhead on 63 x 63 blocks made its own loop 1.5x
slower than one in LAPACK/BLAS.

The blocks are small, so how the routines are called decides the time. SciPy's own
BLAS/LAPACK (`scipy.linalg.cython_blas` / `cython_lapack`, the C function pointers that
Cython code links against) are called through ctypes on memory laid out for them: no
wrapper's argument checks, results written in place, and ctypes lets go of the GIL inside
each routine, which SciPy's Python wrappers (`get_blas_funcs`) do not. That last one is what
lets a long track be factored from both ends at once, one end on a second thread: the two
halves meet in a two-frame system in the middle (a "twisted" factorisation, the same flops).
"""
from __future__ import annotations

import ctypes
import threading
from contextlib import contextmanager

import numpy as np
import scipy.linalg
import scipy.linalg.cython_blas
import scipy.linalg.cython_lapack
import torch
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


def _routine(module, name: str, nargs: int):
    """SciPy's BLAS/LAPACK routine `name` as a ctypes function of `nargs` pointers (Fortran
    calling convention: every argument by address)."""
    capsule = module.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    address = get_pointer(capsule, get_name(capsule))
    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * nargs)(address)


class _Routines:
    """The five routines the solve calls, in one precision (`np.float32` or `np.float64`),
    with the constant arguments they take as addresses that stay valid."""

    _cache: dict = {}

    def __init__(self, dtype) -> None:
        p = "s" if dtype == np.float32 else "d"
        blas, lapack = scipy.linalg.cython_blas, scipy.linalg.cython_lapack
        self.potrf = _routine(lapack, p + "potrf", 5)
        self.trtri = _routine(lapack, p + "trtri", 6)
        self.trmm = _routine(blas, p + "trmm", 11)
        self.syrk = _routine(blas, p + "syrk", 10)
        self.gemm = _routine(blas, p + "gemm", 13)
        scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
        self._keep = {c: ctypes.c_char(c.encode()) for c in "LNT"}
        self._keep.update(one=scalar(1.0), minus=scalar(-1.0))
        self.L, self.N, self.T = (ctypes.addressof(self._keep[c]) for c in "LNT")
        self.one, self.minus = ctypes.addressof(self._keep["one"]), ctypes.addressof(self._keep["minus"])

    @classmethod
    def of(cls, dtype) -> "_Routines":
        if dtype not in cls._cache:
            cls._cache[dtype] = cls(dtype)
        return cls._cache[dtype]


class _Ints:
    """C ints by address (the sizes a routine reads), kept alive with this object."""

    def __init__(self, **values: int) -> None:
        self._keep = {k: ctypes.c_int(v) for k, v in values.items()}
        for k, v in self._keep.items():
            setattr(self, k, ctypes.addressof(v))

    def value(self, name: str) -> int:
        return self._keep[name].value


def _eliminate(f: _Routines, rows: np.ndarray, n: int, P: int, nr: int) -> bool:
    """Factor the first n frames of `rows` ((n + 2, 3P + nr, P); rows[t].T is frame t's row
    [H[t, t] | H[t, t+1] | H[t, t+2] | rhs] as a Fortran matrix), each eliminated from the
    next two, whose blocks (the last two rows: whatever they hold) take the Schur updates.
    Afterwards rows[t].T holds [L^-1 | W1 | W2 | y] (L lower triangular, the upper triangle
    of the diagonal blocks left as it was). False where a block is not positive definite."""
    c = _Ints(P=P, nr=nr, cols=2 * P + nr, info=0)
    step, col = rows.strides[0], P * rows.itemsize  # bytes to the next frame, to the next column
    base = rows.ctypes.data
    with flush_denormals():
        for t in range(n):
            a = base + t * step
            w1, w2, y = a + P * col, a + 2 * P * col, a + 3 * P * col
            n1, n2 = a + step, a + 2 * step
            f.potrf(f.L, c.P, a, c.P, c.info)
            if c.value("info") != 0:
                return False
            # L^-1 as a matrix, then multiplied: OpenBLAS's triangular solve on these small
            # blocks took twice as long
            f.trtri(f.L, f.N, c.P, a, c.P, c.info)
            f.trmm(f.L, f.L, f.N, f.N, c.P, c.cols, f.one, a, c.P, w1, c.P)  # [W1 | W2 | y] = L^-1 [..]
            # the next two frames' Schur updates; their diagonal blocks' lower triangles only
            f.syrk(f.L, f.T, c.P, c.P, f.minus, w1, c.P, f.one, n1, c.P)
            f.gemm(f.T, f.N, c.P, c.P, c.P, f.minus, w1, c.P, w2, c.P, f.one, n1 + P * col, c.P)
            f.gemm(f.T, f.N, c.P, c.nr, c.P, f.minus, w1, c.P, y, c.P, f.one, n1 + 3 * P * col, c.P)
            f.syrk(f.L, f.T, c.P, c.P, f.minus, w2, c.P, f.one, n2, c.P)
            f.gemm(f.T, f.N, c.P, c.nr, c.P, f.minus, w2, c.P, y, c.P, f.one, n2 + 3 * P * col, c.P)
    return True


def _substitute(f: _Routines, rows: np.ndarray, n: int, P: int, nr: int) -> None:
    """Back-substitution over `_eliminate`'s first n frames, given the solution of the two
    after them in the last two rows' rhs columns; each frame's solution replaces its y."""
    c = _Ints(P=P, nr=nr)
    step, col = rows.strides[0], P * rows.itemsize
    base = rows.ctypes.data
    with flush_denormals():
        for t in range(n - 1, -1, -1):
            a = base + t * step
            y = a + 3 * P * col
            # x_t = L^-T (y - W1 x_t+1 - W2 x_t+2)
            f.gemm(f.N, f.N, c.P, c.nr, c.P, f.minus, a + P * col, c.P, y + step, c.P, f.one, y, c.P)
            f.gemm(f.N, f.N, c.P, c.nr, c.P, f.minus, a + 2 * P * col, c.P, y + 2 * step, c.P, f.one, y, c.P)
            f.trmm(f.L, f.L, f.T, f.N, c.P, c.nr, f.one, a, c.P, y, c.P)


def _symmetric(lower: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose lower triangle is that of `lower` (..., P, P)."""
    low = np.tril(lower)
    return low + np.swapaxes(np.tril(lower, -1), -1, -2)


# Tracks at least this long are factored from both ends at once.
TWO_ENDS_MIN = 24


def block_pentadiagonal_solve(D: torch.Tensor, U1: torch.Tensor, U2: torch.Tensor, rhs: torch.Tensor,
                              damp: torch.Tensor | float = 0.0,
                              precision: torch.dtype = torch.float32,
                              two_ends: bool | None = None) -> torch.Tensor | None:
    """Solve the symmetric positive definite block-pentadiagonal system with diagonal blocks
    D (T, P, P) + diag(damp) (damp (T, P) or a number), upper blocks U1 (T-1, P, P) (H[t, t+1])
    and U2 (T-2, P, P) (H[t, t+2]), right-hand sides rhs (T, P, r); returns (T, P, r) float64,
    or None where the matrix is not positive definite in `precision`.

    A block Cholesky frame by frame: each frame's factor eliminates it from the next two.
    float32 by default: 1.5x faster than float64, and a Levenberg-Marquardt step needs no
    more (its relative error is 1e-5 to 5e-3 on real tracks, and a step is only taken if the
    cost falls). With `two_ends` (default: tracks of at least `TWO_ENDS_MIN` frames) the
    track is factored from its first frame and from its last at once, on two threads, and
    the two middle frames are solved together: 300 frames in 17 ms instead of 31 (SciPy's
    wrappers from one end) on two cores.
    """
    np_dtype = np.float32 if precision == torch.float32 else np.float64
    f = _Routines.of(np_dtype)
    T, P = D.shape[:2]
    nr = rhs.shape[-1]
    Dn = D.detach().cpu().numpy().astype(np_dtype, copy=True)
    idx = np.arange(P)
    Dn[:, idx, idx] += np.broadcast_to(np.asarray(damp.cpu() if torch.is_tensor(damp) else damp,
                                                  dtype=np_dtype), (T, P))
    U1n, U2n = U1.detach().cpu().numpy(), U2.detach().cpu().numpy()
    Rn = rhs.detach().cpu().numpy()
    if two_ends is None:
        two_ends = T >= TWO_ENDS_MIN
    if not two_ends or T < 4:
        # rows[t].T is frame t's row (P, 3P + r): a column range of it is a contiguous Fortran
        # matrix that BLAS writes into; two empty frames after the last take the spill
        rows = np.zeros((T + 2, 3 * P + nr, P), dtype=np_dtype)
        rows[:T, :P] = Dn  # symmetric: its own transpose
        rows[:T - 1, P:2 * P] = U1n.transpose(0, 2, 1)
        rows[:max(T - 2, 0), 2 * P:3 * P] = U2n.transpose(0, 2, 1)
        rows[:T, 3 * P:] = Rn.transpose(0, 2, 1)
        with one_blas_thread():
            if not _eliminate(f, rows, T, P, nr):
                return None
            rows[T:, 3 * P:] = 0.0
            _substitute(f, rows, T, P, nr)
        return torch.from_numpy(rows[:T, 3 * P:].transpose(0, 2, 1)).double()

    # frames [0, m) from the first, [m + 2, T) from the last (reversed: frame T-1-s is row s,
    # its couplings to the frames before it H[t, t-1] = U1[t-1]', H[t, t-2] = U2[t-2]'), the
    # two middle frames m, m + 1 solved from both halves' spill
    m = (T - 2) // 2
    nb = T - 2 - m
    top = np.zeros((m + 2, 3 * P + nr, P), dtype=np_dtype)
    top[:m, :P] = Dn[:m]
    top[:m, P:2 * P] = U1n[:m].transpose(0, 2, 1)
    top[:m, 2 * P:3 * P] = U2n[:m].transpose(0, 2, 1)
    top[:m, 3 * P:] = Rn[:m].transpose(0, 2, 1)
    bot = np.zeros((nb + 2, 3 * P + nr, P), dtype=np_dtype)
    bot[:nb, :P] = Dn[:m + 1:-1]
    bot[:nb, P:2 * P] = U1n[m + 1:][::-1]
    bot[:nb, 2 * P:3 * P] = U2n[m:][::-1]
    bot[:nb, 3 * P:] = Rn[:m + 1:-1].transpose(0, 2, 1)

    ok, failure = [True, True], []

    def run(i: int, rows: np.ndarray, n: int, job) -> None:
        try:
            ok[i] = job(f, rows, n, P, nr) is not False
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    def both(job) -> None:
        other = threading.Thread(target=run, args=(1, bot, nb, job))
        other.start()
        run(0, top, m, job)
        other.join()
        if failure:
            raise failure[0]

    with one_blas_thread():
        both(_eliminate)
        if not all(ok):
            return None
        # the middle frames' 2P x 2P system: their own blocks and both halves' Schur updates
        # (the diagonal blocks' lower triangles hold them)
        M = np.zeros((2 * P, 2 * P))
        M[:P, :P] = _symmetric(Dn[m] + top[m, :P].T + bot[nb + 1, :P].T)
        M[P:, P:] = _symmetric(Dn[m + 1] + top[m + 1, :P].T + bot[nb, :P].T)
        M[:P, P:] = U1n[m] + top[m, P:2 * P].T + bot[nb, P:2 * P]
        M[P:, :P] = M[:P, P:].T
        b = np.concatenate([Rn[m] + top[m, 3 * P:].T + bot[nb + 1, 3 * P:].T,
                            Rn[m + 1] + top[m + 1, 3 * P:].T + bot[nb, 3 * P:].T])
        try:
            factor = scipy.linalg.cho_factor(M, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None
        mid = scipy.linalg.cho_solve(factor, b, check_finite=False)
        if not np.isfinite(mid).all():
            return None
        x_m, x_m1 = mid[:P].T, mid[P:].T  # (r, P)
        top[m, 3 * P:], top[m + 1, 3 * P:] = x_m, x_m1
        bot[nb, 3 * P:], bot[nb + 1, 3 * P:] = x_m1, x_m
        both(_substitute)
    x = np.concatenate([top[:m + 2, 3 * P:], bot[:nb][::-1, 3 * P:]])  # (T, r, P)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1))).double()
