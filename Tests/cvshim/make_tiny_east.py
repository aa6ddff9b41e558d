#!/usr/bin/env python3
"""Build a tiny ONNX network shaped like EAST, for testing lcv_detect(kind=EAST).

usage: make_tiny_east.py OUT.onnx        (needs the `onnx` and `numpy` packages)

Network (fixed input 1x3x128x128, the EAST tensor names):
  input  "input_images"                     1x3x128x128 (blobFromImage: RGB minus EAST mean, scale 1)
  output "feature_fusion/Conv_7/Sigmoid"    1x1x32x32  score = sigmoid(0.1 * mean of the 4x4x3 block - 2)
                                            -> ~1 where the image is bright, ~0 where dark,
                                               ~0.12 on the mean-coloured letterbox padding
  output "feature_fusion/concat_3"          1x5x32x32  geometry = 0 * conv(input) + G
                                            G is constant: every cell in the left half (4x < 64)
                                            describes BOX_A, every cell in the right half BOX_B.

So a test that paints BOX_A / BOX_B white on black (in network coordinates,
times the letterbox scale) must get exactly those boxes back, and nothing
for a black image. The geometry tensor is computed *from the input* (times 0)
so that OpenCV keeps it a real layer output rather than folding a constant.

Box parameters are repeated in tests/test_tiny_east.cpp; keep them in sync.
"""
import math
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IN = 128          # network input size (square)
MAP = IN // 4     # EAST maps are 1/4 resolution
# (centre x, centre y, width, height, angle in degrees; positive = rising to the right)
BOX_A = (32.0, 24.0, 48.0, 24.0, 0.0)
BOX_B = (92.0, 60.0, 48.0, 16.0, 20.0)


def geometry_for(box, px, py):
    """EAST geometry of `box` seen from pixel (px, py): top, right, bottom, left, angle."""
    cx, cy, w, h, deg = box
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    dx, dy = px - cx, py - cy
    along = dx * c - dy * s      # component along u = (cos, -sin)
    across = dx * s + dy * c     # component along v = (sin, cos)
    return (h / 2 + across, w / 2 - along, h / 2 - across, w / 2 + along, a)


def build():
    geo = np.zeros((1, 5, MAP, MAP), dtype=np.float32)
    for y in range(MAP):
        for x in range(MAP):
            box = BOX_A if 4 * x < IN // 2 else BOX_B
            geo[0, :, y, x] = geometry_for(box, 4.0 * x, 4.0 * y)

    # 4x4 stride-4 convolution = mean over the block and the 3 channels, scaled.
    w_score = np.full((1, 3, 4, 4), 0.1 / 48.0, dtype=np.float32)
    b_score = np.array([-2.0], dtype=np.float32)
    w_zero = np.zeros((5, 3, 4, 4), dtype=np.float32)
    b_zero = np.zeros((5,), dtype=np.float32)

    conv_attrs = dict(kernel_shape=[4, 4], strides=[4, 4], pads=[0, 0, 0, 0])
    nodes = [
        helper.make_node("Conv", ["input_images", "w_score", "b_score"], ["score_logits"], name="score_conv",
                         **conv_attrs),
        helper.make_node("Sigmoid", ["score_logits"], ["feature_fusion/Conv_7/Sigmoid"],
                         name="feature_fusion/Conv_7/Sigmoid"),
        helper.make_node("Conv", ["input_images", "w_zero", "b_zero"], ["geo_zero"], name="geo_conv",
                         **conv_attrs),
        helper.make_node("Add", ["geo_zero", "geo_const"], ["feature_fusion/concat_3"],
                         name="feature_fusion/concat_3"),
    ]
    inits = [
        numpy_helper.from_array(w_score, "w_score"),
        numpy_helper.from_array(b_score, "b_score"),
        numpy_helper.from_array(w_zero, "w_zero"),
        numpy_helper.from_array(b_zero, "b_zero"),
        numpy_helper.from_array(geo, "geo_const"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_east",
        [helper.make_tensor_value_info("input_images", TensorProto.FLOAT, [1, 3, IN, IN])],
        [helper.make_tensor_value_info("feature_fusion/Conv_7/Sigmoid", TensorProto.FLOAT, [1, 1, MAP, MAP]),
         helper.make_tensor_value_info("feature_fusion/concat_3", TensorProto.FLOAT, [1, 5, MAP, MAP])],
        inits)
    model = helper.make_model(graph, producer_name="lector-cvshim-tests",
                              opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6  # conservative: OpenCV 4.6 bundles an older ONNX schema
    onnx.checker.check_model(model)
    return model


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    model = build()
    onnx.save(model, sys.argv[1])
    print(f"wrote {sys.argv[1]} ({len(model.SerializeToString())} bytes)")


if __name__ == "__main__":
    main()
