"""A second-order solver for the single-view body stage: Levenberg-Marquardt on the banded system.

The body stage's objective (`SingleViewFitter._loss`: robust reprojection, pose and limit
priors, the pull toward an initialisation, joint acceleration and rotation velocity, the shape
prior) is a sum of squares once the Geman-McClure kernel is reweighted (IRLS). Each frame's
parameters (its 20 local rotation vectors and the root translation: P = 3J + 3) meet their
neighbours' only through the temporal terms, at most two frames apart, so the Gauss-Newton
matrix is block-banded (block-pentadiagonal), plus the few shape parameters shared by the
whole track (an arrow on its border).

Jacobians are analytic (`meshcap.fitting.jacobians`, shared with the Laplace sigma): the
fast path's keypoints are linear in the joints' world rotations and positions
(`AnnyModel.keypoint_basis`), and turning joint i by w (world frame) moves any point p carried
by its subtree by w x (p - x_i). The shape's comes from central differences
of the shape-only quantities (`TrackSolver.shape_jacobian`). The damped system is solved
exactly by a block Cholesky along the track (`meshcap.fitting.banded`), about 0.03 s for 300
frames here; conjugate gradients with block-Jacobi preconditioning, tried first, left the slow modes along the track
unsolved (114 against 70 mm on a synthetic track).

Written by hand because no library on PyPI does this: Theseus/pypose solve dense or generic
sparse systems through autograd Jacobians (`torch.func.jacfwd` of this model: about 0.4 s per
linearisation of a 300-frame track on this CPU, against about 0.07 s analytic), and Momentum's
Gauss-Newton is a C++ library for its own skeleton format.
"""
from __future__ import annotations

import math
from typing import Protocol

import roma
import torch

from meshcap.body_models.base import descendants
from meshcap.fitting.banded import block_pentadiagonal_solve
from meshcap.fitting.camera import project, projection_jacobian
from meshcap.fitting.jacobians import (point_jacobians, posed_jacobians, posed_keypoints, rotvec_to_right_jacobian,
                                         turn_jacobian)
from meshcap.fitting.priors import limit_excess, limit_excess_bounds


def _gmof_weight(sq_residual: torch.Tensor, sigma: float) -> torch.Tensor:
    """The derivative of `smplify.gmof` in the squared residual: the IRLS weight of each."""
    s2 = sigma * sigma
    return s2 * s2 / (s2 + sq_residual).square()


def _frame_steps(H: torch.Tensor, g: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Levenberg-Marquardt steps of N independent frames: (step (N, P) float64, ok (N,)) for
    Gauss-Newton matrices H (N, P, P) and gradients g (N, P) (float64) with Marquardt damping
    lam (N,) * diag(H); the step is zero where the damped matrix is not positive definite."""
    Hd = H + torch.diag_embed(lam.double()[:, None] * torch.diagonal(H, dim1=-2, dim2=-1) + 1e-9)
    L, info = torch.linalg.cholesky_ex(Hd)
    step = torch.cholesky_solve(-g[..., None], L)[..., 0]
    ok = info == 0
    return torch.where(ok[:, None], step, torch.zeros_like(step)), ok


def _bt(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-1, -2)


def _second_difference_adjoint(d: torch.Tensor, T: int) -> torch.Tensor:
    """(T, ...) each frame's sum of the second differences d (T-2, ...) it enters, weighted by
    its coefficient there (1, -2, 1): the transpose of taking second differences."""
    out = d.new_zeros((T,) + tuple(d.shape[1:]))
    for i, c in enumerate((1.0, -2.0, 1.0)):
        out[i:i + len(d)] += c * d
    return out


class BandedSystem:
    """The damped Gauss-Newton system of a track: frame blocks D (T, P, P), the couplings of
    frames one and two apart U1 (T-1, P, P), U2 (T-2, P, P), the gradient g (T, P) (the
    model's dtype: the solve is float32); and, when the shape is solved too, its block Hss
    (S, S), its coupling Hps (T, P, S) and gradient gs (S,) (float64)."""

    def __init__(self, D, U1, U2, g, Hss=None, Hps=None, gs=None) -> None:
        self.D, self.U1, self.U2, self.g = D, U1, U2, g
        self.Hss, self.Hps, self.gs = Hss, Hps, gs

    def solve(self, lam: torch.Tensor | float, lam_shape: float | None = None, max_shape_step: float | None = None,
              precision: torch.dtype = torch.float32):
        """The step (T, P) [and (S,)] minimising the linearised objective with Marquardt damping
        lam * diag(H), lam () or per frame (T,) (the shape's: `lam_shape`, default the mean):
        an exact block Cholesky along the track (`block_pentadiagonal_solve`, in `precision`),
        the shape by its Schur complement (float64), its step shortened to at most
        `max_shape_step` in any parameter. (None, None) where the damped matrix is not positive
        definite in that precision."""
        T, P = self.g.shape
        lam = torch.as_tensor(lam, dtype=torch.float64)
        lam_shape = float(lam.mean()) if lam_shape is None else lam_shape
        diag = torch.diagonal(self.D, dim1=-2, dim2=-1).double()
        damp = (lam[:, None] if lam.ndim else lam) * diag + 1e-9
        cols = [-self.g.double()[..., None]]
        has_s = self.Hss is not None
        if has_s:
            cols.append(self.Hps.double())
        X = block_pentadiagonal_solve(self.D, self.U1, self.U2, torch.cat(cols, -1), damp, precision)
        if X is None:
            return None, None
        if not has_s:
            return X[..., 0], None
        Xg, Xs = X[..., 0], X[..., 1:]
        Hss, Hps = self.Hss.double(), self.Hps.double()
        schur = Hss + torch.diag(lam_shape * torch.diagonal(Hss) + 1e-9) - torch.einsum("tps,tpq->sq", Hps, Xs)
        ds = torch.linalg.solve(schur, -self.gs.double() - torch.einsum("tps,tp->s", Hps, Xg))
        if max_shape_step is not None:
            # the frames' step below is the best one given whatever shape step is taken, so a
            # shortened shape step keeps the rest consistent
            ds = ds * (max_shape_step / ds.abs().max().clamp(min=max_shape_step))
        return Xg - Xs @ ds, ds


class PointTerm(Protocol):
    """An added least-squares term on some of the body's points, which `TrackSolver.solve`
    (and so `SingleViewFitter.refine`) minimises with the fit's own objective, e.g. the foot
    contacts of `meshcap.contacts`. Its points are keypoints `index` of layout `layout`
    (E of them), posed by the track; a residual touches one frame or two consecutive ones.

    cost(pts (T, E, 3)) -> (T,) its cost per frame (a pair of frames' on the earlier one),
    differentiable (the Adam path sums it);
    linearise(pts) -> (ru (T, R), Ju (T, R, E, 3), rp (T-1, Q), Jp0 (T-1, Q, E, 3), Jp1): residuals
    of single frames and of pairs with their derivatives along the points of the pair's first
    and second frame, such that the cost is sum(ru^2) + sum(rp^2) to second order at `pts`
    (robust kernels reweighted, as the data term is)."""

    layout: str
    index: list[int]

    def cost(self, pts: torch.Tensor) -> torch.Tensor: ...

    def linearise(self, pts: torch.Tensor) -> tuple[torch.Tensor, ...]: ...


class TrackSolver:
    """Levenberg-Marquardt on a `SingleViewFitter`'s body-stage objective, for models with a
    linear keypoint basis (anny's fast path).

    `solve(pose (T, J, 3), transl (T, 3), shape_p (1, S), obs, ...)` returns the improved
    (pose, transl, shape_p, loss history). The cost it accepts steps on is the fitter's own
    `_loss`, so the two solvers minimise the same objective.
    """

    # Shape parameters (anny: phenotype logits) move at most this much per step: two of them
    # trade off nearly one for one in the keypoints, and undamped steps swung them by 3-6
    # logits back and forth on a long walk. Not less: a fit from the average body may have
    # far to go (0.5 held a rest-pose fit of a climbing clip at 132 against 106-125 mm).
    MAX_SHAPE_STEP = 2.0
    LIMIT_BAND = 0.01  # rad

    def __init__(self, fitter) -> None:
        model = fitter.model
        if not hasattr(model, "keypoint_basis"):
            raise ValueError(f"{model.name}: no linear keypoint basis; the Gauss-Newton solver needs one")
        self.fitter = fitter
        self.model = model
        J = model.num_joints
        self.desc = descendants(model.parents, model.dtype, model.device)
        self.P = 3 * J + 3

    # -- residuals and their Jacobians ------------------------------------------------------

    def log_size_gradient(self, shape_p, step: float = 3e-3) -> torch.Tensor:
        """(S,) float64: the derivative of log `_relative_size` along the shape parameters
        (1, S), by central differences as `shape_jacobian` takes them."""
        f = self.fitter
        S = shape_p.shape[-1]
        e = step * torch.eye(S, dtype=shape_p.dtype, device=shape_p.device)
        s = f._relative_size(f._shape_from_param(torch.cat([shape_p + e, shape_p - e]))).double().log()
        return (s[:S] - s[S:]) / (2 * step)

    def shape_jacobian(self, R, G, W, shape_p, step: float = 3e-3):
        """The keypoints' (T, K, 3, S) and joints' (T, J, 3, S) derivatives along the shape
        parameters (1, S), at rotations R (T, J, 3, 3) local, G world; W (K, J) the keypoint
        basis's joint weights (they do not depend on the shape). The shape enters only
        through shape-only quantities (the rest joints, the keypoints' local offsets), in which
        the posed points are linear: those are differenced (central, `step`), not the posed
        track. Not forward-mode autodiff: its levels are process-global and `fit_tracks` fits
        several tracks in threads at once."""
        f = self.fitter
        S = shape_p.shape[-1]
        e = step * torch.eye(S, dtype=shape_p.dtype, device=shape_p.device)
        # every +-step shape in one batch: (2S, 6), the plus steps first
        return self.basis_jacobian(R, G, W, f._shape_from_param(torch.cat([shape_p + e, shape_p - e])), step)

    def basis_jacobian(self, R, G, W, shapes, step: float, bone_scale=None):
        """The keypoints' (T, K, 3, n) and joints' (T, J, 3, n) central differences along n
        parameters of the shape-only quantities, posed by rotations R (T, J, 3, 3) local and
        G world (W (K, J) the keypoint basis's joint weights): shapes (2n, S) (and
        `bone_scale` (2n, J) or None) are the bodies one `step` up along each parameter, then
        the n one step down. The posed points are linear in the keypoints' local offsets and
        the rest joints, so those are differenced, not the posed track."""
        n = shapes.shape[0] // 2
        C, _, q = self.model.keypoint_bases(shapes, self.fitter.layout.name, bone_scale=bone_scale)
        dC = (C[:n] - C[n:]) / (2 * step)  # (n, K, J, 3)
        dq = (q[:n] - q[n:]) / (2 * step)  # (n, 104, 3)
        dx = self.model._fk_rest_change(G, dq)  # (T, n, J, 3): the joints are linear in the rest joints
        Jkp = torch.einsum("tjde,skje->tkds", G, dC) + torch.einsum("kj,tsjd->tkds", W, dx)
        return Jkp, dx.permute(0, 2, 3, 1)

    def add_pose_prior(self, D: torch.Tensor, g: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Adds the pose prior and the joint limits on the body joints' rotation vectors (the
        root's first three entries are free) to D (T, P, P) and g (T, P) in place; returns the
        limits' excess (T, 3(J-1)) for `add_limit_ramp`."""
        o, T, J = self.fitter.options, pose.shape[0], pose.shape[1]
        body = pose[:, 1:].reshape(T, -1)
        excess = limit_excess(pose[:, 1:], self.fitter._ranges).reshape(T, -1)
        idx = torch.arange(3, 3 * J)
        D[:, idx, idx] += o.w_pose + o.w_limits * (excess != 0).to(body.dtype)
        g[:, 3:3 * J] += o.w_pose * body + o.w_limits * excess
        return excess

    def add_temporal(self, D, U1, U2, g, R, Jr, x, Jx_flat, wa: float, wr: float) -> torch.Tensor:
        """Adds the temporal terms to the banded system in place: wa times the joints' squared
        second differences (x (T, J, 3), their Jacobian Jx_flat (T, 3J, P)) and wr times the
        local rotations' squared first differences (R (T, J, 3, 3), right Jacobians Jr).
        Returns the second differences (T-2, 3J)."""
        T, J = x.shape[:2]
        acc = (x[2:] - 2 * x[1:-1] + x[:-2]).reshape(T - 2, 3 * J)
        coef = (1.0, -2.0, 1.0)
        n = T - 2
        # each frame's share of the second differences it enters: sums of coefficient
        # products over the (up to three) differences, so each band takes one product
        c = torch.zeros(3, 3, T, dtype=x.dtype)
        for i in range(3):
            for k in range(i, 3):
                c[k - i, i, i:i + n] += coef[i] * coef[k]
        c = c.sum(1)
        D += wa * c[0][:, None, None] * (_bt(Jx_flat) @ Jx_flat)
        U1 += wa * c[1][:-1, None, None] * (_bt(Jx_flat[:-1]) @ Jx_flat[1:])
        U2 += wa * (_bt(Jx_flat[:-2]) @ Jx_flat[2:])
        g += wa * (_bt(Jx_flat) @ _second_difference_adjoint(acc, T)[..., None])[..., 0]
        # rotation velocity |R_t+1 - R_t|^2: dR_j = R_j [Jr_j dv]x, each joint's 9 entries on its
        # own 3 values, so it fills the 3x3 blocks on the diagonal of the rotations' part. The
        # products of those 9 x 3 Jacobians reduce to 3 x 3 ones through the relative turn
        # Q = R_t' R_t+1 (<[a]x, M [b]x> = a' (tr(M) I - M') b, <[a]x, M> = a . vee(M - M')):
        # the same numbers at a third of the cost of forming them.
        Q = _bt(R[:-1]) @ R[1:]  # (T-1, J, 3, 3)
        JrT = _bt(Jr)
        cnt = torch.full((T, 1, 1, 1), 2.0, dtype=x.dtype)
        cnt[0] = cnt[-1] = 1.0
        eye = torch.eye(3, dtype=x.dtype)
        cross = Q.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] * eye - _bt(Q)
        rows = (3 * torch.arange(J)[:, None, None] + torch.arange(3)[None, :, None]).expand(J, 3, 3).reshape(-1)
        cols = (3 * torch.arange(J)[:, None, None] + torch.arange(3)[None, None, :]).expand(J, 3, 3).reshape(-1)
        D[:, rows, cols] += (2.0 * wr * cnt * (JrT @ Jr)).reshape(T, -1)
        U1[:, rows, cols] -= (wr * (JrT[:-1] @ cross @ Jr[1:])).reshape(T - 1, -1)
        A = Q - _bt(Q)
        w = torch.stack([A[..., 2, 1], A[..., 0, 2], A[..., 1, 0]], -1)[..., None]  # (T-1, J, 3, 1)
        gr = torch.zeros(T, J, 3, dtype=x.dtype)
        gr[:-1] -= (JrT[:-1] @ w)[..., 0]
        gr[1:] += (JrT[1:] @ w)[..., 0]
        g[:, :3 * J] += wr * gr.reshape(T, 3 * J)
        return acc

    def add_limit_ramp(self, D: torch.Tensor, g: torch.Tensor, pose: torch.Tensor, excess: torch.Tensor) -> None:
        """A joint inside its range whose own Newton step (gradient over curvature) would carry
        it past a limit gets the limit's curvature, ramping in over the first LIMIT_BAND rad
        of the predicted crossing: without it the step crosses as if the limit were not
        there, the cost rises a hundredfold past it, and the step is refused for the whole
        track or undone the next time. Joints driven away from a limit stay free, and the
        ramp keeps the system continuous in the state (a switch on the gradient's sign made
        two fits of the same keypoints up to round-off end 6 cm apart). In place, after every
        other term is in D and g."""
        f = self.fitter
        T, J = pose.shape[:2]
        idx = torch.arange(3, 3 * J)
        lo, hi = limit_excess_bounds(f._ranges)
        reach = pose[:, 1:] + (-g[:, 3:3 * J] / D[:, idx, idx]).reshape(T, J - 1, 3)
        over = torch.maximum(reach - hi, lo - reach)  # how far past a limit it would go
        inside = (excess.reshape(T, J - 1, 3) == 0).to(D.dtype)
        ramp = (over / self.LIMIT_BAND).clamp(0.0, 1.0) * inside
        D[:, idx, idx] += f.options.w_limits * ramp.reshape(T, -1)

    def linearise(self, pose, transl, shape_p, obs, init_joints=None, init_w=None,
                  temporal_scale: float = 1.0, with_shape: bool = True, shape_center=None,
                  extra: PointTerm | None = None) -> BandedSystem:
        """The Gauss-Newton system at (pose (T, J, 3), transl (T, 3), shape_p (1, S)); the shape
        prior pulls toward `shape_center` (1, S) (None: the average body); `extra` an added
        term (its derivatives along the shape are not part of the system: keep the shape)."""
        if extra is not None and with_shape:
            raise ValueError("an added term is solved with the shape kept (with_shape=False)")
        f = self.fitter
        o = f.options
        xy, conf, scale, K, fps = obs
        T, J = pose.shape[:2]
        P = self.P
        shape = f._shape_from_param(shape_p)
        temporal = o.temporal and T >= 3 and temporal_scale > 0
        pj = posed_jacobians(self.model, f.layout.name, pose, transl, shape, self.desc,
                             joints=temporal or init_joints is not None)
        R, G, x, kp, Jr, W, Jkp, Jx = pj.R, pj.G, pj.x, pj.kp, pj.Jr, pj.W, pj.Jkp, pj.Jx
        Kn = kp.shape[1]

        # data: IRLS weights of the Geman-McClure kernel
        Jproj = projection_jacobian(kp, K)
        unit = 0.01 * scale[:, None, None]
        r = (project(kp, K) - xy) / unit
        norm = (conf.sum() / T).clamp(min=1e-6)
        w = conf * _gmof_weight(r.square().sum(-1), o.sigma) / norm  # (T, K)
        Jd = (Jproj @ Jkp) / unit[..., None]  # (T, K, 2, P)
        Jd2 = Jd.reshape(T, 2 * Kn, P)
        # weighted products as batched matrix products: three-operand einsums took twice as long
        JdwT = _bt(Jd2 * w.repeat_interleave(2, 1)[..., None])  # (T, P, 2K)
        D = JdwT @ Jd2
        g = (JdwT @ r.reshape(T, 2 * Kn, 1))[..., 0]

        excess = self.add_pose_prior(D, g, pose)

        Jx_flat = Jx.reshape(T, 3 * J, P) if Jx is not None else None
        if init_joints is not None:
            # rel_d = x_d - x_0; x_0 moves with the translation only
            Jrel = Jx.clone()
            Jrel[..., 3 * J:] -= Jx[:, :1, :, 3 * J:]
            wi = (o.w_init * init_w / J)  # (T, J)
            res = (x - x[:, :1]) - init_joints
            Jrel_f = Jrel.reshape(T, 3 * J, P)
            JrwT = _bt(Jrel_f * wi.repeat_interleave(3, 1)[..., None])  # (T, P, 3J)
            D += JrwT @ Jrel_f
            g += (JrwT @ res.reshape(T, 3 * J, 1))[..., 0]

        U1 = torch.zeros(max(T - 1, 0), P, P, dtype=D.dtype)
        U2 = torch.zeros(max(T - 2, 0), P, P, dtype=D.dtype)
        if temporal:
            # accelerations per body size (`_relative_size`): the residual acc / s, whose
            # derivative along the shape is (d acc - acc d log s) / s
            rel = f._relative_size(shape)
            wa = temporal_scale * o.w_accel * fps ** 4 / float(rel) ** 2
            wr = temporal_scale * o.w_rot_vel * fps ** 2
            acc = self.add_temporal(D, U1, U2, g, R, Jr, x, Jx_flat, wa, wr)

        if extra is not None:
            pts, Jpts = point_jacobians(G, x, G @ Jr, *self._basis(extra, shape_p), self.desc)
            ru, Ju, rp, Jp0, Jp1 = extra.linearise(pts)
            A = torch.einsum("treD,teDp->trp", Ju, Jpts)  # (T, R, P)
            D += _bt(A) @ A
            g += (_bt(A) @ ru[..., None])[..., 0]
            if T >= 2:
                A0 = torch.einsum("tqeD,teDp->tqp", Jp0, Jpts[:-1])
                A1 = torch.einsum("tqeD,teDp->tqp", Jp1, Jpts[1:])
                D[:-1] += _bt(A0) @ A0
                D[1:] += _bt(A1) @ A1
                U1 += _bt(A0) @ A1
                g[:-1] += (_bt(A0) @ rp[..., None])[..., 0]
                g[1:] += (_bt(A1) @ rp[..., None])[..., 0]

        self.add_limit_ramp(D, g, pose, excess)

        system = BandedSystem(D, U1, U2, g)
        if with_shape:
            Jkp_s, Jx_s = self.shape_jacobian(R, G, W, shape_p)
            Jd_s = (Jproj @ Jkp_s) / unit[..., None]
            S = shape_p.shape[-1]
            Hss = torch.einsum("tkcp,tk,tkcq->pq", Jd_s, w, Jd_s).double()
            Hps = (JdwT @ Jd_s.reshape(T, 2 * Kn, S)).double()
            gs = torch.einsum("tkcp,tk,tkc->p", Jd_s, w, r).double()
            if init_joints is not None:
                Jrel_s = Jx_s - Jx_s[:, :1]
                Hss += torch.einsum("tdcp,td,tdcq->pq", Jrel_s, wi, Jrel_s).double()
                Hps += (JrwT @ Jrel_s.reshape(T, 3 * J, S)).double()
                gs += torch.einsum("tdcp,td,tdc->p", Jrel_s, wi, res).double()
            if temporal:
                As = (Jx_s[2:] - 2 * Jx_s[1:-1] + Jx_s[:-2]).reshape(T - 2, 3 * J, S).double()
                if o.accel_per_size:
                    As = As - acc.double()[..., None] * self.log_size_gradient(shape_p)[None, None]
                Hss += wa * torch.einsum("tcp,tcq->pq", As, As)
                gs += wa * torch.einsum("tcp,tc->p", As, acc.double())
                Hps += wa * (_bt(Jx_flat.double()) @ _second_difference_adjoint(As, T))
            w_s, off = f._shape_prior(shape_p, shape_center)
            Hss += w_s * torch.eye(S, dtype=torch.float64)
            gs += w_s * off[0].double()
            system.Hss, system.Hps, system.gs = Hss, Hps, gs
        return system

    @torch.no_grad()
    def solve_root(self, root, transl, body, shape_p, obs, mask, iters: int = 10):
        """The root stage: each frame's root rotation (N, 3) and translation (N, 3) against the
        keypoints that `mask` (K,) keeps, the body (N, J-1, 3) and shape held; frames are
        independent, so each takes its own 6x6 Levenberg-Marquardt steps and damping.
        Returns (root, transl)."""
        f = self.fitter
        o = f.options
        xy, conf, scale, K, _ = obs
        N = root.shape[0]
        shape = f._shape_from_param(shape_p)
        C, W = self.model.keypoint_basis(shape, f.layout.name)
        q = self.model._rest(shape)["q"]
        wc = conf * mask
        norm = (wc.sum() / N).clamp(min=1e-6)
        unit = 0.01 * scale[:, None, None]
        eye = torch.eye(3, dtype=root.dtype)

        def frame_cost(root, transl):
            frame, _, _ = f._loss(root, body, shape_p, transl, obs, mask=mask)
            return frame

        cost = frame_cost(root, transl)
        lam = torch.full((N,), 1e-3, dtype=root.dtype)
        for _ in range(iters):
            pose = torch.cat([root[:, None], body], 1)
            G, x = self.model._fk(roma.rotvec_to_rotmat(pose), transl, q)
            kp = posed_keypoints(G, x, C, W)
            B0 = G[:, 0] @ rotvec_to_right_jacobian(root)
            # turning the root by w moves every keypoint by w x (kp - x_root)
            Jkp = torch.cat([turn_jacobian((kp - x[:, :1])[:, :, None], B0[:, None, None])[:, :, :, 0],
                             W.sum(1)[None, :, None, None] * eye.expand(N, kp.shape[1], 3, 3)], -1)
            Jproj = projection_jacobian(kp, K)
            r = (project(kp, K) - xy) / unit
            w = wc * _gmof_weight(r.square().sum(-1), o.sigma) / norm
            Jd = ((Jproj @ Jkp) / unit[..., None]).reshape(N, -1, 6)
            w2 = w.repeat_interleave(2, 1)[..., None]
            H = (_bt(Jd * w2) @ Jd).double()
            g = (_bt(Jd * w2) @ r.reshape(N, -1, 1))[..., 0].double()
            step = _frame_steps(H, g, lam)[0].to(root.dtype)
            r_new, t_new = root + step[:, :3], transl + step[:, 3:]
            c_new = frame_cost(r_new, t_new)
            better = torch.isfinite(c_new) & (c_new < cost)
            root = torch.where(better[:, None], r_new, root)
            transl = torch.where(better[:, None], t_new, transl)
            cost = torch.where(better, c_new, cost)
            lam = torch.where(better, (lam / 4).clamp(min=1e-6), lam * 8)
        return root, transl

    @torch.no_grad()
    def solve_frames(self, pose, transl, shape_p, obs, init_joints=None, init_w=None, iters: int = 3):
        """Levenberg-Marquardt on N frames that do not meet (the temporal terms left out, the
        shape held): each frame its own P x P system, step and damping, all solved at once by
        batched Cholesky, and a frame's step taken only where its own cost falls (the heading
        stage's two headings per frame, `FitOptions.iters_gn_heading`). pose (N, J, 3), transl
        (N, 3); returns (pose, transl, the per-frame cost (N,) of `SingleViewFitter._loss` with
        the initialisation's pull)."""
        N, J = pose.shape[:2]
        args = (obs, init_joints, init_w)
        frame, _ = self.costs(pose, transl, shape_p, *args, temporal_scale=0.0)
        lam = torch.full((N,), 1e-3, dtype=torch.float64)
        for _ in range(iters):
            system = self.linearise(pose, transl, shape_p, *args, temporal_scale=0.0, with_shape=False)
            step, ok = _frame_steps(system.D.double(), system.g.double(), lam)
            step = step.to(pose.dtype)
            p_new = pose + step[:, :3 * J].reshape(N, J, 3)
            t_new = transl + step[:, 3 * J:]
            f_new, _ = self.costs(p_new, t_new, shape_p, *args, temporal_scale=0.0)
            better = ok & torch.isfinite(f_new) & (f_new < frame)
            pose = torch.where(better[:, None, None], p_new, pose)
            transl = torch.where(better[:, None], t_new, transl)
            frame = torch.where(better, f_new, frame)
            lam = torch.where(better, (lam / 4).clamp(min=1e-6), lam * 8)
        return pose, transl, frame

    # -- the iterations -----------------------------------------------------------------------

    def _basis(self, extra: PointTerm, shape_p) -> tuple[torch.Tensor, torch.Tensor]:
        """The keypoint basis (C (E, J, 3), W (E, J)) of `extra`'s points."""
        C, W = self.model.keypoint_basis(self.fitter._shape_from_param(shape_p), extra.layout)
        return C[extra.index], W[extra.index]

    def costs(self, pose, transl, shape_p, obs, init_joints=None, init_w=None, temporal_scale: float = 1.0,
              shape_center=None, extra: PointTerm | None = None) -> tuple[torch.Tensor, float]:
        """(per-frame cost (T,), the whole objective) at (pose, transl, shape_p)."""
        frame, track, _ = self.fitter._loss(pose[:, 0], pose[:, 1:], shape_p, transl, obs, init_joints,
                                            init_w, temporal_scale=temporal_scale, shape_center=shape_center)
        if extra is not None:
            G, x = self.model._fk(roma.rotvec_to_rotmat(pose), transl,
                                  self.model._rest(self.fitter._shape_from_param(shape_p))["q"])
            frame = frame + extra.cost(posed_keypoints(G, x, *self._basis(extra, shape_p)))
        return frame, float(frame.sum() + track)

    @torch.no_grad()
    def solve(self, pose, transl, shape_p, obs, init_joints=None, init_w=None, temporal_scale: float = 1.0,
              iters: int = 10, fit_shape: bool = True, callback=None, shape_steps: int = 1000, shape_center=None,
              extra: PointTerm | None = None):
        """Up to `iters` accepted Levenberg-Marquardt steps (fewer once a step gains less than
        1e-3 of the cost). `callback(it, pose, transl, shape_p)` may return a new (pose, transl)
        between steps (the kinematic flips), which is then taken as is. The shape (with
        `fit_shape`) moves in the first `shape_steps` steps only, its prior pulling toward
        `shape_center` (1, S) (None: the average body). `extra`: an added term (`PointTerm`;
        the shape is then kept).

        The damping is per frame: a step is taken or refused for the whole track (the cost
        must fall), but a refused step is retried with more damping only in the frames whose
        own cost rose. With one damping for all, a few frames whose linearisation overshoots
        (fast limbs, a body near a joint limit) refuse the step for every frame, and a long
        track, which nearly always has such frames, crawled: a 600-frame window of the CMU
        walk needed 22 solves for 12 steps and still gained 2% a step at the end.
        Returns (pose (T, J, 3), transl (T, 3), shape_p (1, S), loss history)."""
        T, J = pose.shape[:2]
        pose, transl, shape_p = pose.clone(), transl.clone(), shape_p.clone()
        args = (obs, init_joints, init_w, temporal_scale)
        frame, cost = self.costs(pose, transl, shape_p, *args, shape_center=shape_center, extra=extra)
        history = [cost]
        lam = torch.full((T,), 1e-3, dtype=torch.float64)
        lam_s = 1e-3
        for it in range(iters):
            if callback is not None:
                new = callback(it, pose, transl, shape_p)
                if new is not None:
                    pose, transl = new
                    frame, cost = self.costs(pose, transl, shape_p, *args, shape_center=shape_center, extra=extra)
            # the shape settles in the first steps; after them its Jacobian (the costliest part
            # of a linearisation) is left out and the shape kept
            system = self.linearise(pose, transl, shape_p, *args,
                                    with_shape=fit_shape and it < shape_steps and extra is None,
                                    shape_center=shape_center, extra=extra)
            accepted = False
            for _ in range(4):
                step, step_s = system.solve(lam, lam_s, self.MAX_SHAPE_STEP)
                if step is None:  # not positive definite: more damping
                    lam, lam_s = lam * 8.0, lam_s * 8.0
                    continue
                step = step.to(pose.dtype)
                p_new = pose + step[:, :3 * J].reshape(T, J, 3)
                t_new = transl + step[:, 3 * J:]
                s_new = shape_p + step_s.to(pose.dtype)[None] if step_s is not None else shape_p
                f_new, c_new = self.costs(p_new, t_new, s_new, *args, shape_center=shape_center, extra=extra)
                worse = ~(f_new <= frame)  # NaN counts as worse
                if math.isfinite(c_new) and c_new < cost:
                    accepted = True
                    break
                # refused: damp the frames that got worse (all, where the track's terms did);
                # most frames worse at once is the shared shape's doing
                lam = torch.where(worse, lam * 8.0, lam) if worse.any() else lam * 8.0
                if worse.double().mean() > 0.5:
                    lam_s *= 8.0
            if not accepted:
                break
            gain = (cost - c_new) / max(abs(cost), 1e-12)
            pose, transl, shape_p, frame, cost = p_new, t_new, s_new, f_new, c_new
            history.append(cost)
            lam = torch.where(worse, lam * 2.0, lam / 4.0).clamp(min=1e-6)
            lam_s = max(lam_s / 4.0, 1e-6)
            if gain < 1e-3:
                break
        return pose, transl, shape_p, history
