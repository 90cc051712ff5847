"""Fitting the reported sigma's calibration (`meshcap.fitting.uncertainty.SigmaCalibration`).

    python -m meshcap.regression.train_sigma [--out meshcap/data/sigma_calibration.npz]

reproduces the shipped file (about 5 minutes on two cores). The default path of
`meshcap.capture` (the shipped regression stage, `FitOptions(w_init=0.5)`) fits clips of the
training takes of `meshcap.regression.mocap` (every take, three 150-frame clips at most, as
`bench/real_motion.py` cuts them) seen by random cameras (`mocap.view`, seeds 0 and 1), in two
conditions: the 12 COCO body points with 3 px of noise, and full COCO-17 without noise; 5% of
the keypoints dropped. For the joint carrying each body keypoint (`mocap.sigma_columns`), the
fit's sigma parts (`FitResult.uncertainty_parts`) and its error after a Procrustes alignment
(as the benchmark scores it) make one sample. The exponents are a least-squares fit of the
log error, held non-negative (a joint or frame that looks less sure never gets a smaller
sigma); the scale makes the RMS error equal sqrt(3) times the RMS sigma on these fits (sigma
is per axis). The held-out takes are fitted and scored the same way (seed 0) for the record
only; the Spearman correlations go into the file beside the numbers.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import lsq_linear

from meshcap.body_models import load_body_model
from meshcap.fitting.metrics import pa_joint_errors
from meshcap.fitting.smplify import FitOptions, SingleViewFitter
from meshcap.fitting.uncertainty import (CALIBRATION_FEATURES, SIGMA_CALIBRATION, SigmaCalibration,
                                         calibration_features)
from meshcap.fitting.windows import regressor_init
from meshcap.regression import load_stage, mocap

CONDITIONS = (("body-only", False, 3.0), ("full", True, 0.0))
LAPLACE_SHARE = 0.2  # of the Laplace sigma, kept so that a gap's sigma grows (see SigmaCalibration)


def samples(takes: list[mocap.Take], seeds: list[int], max_clips: int = 3) -> dict[str, np.ndarray]:
    """{"laplace", "error", and CALIBRATION_FEATURES}: (N,) metres, one per fitted frame and
    body joint, the features as the calibration reads them (at least a millimetre)."""
    model = load_body_model("anny")
    stage = load_stage()
    fitter = SingleViewFitter(model, "coco17", FitOptions(w_init=0.5))
    cols = mocap.sigma_columns(model)
    names = model.keypoint_names("coco17")
    body = [names.index(n) for n in mocap.BODY]
    clips = [(take, sl) for take in takes for _, sl in mocap.clips(take, max_clips=max_clips)]
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("laplace", "error", *CALIBRATION_FEATURES)}
    for _, face, noise in CONDITIONS:
        for seed in seeds:
            for i, (take, sl) in enumerate(clips):
                v = mocap.view(take, sl, np.random.default_rng([seed, i]), face=face, noise_px=noise)
                kp, K = torch.as_tensor(v.keypoints), torch.as_tensor(v.K)
                init = regressor_init(stage, model, kp, "coco17", K, mocap.FPS)(torch.arange(len(kp)))
                res = fitter.fit(kp, K, init=init, fps=mocap.FPS)
                with torch.no_grad():
                    pred = model(res.poses, res.shape, res.transl, layout="coco17", vertices=False).keypoints
                out["error"].append(pa_joint_errors(pred[:, body].float(), torch.as_tensor(v.truth)).numpy().ravel())
                parts = res.uncertainty_parts
                # the features of whole frames (their means run over all the joints), then the
                # joints carrying the body keypoints
                feats = calibration_features(parts["init"], parts["apart"])
                for k, x in [("laplace", parts["laplace"]), *zip(CALIBRATION_FEATURES, feats)]:
                    out[k].append(x[:, cols].double().numpy().ravel())
    return {k: np.concatenate(v) for k, v in out.items()}


def _sigma(cal: SigmaCalibration, s: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) the calibrated sigma of the samples."""
    t = lambda k: torch.as_tensor(s[k])  # noqa: E731
    return cal.from_features(t("laplace"), [t(k) for k in CALIBRATION_FEATURES]).numpy()


def evaluate(cal: SigmaCalibration, s: dict[str, np.ndarray]) -> dict[str, float]:
    """Spearman rho and calibration (RMS error / (sqrt(3) RMS sigma)) of the calibrated sigma and
    of the earlier formula (the Laplace sigma and the distance over sqrt(3) in quadrature)."""
    new = _sigma(cal, s)
    old = np.hypot(s["laplace"], s["apart"] / np.sqrt(3))
    calib = lambda sig: float(np.sqrt(np.mean(s["error"] ** 2)) / (np.sqrt(3) * np.sqrt(np.mean(sig ** 2))))  # noqa: E731
    return dict(rho=mocap.spearman(new, s["error"]), calibration=calib(new),
                rho_before=mocap.spearman(old, s["error"]), calibration_before=calib(old))


def train(seeds: list[int]) -> tuple[SigmaCalibration, dict]:
    takes, held_out = mocap.split(mocap.load_takes())
    t0 = time.time()
    s = samples(takes, seeds)
    X = np.log(np.stack([s[k] for k in CALIBRATION_FEATURES], 1))
    A = np.concatenate([X, np.ones((len(X), 1))], 1)
    lower = [0.0] * X.shape[1] + [-np.inf]
    w = lsq_linear(A, np.log(np.maximum(s["error"], 1e-4)), bounds=(lower, np.inf)).x
    # the scale for RMS calibration 1 (sigma per axis): fixed point of the hypot
    cal = SigmaCalibration(w[:-1], float(np.exp(w[-1])), LAPLACE_SHARE)
    target = np.sqrt(np.mean(s["error"] ** 2) / 3)
    for _ in range(50):
        cal.scale *= target / np.sqrt(np.mean(_sigma(cal, s) ** 2))
    record = dict(features=list(CALIBRATION_FEATURES), seeds=seeds, conditions=[c[0] for c in CONDITIONS],
                  train_takes=[t.name for t in takes], held_out_takes=[t.name for t in held_out],
                  samples=int(len(X)), train=evaluate(cal, s))
    record["held_out"] = evaluate(cal, samples(held_out, [0], max_clips=2))
    record["seconds"] = round(time.time() - t0)
    return cal, record


def save(cal: SigmaCalibration, path: str | Path, record: dict) -> Path:
    """The calibration as `load_sigma_calibration` reads it, with the record as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, exponents=np.asarray(cal.exponents), scale=cal.scale, laplace_share=cal.laplace_share,
             record=json.dumps(record))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description="fit the reported sigma's calibration on real-motion fits")
    ap.add_argument("--out", default=str(SIGMA_CALIBRATION))
    ap.add_argument("--seeds", default="0,1", help="camera draws of the training clips")
    args = ap.parse_args()
    torch.manual_seed(0)
    cal, record = train([int(x) for x in args.seeds.split(",")])
    print(json.dumps(record, indent=1))
    print(save(cal, args.out, record))


if __name__ == "__main__":
    main()
