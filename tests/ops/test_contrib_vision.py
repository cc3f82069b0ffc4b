"""Vision operators (mxc/ir/ops/contrib_vision.py): BilinearResize2D, AdaptiveAvgPooling2D,
ROIPooling, ROIAlign, GridGenerator, BilinearSampler, SpatialTransformer, box_iou,
MultiBoxPrior and box_nms. Compiled code against loop-based numpy references of MXNet's
definitions, gradients against finite differences, and MXNet's documented examples."""
import math

import numpy as np
import pytest

from mxc.base import MXNetError
from mxc.testing import check_forward, check_grad, run_op

RNG = np.random.default_rng(5)


def rnd(*shape, dtype="float32"):
    return RNG.standard_normal(shape).astype(dtype)


def distinct(*shape):
    """float64 values at least 0.05 apart (no near-ties for max pooling differences)."""
    n = math.prod(shape)
    return (RNG.permutation(n).reshape(shape) * 0.05).astype(np.float64)


def corner_boxes(*shape):
    xy = RNG.uniform(0, 5, shape + (2,))
    wh = RNG.uniform(0.5, 4, shape + (2,))
    return np.concatenate([xy, xy + wh], -1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# BilinearResize2D
# ---------------------------------------------------------------------------------------------
RESIZE = "_contrib_BilinearResize2D"


@pytest.mark.parametrize("attrs", [
    {"height": 9, "width": 4}, {"height": 3, "width": 11, "align_corners": False},
    {"height": 1, "width": 1}, {"scale_height": 1.5, "scale_width": 0.6},
    {"mode": "odd_scale", "scale_height": 2.0, "scale_width": 0.5}, {"mode": "to_even_down"},
    {"mode": "to_even_up"}, {"mode": "to_odd_down", "align_corners": False},
    {"mode": "to_odd_up"}])
def test_resize_forward(attrs):
    check_forward(RESIZE, [rnd(2, 3, 5, 7)], attrs)


def test_resize_shapes_and_copy():
    x = rnd(1, 2, 5, 6)
    out = check_forward(RESIZE, [x], {"mode": "to_even_up"})[0]
    assert out.shape == (1, 2, 6, 6)
    same = run_op(RESIZE, [x], {"height": 5, "width": 6})[0][0]
    np.testing.assert_array_equal(same, x)
    odd = run_op(RESIZE, [rnd(1, 1, 5, 4)], {"mode": "odd_scale", "scale_height": 2.0,
                                                  "scale_width": 2.0})[0][0]
    assert odd.shape == (1, 1, 9, 8)     # (5-1)*2+1 for odd, 4*2 for even


def test_resize_like_and_float64():
    x, like = rnd(2, 2, 4, 3, dtype="float64"), rnd(2, 2, 7, 2, dtype="float64")
    out = check_forward(RESIZE, [x, like], {"mode": "like"}, rtol=1e-7, atol=1e-9)[0]
    assert out.shape == (2, 2, 7, 2)


def test_resize_align_corners_known_values():
    # align_corners: the corners map to corners, a 2x2 ramp upsampled to 3x3 is linear
    x = np.array([[[[0.0, 2.0], [4.0, 6.0]]]], np.float32)
    out = run_op(RESIZE, [x], {"height": 3, "width": 3})[0][0]
    np.testing.assert_allclose(out[0, 0], [[0, 1, 2], [2, 3, 4], [4, 5, 6]], atol=1e-6)


@pytest.mark.parametrize("attrs", [{"height": 4, "width": 10}, {"height": 3, "width": 2,
                                                                   "align_corners": False}])
def test_resize_grad(attrs):
    check_grad(RESIZE, [rnd(2, 2, 5, 7, dtype="float64")], attrs)


def test_resize_bad_attrs():
    with pytest.raises(MXNetError):
        run_op(RESIZE, [rnd(1, 1, 4, 4)], {"mode": "bogus"})
    with pytest.raises(MXNetError):
        run_op(RESIZE, [rnd(1, 4, 4)], {"height": 2, "width": 2})
    with pytest.raises(MXNetError):
        run_op(RESIZE, [rnd(1, 1, 4, 4)], {"mode": "odd_scale"})


# ---------------------------------------------------------------------------------------------
# AdaptiveAvgPooling2D
# ---------------------------------------------------------------------------------------------
ADAPTIVE = "_contrib_AdaptiveAvgPooling2D"


@pytest.mark.parametrize("size", [(3, 4), 2, (), (5, 7), (7, 9), (1, 3)])
def test_adaptive_forward(size):
    x = rnd(2, 3, 5, 7)
    out = check_forward(ADAPTIVE, [x], {"output_size": size})[0]
    if size == ():
        np.testing.assert_allclose(out[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(3, 4), (7, 2)])
def test_adaptive_grad(size):
    check_grad(ADAPTIVE, [rnd(2, 2, 5, 7, dtype="float64")], {"output_size": size})


def test_adaptive_bad_size():
    with pytest.raises(MXNetError):
        run_op(ADAPTIVE, [rnd(1, 1, 4, 4)], {"output_size": (1, 2, 3)})


# ---------------------------------------------------------------------------------------------
# ROIPooling / ROIAlign
# ---------------------------------------------------------------------------------------------
ROIS = np.array([[0, 0, 0, 4, 3], [1, 1.2, 0.7, 6.1, 4.4], [0, -3.3, -2.2, 20.1, 19.7],
                 [1, 5.6, 4.3, 5.9, 4.4]], np.float32)


@pytest.mark.parametrize("attrs", [{"pooled_size": (2, 3), "spatial_scale": 0.5},
                                   {"pooled_size": (3, 2), "spatial_scale": 1.0},
                                   {"pooled_size": (1, 1), "spatial_scale": 0.25}])
def test_roi_pooling_forward(attrs):
    check_forward("ROIPooling", [rnd(2, 3, 5, 7), ROIS], attrs)


def test_roi_pooling_known_values():
    # region covering the whole 4x4 map pooled to 2x2: max of each quadrant
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    rois = np.array([[0, 0, 0, 3, 3]], np.float32)
    out = run_op("ROIPooling", [x, rois], {"pooled_size": (2, 2), "spatial_scale": 1.0})[0][0]
    np.testing.assert_array_equal(out[0, 0], [[5, 7], [13, 15]])


def test_roi_pooling_grad():
    check_grad("ROIPooling", [distinct(2, 2, 5, 7), ROIS.astype(np.float64)],
               {"pooled_size": (2, 3), "spatial_scale": 1.0}, which=[0])


ALIGN = "_contrib_ROIAlign"
ALIGN_ROIS = np.concatenate([ROIS, [[-1, 1, 1, 3, 3]]]).astype(np.float32)


@pytest.mark.parametrize("attrs", [
    {"pooled_size": (2, 2), "spatial_scale": 1.0},
    {"pooled_size": (2, 3), "spatial_scale": 0.5, "sample_ratio": 2},
    {"pooled_size": (3, 1), "spatial_scale": 1.0, "aligned": True},
    {"pooled_size": (2, 2), "spatial_scale": 1.0, "position_sensitive": True},
    {"pooled_size": (1, 2), "spatial_scale": 0.7, "position_sensitive": True, "aligned": True,
         "sample_ratio": 3}])
def test_roi_align_forward(attrs):
    out = check_forward(ALIGN, [rnd(2, 8, 6, 7), ALIGN_ROIS], attrs, rtol=1e-4, atol=1e-5)[0]
    assert not out[-1].any()        # a negative batch index gives zeros


def test_roi_align_known_values():
    # a constant map averages to the constant inside the image
    x = np.full((1, 2, 5, 5), 3.0, np.float32)
    rois = np.array([[0, 1, 1, 3, 3]], np.float32)
    out = run_op(ALIGN, [x, rois], {"pooled_size": (2, 2), "spatial_scale": 1.0})[0][0]
    np.testing.assert_allclose(out, 3.0, rtol=1e-6)


@pytest.mark.parametrize("attrs", [
    {"pooled_size": (2, 2), "spatial_scale": 1.0, "sample_ratio": 2},
    {"pooled_size": (2, 1), "spatial_scale": 1.0, "position_sensitive": True, "aligned": True}])
def test_roi_align_grad(attrs):
    check_grad(ALIGN, [rnd(2, 4, 6, 7, dtype="float64"), ALIGN_ROIS.astype(np.float64)], attrs,
               which=[0])


def test_roi_bad_inputs():
    with pytest.raises(MXNetError):
        run_op(ALIGN, [rnd(1, 3, 4, 4), ROIS], {"pooled_size": (2, 2), "spatial_scale": 1.0,
                                                    "position_sensitive": True})
    with pytest.raises(MXNetError):
        run_op("ROIPooling", [rnd(1, 3, 4, 4), ROIS[:, :4]], {"pooled_size": (2, 2),
                                                                  "spatial_scale": 1.0})


# ---------------------------------------------------------------------------------------------
# GridGenerator / BilinearSampler / SpatialTransformer
# ---------------------------------------------------------------------------------------------
THETA = np.array([[0.913, 0.117, 0.0531, -0.109, 1.071, -0.0713],
                  [1.13, 0.07, 0.11, 0.21, 0.83, 0.03]], np.float32)
# generic values: no target pixel lands exactly on a source pixel (a kink of the sampler)
AFFINE = {"transform_type": "affine", "target_shape": (4, 5)}


def test_grid_generator():
    out = check_forward("GridGenerator", [THETA], AFFINE)[0]
    ident = np.array([[1, 0, 0, 0, 1, 0]], np.float32)
    grid = run_op("GridGenerator", [ident], AFFINE)[0][0]
    np.testing.assert_allclose(grid[0, 0, 0], np.linspace(-1, 1, 5), atol=1e-6)
    np.testing.assert_allclose(grid[0, 1, :, 0], np.linspace(-1, 1, 4), atol=1e-6)
    assert out.shape == (2, 2, 4, 5)
    check_forward("GridGenerator", [rnd(2, 2, 3, 5)], {"transform_type": "warp"})


def test_grid_generator_grad():
    check_grad("GridGenerator", [THETA.astype(np.float64)], AFFINE)
    check_grad("GridGenerator", [rnd(1, 2, 3, 4, dtype="float64")], {"transform_type": "warp"})


def test_bilinear_sampler():
    x = rnd(2, 3, 6, 7)
    grid = RNG.uniform(-1.1, 1.1, (2, 2, 3, 5)).astype(np.float32)
    check_forward("BilinearSampler", [x, grid], {}, rtol=1e-4, atol=1e-5)
    # the identity grid reproduces the input
    ident = run_op("GridGenerator", [np.tile([[1, 0, 0, 0, 1, 0]], (2, 1)).astype(np.float32)],
                   {"transform_type": "affine", "target_shape": (6, 7)})[0][0]
    same = run_op("BilinearSampler", [x, ident], {"cudnn_off": True})[0][0]
    np.testing.assert_allclose(same, x, rtol=1e-4, atol=1e-5)


def test_bilinear_sampler_grad():
    x = rnd(2, 3, 5, 6, dtype="float64")
    grid = RNG.uniform(-1.1, 1.1, (2, 2, 3, 4))
    check_grad("BilinearSampler", [x, grid], {}, eps=1e-5)


ST = {"target_shape": (4, 5), "transform_type": "affine", "sampler_type": "bilinear"}


def test_spatial_transformer():
    check_forward("SpatialTransformer", [rnd(2, 3, 6, 7), THETA], ST, rtol=1e-4, atol=1e-5)
    check_grad("SpatialTransformer", [rnd(2, 2, 5, 6, dtype="float64"),
                                      THETA.astype(np.float64)], ST, eps=1e-5)


def test_spatial_transformer_bad_attrs():
    with pytest.raises(MXNetError):
        run_op("SpatialTransformer", [rnd(1, 1, 4, 4), THETA[:1]], dict(ST, sampler_type="x"))
    with pytest.raises(MXNetError):
        run_op("GridGenerator", [THETA], {"transform_type": "affine"})


# ---------------------------------------------------------------------------------------------
# box_iou / MultiBoxPrior / box_nms
# ---------------------------------------------------------------------------------------------
def test_box_iou():
    lhs, rhs = corner_boxes(3), corner_boxes(2, 5)
    out = check_forward("_contrib_box_iou", [lhs, rhs], {})[0]
    assert out.shape == (3, 2, 5)
    check_forward("_contrib_box_iou", [lhs, rhs], {"format": "center"})
    # MXNet's documented example
    x = np.array([[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]], np.float32)
    y = np.array([[0.25, 0.25, 0.75, 0.75]], np.float32)
    got = run_op("_contrib_box_iou", [x, y], {"format": "corner"})[0][0]
    np.testing.assert_allclose(got, [[0.1428], [0.1428]], atol=1e-4)


@pytest.mark.parametrize("attrs", [
    {"sizes": (0.5, 0.25, 0.1), "ratios": (1, 2, 0.5)}, {},
    {"sizes": (0.75,), "ratios": (1, 3), "clip": True, "steps": (0.1, 0.2), "offsets": (0.3, 0.6)}])
def test_multibox_prior(attrs):
    out = check_forward("_contrib_MultiBoxPrior", [np.zeros((2, 3, 5, 7), np.float32)], attrs)[0]
    A = len(attrs.get("sizes", (1,))) + len(attrs.get("ratios", (1,))) - 1
    assert out.shape == (1, 5 * 7 * A, 4)


def test_multibox_prior_known_values():
    # one size, one ratio on a 2x2 map: boxes of side 0.5 centred at 0.25 / 0.75
    out = run_op("_contrib_MultiBoxPrior", [np.zeros((1, 1, 2, 2), np.float32)],
                 {"sizes": (0.5,)})[0][0]
    np.testing.assert_allclose(out[0], [[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], [0, 0.5, 0.5, 1],
                                        [0.5, 0.5, 1, 1]], atol=1e-6)


NMS = "_contrib_box_nms"


@pytest.mark.parametrize("attrs", [
    {}, {"overlap_thresh": 0.1, "topk": 5}, {"id_index": 0, "overlap_thresh": 0.2, "valid_thresh": 0.3},
    {"id_index": 0, "force_suppress": True, "background_id": 1, "overlap_thresh": 0.2,
         "out_format": "center"},
    {"topk": 0}, {"in_format": "center", "overlap_thresh": 0.3}])
def test_box_nms_forward(attrs):
    d = np.concatenate([RNG.integers(0, 3, (2, 11, 1)), RNG.uniform(0, 1, (2, 11, 1)),
                        corner_boxes(2, 11)], -1).astype(np.float32)
    check_forward(NMS, [d], attrs)


def test_box_nms_documented_example():
    x = np.array([[0, 0.5, 0.1, 0.1, 0.2, 0.2], [1, 0.4, 0.1, 0.1, 0.2, 0.2],
                  [0, 0.3, 0.1, 0.1, 0.14, 0.14], [2, 0.6, 0.5, 0.5, 0.7, 0.8]], np.float32)
    attrs = {"overlap_thresh": 0.1, "coord_start": 2, "score_index": 1, "id_index": 0,
                 "force_suppress": True, "in_format": "corner", "out_format": "corner"}
    ograd = np.array([[0.1] * 6, [0.2] * 6, [0.3] * 6, [0.4] * 6], np.float32)
    outs, grads, _ = run_op(NMS, [x], attrs, head_grads=[ograd])
    np.testing.assert_allclose(outs[0], [[2, 0.6, 0.5, 0.5, 0.7, 0.8],
                                         [0, 0.5, 0.1, 0.1, 0.2, 0.2],
                                         [-1] * 6, [-1] * 6], atol=1e-6)
    np.testing.assert_allclose(grads[0], [[0.2] * 6, [0] * 6, [0] * 6, [0.1] * 6], atol=1e-6)
    # the alias runs the same operator, on a batch of inputs
    batched = run_op("_contrib_box_non_maximum_suppression", [np.stack([x, x])], attrs)[0][0]
    np.testing.assert_allclose(batched[1], outs[0], atol=1e-6)


def test_box_nms_bad_attrs():
    with pytest.raises(MXNetError):
        run_op(NMS, [np.zeros((3, 6), np.float32)], {"score_index": 3})
    with pytest.raises(MXNetError):
        run_op(NMS, [np.zeros((3, 4), np.float32)], {})
