import numpy as np
import pytest
import torch

from meshcap.keypoints.layouts import convert_keypoints, get_layout


def test_convert_by_name_and_derived_midpoints():
    coco = get_layout("coco17")
    kp = np.zeros((2, 17, 3), np.float32)
    kp[..., 0] = np.arange(17)
    kp[..., 1] = 10 * np.arange(17)
    kp[..., 2] = 0.9
    kp[:, coco.index("right_shoulder"), 2] = 0.5
    op = convert_keypoints(kp, "coco17", "openpose25")
    o = get_layout("openpose25")
    for n in coco.names:
        np.testing.assert_array_equal(op[:, o.index(n)], kp[:, coco.index(n)])
    neck = op[:, o.index("neck")]
    np.testing.assert_allclose(neck[:, 0], (coco.index("left_shoulder") + coco.index("right_shoulder")) / 2)
    assert np.all(neck[:, 2] == 0.5)  # a derived point is as sure as its least sure parent
    toe = op[:, o.index("left_big_toe")]
    assert np.all(toe[:, 2] == 0) and np.all(np.isnan(toe[:, :2]))


def test_convert_3d_positions_and_torch():
    kp = torch.randn(4, 33, 3)
    out = convert_keypoints(kp, "blazepose33", "coco17", confidence=False)
    b = get_layout("blazepose33")
    assert torch.equal(out[:, 0], kp[:, b.index("nose")])
    op = convert_keypoints(kp, "blazepose33", "openpose25", confidence=False)
    mid = (kp[:, b.index("left_hip")] + kp[:, b.index("right_hip")]) / 2
    assert torch.allclose(op[:, get_layout("openpose25").index("mid_hip")], mid)


def test_flip_permutation_swaps_sides():
    lay = get_layout("coco17")
    perm = lay.flip_permutation()
    assert lay.names[perm[lay.index("left_wrist")]] == "right_wrist"
    assert perm[lay.index("nose")] == lay.index("nose")


def test_bad_layouts_are_named():
    with pytest.raises(ValueError, match="unknown keypoint layout 'coco99'"):
        get_layout("coco99")
    with pytest.raises(ValueError, match="has 17"):
        convert_keypoints(np.zeros((5, 3)), "coco17", "openpose25")
