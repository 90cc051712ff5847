"""The SPIN loop: fits of a user's own unlabelled keypoint tracks fine-tune the regressor.

One round, as SPIN does it with POCO's bootstrap:
1. regress every frame of every track, and fit from there (the fitting stage as `capture`
   runs it: temporal terms, the temporal lifter's joints as the pull, its sigma as the
   pull's weight);
2. keep as pseudo-labels only the frames the fit is sure of: a small mean per-joint sigma (the
   fit's own, the Laplace sigma and the lifter's), a small reprojection error, most keypoints
   seen; and only the surest `keep_fraction` of each track;
3. fine-tune the regressor on those frames (the real detector keypoints in, the fitted pose,
   shape and camera as targets), every step mixed half and half with fresh synthetic people,
   whose exact labels keep the sigma head honest and the network from forgetting; on those
   synthetic people the tuned network is also held to the original's pose (distillation, as
   in learning without forgetting), so what the real footage teaches it does not spill over
   onto inputs it already handled;
4. keep the result only if it is no worse, on synthetic people and on real motion (mocap
   training takes through random cameras), than the network it came from (`spin_round`).

    python -m meshcap.regression.spin VIDEO_OR_KEYPOINTS... --out tuned.safetensors

The tuned weights are used with `meshcap VIDEO --regressor --regressor-weights tuned.safetensors`.
`bench/spin.py` measures whether a round helps: the regressor on a held-out synthetic split,
the reprojection error of fits on real footage, and the real-motion benchmark's held-out
takes fitted as `capture` does, before and after.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import roma
import torch

from meshcap.body_models.base import BodyModel
from meshcap.errors import InputError
from meshcap.fitting.camera import intrinsics, project
from meshcap.fitting.metrics import mpjpe, pa_mpjpe
from meshcap.fitting.smplify import FitOptions, SingleViewFitter
from meshcap.keypoints.tracks import Tracks
from meshcap.regression import mocap, regress, regress_track
from meshcap.regression.model import INPUT_LAYOUT, KeypointRegressor, normalise_keypoints
from meshcap.regression.temporal import TemporalLifter
from meshcap.regression.train import WEIGHTS, Batch, _grouped, losses, synthetic_batch


@dataclass
class SpinOptions:
    """steps, batch (half pseudo-labelled, half synthetic), lr: the fine-tuning. max_sigma:
    metres, the largest mean per-joint fit sigma of a kept frame; keep_fraction: of each
    track's frames, at most the surest this share; max_reprojection: median reprojection error
    of a kept frame in units of the person's 2D size; min_seen: share of keypoints seen;
    pseudo_weight: of the pseudo-labelled half's loss against the synthetic half's.
    distill_weight: of the distance (squared Frobenius, per joint) between the tuned and the
    original network's rotations on the synthetic half."""

    steps: int = 300
    batch: int = 128
    lr: float = 3e-5
    max_sigma: float = 0.05
    keep_fraction: float = 0.5
    max_reprojection: float = 0.02
    min_seen: float = 0.6
    pseudo_weight: float = 1.0
    distill_weight: float = 10.0
    seed: int = 0


@dataclass
class PseudoLabels:
    """N kept frames: keypoints (N, 33, 3) as detected (blazepose33), K (N, 3, 3), and the fit's
    poses (N, J, 3), shape (N, S), transl (N, 3); sigma (N,) its mean per-joint sigma."""

    keypoints: torch.Tensor
    K: torch.Tensor
    poses: torch.Tensor
    shape: torch.Tensor
    transl: torch.Tensor
    sigma: torch.Tensor

    def __len__(self) -> int:
        return len(self.keypoints)


@dataclass
class TrackFit:
    """What one track's regress-then-fit gave: frames fitted, kept as labels, the median
    reprojection error (pixels and share of the person's size) of the seen keypoints."""

    frames: int
    kept: int
    median_px: float
    median_rel: float


def _spans(tracks: Tracks) -> list[torch.Tensor]:
    tr = tracks if tracks.layout == INPUT_LAYOUT else tracks.convert(INPUT_LAYOUT)
    out = []
    for _, (frames, kp) in sorted(tr.tracks.items()):
        span = np.zeros((frames.max() - frames.min() + 1, kp.shape[1], 3), np.float32)
        span[frames - frames.min()] = kp
        out.append(torch.from_numpy(span))
    return out


def fit_tracks_with(net: KeypointRegressor, model: BodyModel, tracks: list[Tracks],
                    options: SpinOptions | None = None, fit_options: FitOptions | None = None,
                    temporal: TemporalLifter | None = None) -> tuple[PseudoLabels, list[TrackFit]]:
    """Regress and fit every track of every video as `capture` does (with the `temporal`
    lifter where given; `fit_options` default to capture's from a regressor, `w_init` 0.5);
    returns the frames worth learning from (see the module docstring) and per-track figures."""
    o = options or SpinOptions()
    fitter = SingleViewFitter(model, INPUT_LAYOUT, fit_options or FitOptions(w_init=0.5))
    keep: dict[str, list[torch.Tensor]] = {k: [] for k in ("keypoints", "K", "poses", "shape", "transl", "sigma")}
    report = []
    for tr in tracks:
        K = intrinsics(*tr.image_size)
        for span in _spans(tr):
            init = regress_track(net, model, span, INPUT_LAYOUT, K, temporal, tr.fps)
            if init is None:  # nothing seen well enough to regress
                continue
            res = fitter.fit(span, K, init=init, fps=tr.fps)
            conf = span[..., 2]
            seen = conf > 0
            xy = span[..., :2]
            size = torch.stack([(xy[..., i].where(seen, torch.tensor(-np.inf)).amax(-1)
                                 - xy[..., i].where(seen, torch.tensor(np.inf)).amin(-1)) for i in range(2)],
                               -1).amax(-1).clamp(min=1.0)  # (T,) the person's 2D size, pixels
            err = res.reprojection_px.float()
            med_px = torch.nanmedian(torch.where(seen, err, torch.full_like(err, float("nan"))), dim=-1).values
            rel = med_px / size
            sig = res.uncertainty.float().mean(-1)
            ok = ((seen.float().mean(-1) >= o.min_seen) & (sig <= o.max_sigma) & (rel <= o.max_reprojection)
                  & torch.isfinite(rel))
            idx = torch.nonzero(ok).flatten()
            n_keep = int(math.floor(o.keep_fraction * len(span)))
            idx = idx[sig[idx].argsort()[:n_keep]]
            report.append(TrackFit(len(span), len(idx), float(torch.nanmedian(err[seen])),
                                   float(torch.nanmedian(rel[torch.isfinite(rel)])) if torch.isfinite(rel).any() else float("nan")))
            keep["keypoints"].append(span[idx])
            keep["K"].append(K.expand(len(idx), 3, 3))
            keep["poses"].append(res.poses[idx].float())
            keep["shape"].append(res.shape.float().expand(len(idx), -1))
            keep["transl"].append(res.transl[idx].float())
            keep["sigma"].append(sig[idx])
    return PseudoLabels(**{k: torch.cat(v) for k, v in keep.items()}), report


def pseudo_batch(model: BodyModel, labels: PseudoLabels, idx: torch.Tensor) -> Batch:
    """A training batch from kept fits: the detector's keypoints in, the fit's body out."""
    kp = labels.keypoints[idx]
    K = labels.K[idx]
    rot = roma.rotvec_to_rotmat(labels.poses[idx])
    shape, transl = labels.shape[idx], labels.transl[idx]
    with torch.no_grad():
        out = model(rotmats=rot.to(model.dtype), shape=shape.to(model.dtype), transl=transl.to(model.dtype),
                    layout=INPUT_LAYOUT, vertices=False)
    joints, kp3 = out.joints.float(), out.keypoints.float()
    tokens, center, half = normalise_keypoints(kp)
    clean_box = (project(kp3, K) - center[:, None]) / half[:, None, None]
    root = joints[:, :1]
    return Batch(tokens, center, half, K, rot, shape, transl, joints - root, kp3 - root, clean_box)


def _pseudo_losses(net: KeypointRegressor, model: BodyModel, b: Batch) -> dict[str, torch.Tensor]:
    """The training losses on fitted targets, each person posed with their own shape (the
    synthetic batches share shapes by groups; a user's tracks do not). No sigma term: a fit
    is not the truth, so the distance to it says nothing exact about the regressor's error."""
    pred = net(b.tokens)
    out = model(rotmats=pred["rotmats"].to(model.dtype), shape=b.shape.to(model.dtype),
                layout=INPUT_LAYOUT, vertices=False)
    joints, keypoints = out.joints.float(), out.keypoints.float()
    root = joints[:, :1]
    j_rel, kp_rel = joints - root, keypoints - root
    s, t = pred["cam"][:, :1, None], pred["cam"][:, None, 1:]
    uv = s * (kp_rel[..., :2] + t)
    return dict(rot=(pred["rotmats"] - b.rotmats).square().sum((-1, -2)).mean(),
                joints=(j_rel - b.joints_rel).abs().sum(-1).mean(),
                keypoints=(kp_rel - b.kp_rel).abs().sum(-1).mean(),
                kp2d=(uv - b.clean_box).abs().sum(-1).mean(),
                shape=(pred["shape"] - b.shape).square().sum(-1).mean())


def fine_tune(net: KeypointRegressor, model: BodyModel, labels: PseudoLabels,
              options: SpinOptions | None = None, log=None) -> KeypointRegressor:
    """A copy of `net` fine-tuned on `labels` mixed with synthetic people (module docstring)."""
    o = options or SpinOptions()
    if len(labels) == 0:
        raise InputError("no frame was fitted surely enough to learn from; nothing to fine-tune on")
    tuned = copy.deepcopy(net).train()
    teacher = copy.deepcopy(net).eval()
    torch.manual_seed(o.seed)
    g = torch.Generator().manual_seed(o.seed)
    opt = torch.optim.AdamW(tuned.parameters(), lr=o.lr, weight_decay=1e-4)
    # The shipped weights ended training at a tiny learning rate: start small, end at zero.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=max(o.steps, 2), pct_start=0.1)
    half = max(8, o.batch // 2)
    half -= half % 8  # synthetic batches come in groups of shapes
    for step in range(1, o.steps + 1):
        idx = torch.randint(len(labels), (half,), generator=g)
        lp = _pseudo_losses(tuned, model, pseudo_batch(model, labels, idx))
        sb = synthetic_batch(model, half, g)
        pred = tuned(sb.tokens)
        ls = losses(tuned, model, sb, pred)
        total = sum(WEIGHTS[k] * ls[k] for k in WEIGHTS) + o.pseudo_weight * sum(WEIGHTS[k] * lp[k] for k in lp)
        if o.distill_weight > 0:
            with torch.no_grad():
                target = teacher(sb.tokens)["rotmats"]
            total = total + o.distill_weight * (pred["rotmats"] - target).square().sum((-1, -2)).mean()
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(tuned.parameters(), 1.0)
        opt.step()
        sched.step()
        if log is not None and (step % 50 == 0 or step == o.steps):
            log(json.dumps(dict(step=step, loss=round(float(total.detach()), 4))))
    tuned.record = dict(getattr(net, "record", {}), spin=dict(asdict(o), labels=len(labels)))
    return tuned.eval()


@torch.no_grad()
def heldout_metrics(net: KeypointRegressor, model: BodyModel, people: int = 512, seed: int = 1234,
                    per_person: bool = False) -> dict:
    """The regressor alone on a held-out synthetic split (its own seed): MPJPE and PA-MPJPE
    of the fitted joints, mm (and, with `per_person`, "pa_per_person" (people,) mm)."""
    g = torch.Generator().manual_seed(seed)
    mp, pa = [], []
    for _ in range(max(1, people // 256)):
        b = synthetic_batch(model, 256, g)
        pred = net(b.tokens)
        joints, _ = _grouped(model, pred["rotmats"], b.shape)
        j_rel = joints - joints[:, :1]
        mp.append(mpjpe(j_rel, b.joints_rel))
        pa.append(pa_mpjpe(j_rel, b.joints_rel))
    out = dict(mpjpe_mm=1000 * float(torch.cat(mp).mean()), pa_mpjpe_mm=1000 * float(torch.cat(pa).mean()))
    if per_person:
        out["pa_per_person"] = 1000 * torch.cat(pa)
    return out


VALIDATION_SEED = 4321  # the gate's synthetic split; bench/spin.py reports on another (1234)


@dataclass
class RealViews:
    """Real motion the gate checks against: clips of the real-motion benchmark's *training*
    takes (`mocap.split`; the held-out takes stay for evaluation), each seen by a random
    camera (`mocap.view`, 3 px noise, 5% dropout, every other clip with face points): per clip
    keypoints (T, 17, 3) coco17, K (3, 3), truth (T, 12, 3) the body joints, camera frame."""

    keypoints: list[np.ndarray]
    K: list[np.ndarray]
    truth: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.keypoints)


def real_views(max_clips: int = 2, seed: int = VALIDATION_SEED) -> RealViews:
    """`RealViews` of up to `max_clips` 150-frame clips per training take (20 clips, 2,855
    frames by default: some takes are shorter than two clips)."""
    train, _ = mocap.split(mocap.load_takes())
    kp, Ks, truth = [], [], []
    for i, (take, _, sl) in enumerate((t, n, sl) for t in train for n, sl in mocap.clips(t, max_clips=max_clips)):
        v = mocap.view(take, sl, np.random.default_rng([seed, i]), face=i % 2 == 1, noise_px=3.0)
        kp.append(v.keypoints)
        Ks.append(v.K)
        truth.append(v.truth)
    return RealViews(kp, Ks, truth)


@torch.no_grad()
def real_motion_metrics(net: KeypointRegressor, model: BodyModel, views: RealViews) -> dict:
    """The regressor alone, frame by frame, on real motion: PA-MPJPE of its COCO body
    keypoints against the mocap joints, mm, over all frames ("pa_mpjpe_mm") and per clip
    ("pa_per_clip" (clips,): frames of a clip are far from independent, so the gate pairs
    clips)."""
    names = model.keypoint_names("coco17")
    cols = [names.index(n) for n in mocap.BODY]
    per_clip, frames = [], []
    for kp, K, truth in zip(views.keypoints, views.K, views.truth):
        r = regress(net, model, torch.from_numpy(kp), "coco17", torch.from_numpy(K))
        out = model(rotmats=roma.rotvec_to_rotmat(r["poses"]).to(model.dtype), shape=r["shape"].to(model.dtype),
                    layout="coco17", vertices=False)
        pa = 1000 * pa_mpjpe(out.keypoints[:, cols].float(), torch.from_numpy(truth))
        per_clip.append(float(pa.mean()))
        frames.append(pa)
    return dict(pa_mpjpe_mm=float(torch.cat(frames).mean()), pa_per_clip=torch.tensor(per_clip))


def _paired(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean of b - a and its standard error."""
    d = b - a
    return float(d.mean()), float(d.std() / math.sqrt(len(d)))


def interpolate(original: KeypointRegressor, tuned: KeypointRegressor, alpha: float) -> KeypointRegressor:
    """A network whose weights are (1 - alpha) original + alpha tuned (WiSE-FT, Wortsman et
    al. 2022: a fine-tuned network and the one it came from are linearly connected, and the
    mixture keeps most of the gain on the new data while giving back the loss on the old)."""
    if alpha == 1.0:
        return tuned
    mix = copy.deepcopy(tuned)
    a, b = original.state_dict(), tuned.state_dict()
    mix.load_state_dict({k: (1 - alpha) * a[k] + alpha * b[k] if a[k].is_floating_point() else b[k] for k in b})
    mix.record = dict(tuned.record, spin=dict(tuned.record.get("spin", {}), mix=alpha))
    return mix.eval()


def spin_round(net: KeypointRegressor, model: BodyModel, tracks: list[Tracks],
               options: SpinOptions | None = None, log=None,
               pseudo_weights: tuple[float, ...] = (1.0, 0.3),
               mixes: tuple[float, ...] = (1.0, 0.5, 0.25),
               tolerance_se: float = 1.0, temporal: TemporalLifter | None = None,
               real: RealViews | None = None) -> tuple[KeypointRegressor, dict]:
    """One round: pseudo-labels from `tracks` (fitted with the `temporal` lifter where given,
    as `capture` does), then fine-tuning, gated twice: on a synthetic validation split (512
    people) and on real motion (`real`, default `real_views()`: mocap training takes through
    random cameras). The result is kept only if it is not detectably worse on either, i.e. its
    PA-MPJPE minus the original's, paired person by person (synthetic) and clip by clip
    (real), averages at most `tolerance_se` standard errors of that difference. A tuned
    network that is worse is first mixed back toward the original (`interpolate`, the largest
    share of `mixes` that passes); failing that, the pseudo-labels' weight is lowered and it
    tries again; if nothing passes, the original is returned unchanged. The report says what
    happened."""
    o = options or SpinOptions()
    labels, fits = fit_tracks_with(net, model, tracks, o, temporal=temporal)
    report = dict(labels=len(labels), tracks=[asdict(f) for f in fits], tried=[])
    real = real if real is not None else real_views()
    base = heldout_metrics(net, model, 512, VALIDATION_SEED, per_person=True)
    base_pp = base.pop("pa_per_person")
    base_real = real_motion_metrics(net, model, real)
    base_rc = base_real.pop("pa_per_clip")
    report["validation_before"] = base
    report["real_before"] = base_real
    for w in pseudo_weights:
        tuned = fine_tune(net, model, labels, replace(o, pseudo_weight=w), log)
        for alpha in mixes:
            cand = interpolate(net, tuned, alpha)
            val = heldout_metrics(cand, model, 512, VALIDATION_SEED, per_person=True)
            diff, se = _paired(base_pp, val.pop("pa_per_person"))
            rv = real_motion_metrics(cand, model, real)
            rdiff, rse = _paired(base_rc, rv.pop("pa_per_clip"))
            report["tried"].append(dict(pseudo_weight=w, mix=alpha, validation=val, paired_diff_mm=diff,
                                        paired_se_mm=se, real=rv, real_diff_mm=rdiff, real_se_mm=rse))
            if diff <= tolerance_se * se and rdiff <= tolerance_se * rse:
                report["accepted_weight"], report["accepted_mix"] = w, alpha
                return cand, report
    report["accepted_weight"] = report["accepted_mix"] = None
    return net, report


def main(argv: list[str] | None = None) -> None:
    from meshcap.body_models import load_body_model
    from meshcap.keypoints.pipeline import video_tracks
    from meshcap.keypoints.readers import read_keypoints
    from meshcap.regression.temporal import SHIPPED_TEMPORAL, load_temporal
    from meshcap.regression.weights import load_regressor, save_weights

    ap = argparse.ArgumentParser(prog="python -m meshcap.regression.spin",
                                 description="fine-tune the regressor on fits of your own videos (one SPIN round)")
    ap.add_argument("sources", nargs="+", help="videos, or keypoint files/folders (meshcap .npz, COCO .json, OpenPose)")
    ap.add_argument("--out", required=True, help=".safetensors file to write")
    ap.add_argument("--weights", default=None, help="weights to start from (default: the shipped ones)")
    ap.add_argument("--temporal", default=None,
                    help="temporal lifter weights the fits are pulled toward (default: the shipped ones, as capture)")
    ap.add_argument("--no-temporal", action="store_true", help="fit without the temporal lifter")
    ap.add_argument("--steps", type=int, default=SpinOptions.steps)
    ap.add_argument("--max-sigma", type=float, default=SpinOptions.max_sigma)
    ap.add_argument("--distill", type=float, default=SpinOptions.distill_weight,
                    help="weight of holding the tuned network to the original on synthetic people")
    args = ap.parse_args(argv)
    model = load_body_model("anny")
    net = load_regressor(args.weights)
    tracks = []
    for src in args.sources:
        p = Path(src)
        keypoint_file = p.suffix.lower() in (".npz", ".json") or (p.is_dir() and any(p.glob("*.json")))
        tracks.append(read_keypoints(p) if keypoint_file else video_tracks(p))
    opts = SpinOptions(steps=args.steps, max_sigma=args.max_sigma, distill_weight=args.distill)
    before = heldout_metrics(net, model)
    lifter = load_temporal(args.temporal) if args.temporal else (
        load_temporal() if SHIPPED_TEMPORAL.exists() and not args.no_temporal else None)
    tuned, report = spin_round(net, model, tracks, opts, log=print, temporal=lifter)
    after = heldout_metrics(tuned, model)
    save_weights(tuned, args.out, tuned.record)
    print(json.dumps(dict(report, heldout_before=before, heldout_after=after), indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
