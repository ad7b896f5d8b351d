"""Writes tiny ONNX models for seedpool's ONNX tests: YOLO-style detectors and a
WD14-style tagger and image embedders.

usage: make_onnx.py OUT.onnx (v5|v8|grey-input|flat-output|tagger|embedder|embedder-tokens|bench)

The model reads a 1x3x64x64 float image and splits it into a 4x4 grid of 16-pixel
cells. Each cell is one candidate box (the cell itself, centre and size in input
pixels) whose confidence is the cell's mean of red minus green: a red square fills a
cell with confidence 1, grey letterbox padding gives 0. Real inference, so a test
learns where it drew something from what the model answers.

  v5           rows [1, 16, 6]: cx, cy, w, h, objectness, one class score (1)
  v8           columns [1, 5, 16]: cx, cy, w, h, class score (no objectness)
  grey-input   v5 with a one-channel input: seedpool must refuse it at start-up
  flat-output  v5 with the output flattened to [16, 6]: refused at start-up
  tagger       input [1, 64, 64, 3] (BGR 0-255, as WD14 taggers take it), output
               [1, 3]: the picture's mean blue, green and red over 255, one
               "probability" per tag
  embedder     input [1, 3, 32, 32] (normalised RGB), output [1, 4]: the picture's
               mean of each normalised channel and a constant 1, so pictures of
               close colours get close vectors
  embedder-tokens  the same four values as a sequence of two tokens, [1, 2, 4]: an
               unpooled output seedpool must refuse at start-up
  bench        for benches/onnx.sh: a YOLO-shaped network with random (seeded)
               weights, input [1, 3, 640, 640], five stride-2 stages of two 3x3
               convolutions each (16 to 256 channels, about 3 GFLOPs), a 1x1 head
               and a sigmoid, output columns [1, 5, 400] (v8 layout, one class)

Written at IR 8 / opset 18, which onnxruntime 1.17 and later accept.
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 64
CELL = 16
GRID = SIZE // CELL


def tagger(out):
    image = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, SIZE, SIZE, 3])
    probs = helper.make_tensor_value_info("predictions", TensorProto.FLOAT, [1, 3])
    axes = numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes")
    scale = numpy_helper.from_array(np.array(255.0, dtype=np.float32), "scale")
    nodes = [
        helper.make_node("ReduceMean", ["input_1", "axes"], ["means"], keepdims=0),
        helper.make_node("Div", ["means", "scale"], ["predictions"]),
    ]
    graph = helper.make_graph(nodes, "seedpool-test-tagger", [image], [probs], [axes, scale])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), out)


def embedder(out, tokens):
    image = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, 32, 32])
    shape = [1, 2, 4] if tokens else [1, 4]
    vector = helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, shape)
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    one = numpy_helper.from_array(np.ones((1, 1), dtype=np.float32), "one")
    inits = [axes, one]
    pooled = "pooled" if tokens else "image_embeds"
    nodes = [
        helper.make_node("ReduceMean", ["pixel_values", "axes"], ["means"], keepdims=0),
        helper.make_node("Concat", ["means", "one"], [pooled], axis=1),
    ]
    if tokens:
        inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "token_axis"))
        nodes += [
            helper.make_node("Unsqueeze", ["pooled", "token_axis"], ["token"]),
            helper.make_node("Concat", ["token", "token"], ["image_embeds"], axis=1),
        ]
    graph = helper.make_graph(nodes, "seedpool-test-embedder", [image], [vector], inits)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), out)


def bench(out):
    rng = np.random.default_rng(7)
    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])
    output = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, 400])
    nodes, inits = [], []
    x, c_in = "images", 3
    for stage, c_out in enumerate([16, 32, 64, 128, 256]):
        for k, stride in enumerate([2, 1]):
            name = f"s{stage}c{k}"
            fan_in = c_in * 9
            w = rng.normal(0, (2 / fan_in) ** 0.5, (c_out, c_in, 3, 3)).astype(np.float32)
            b = np.zeros(c_out, np.float32)
            inits += [numpy_helper.from_array(w, name + "w"), numpy_helper.from_array(b, name + "b")]
            nodes.append(
                helper.make_node("Conv", [x, name + "w", name + "b"], [name], kernel_shape=[3, 3],
                                 strides=[stride, stride], pads=[1, 1, 1, 1])
            )
            nodes.append(helper.make_node("Relu", [name], [name + "r"]))
            x, c_in = name + "r", c_out
    head = rng.normal(0, 0.05, (5, 256, 1, 1)).astype(np.float32)
    # A low score bias, so that a few cells pass as faces, as in a real picture.
    bias = np.array([0, 0, 0, 0, -1], np.float32)
    inits += [numpy_helper.from_array(head, "headw"), numpy_helper.from_array(bias, "headb")]
    nodes.append(helper.make_node("Conv", [x, "headw", "headb"], ["head"], kernel_shape=[1, 1]))
    nodes.append(helper.make_node("Sigmoid", ["head"], ["probs"]))
    # Box centres and sizes in input pixels: the cell's centre and 32 px, scaled by the
    # network's first four outputs; the fifth is the face score.
    nodes.append(helper.make_node("Reshape", ["probs", "shape"], ["flat"]))
    inits.append(numpy_helper.from_array(np.array([1, 5, 400], np.int64), "shape"))
    grid = np.zeros((1, 5, 400), np.float32)
    scale = np.zeros((1, 5, 400), np.float32)
    for i in range(20):
        for j in range(20):
            grid[0, :, i * 20 + j] = [32 * j, 32 * i, 0, 0, 0]
            scale[0, :, i * 20 + j] = [32, 32, 96, 96, 1]
    inits += [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(grid, "grid")]
    nodes.append(helper.make_node("Mul", ["flat", "scale"], ["scaled"]))
    nodes.append(helper.make_node("Add", ["scaled", "grid"], ["output0"]))
    graph = helper.make_graph(nodes, "seedpool-bench-yolo", [image], [output], inits)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), out)


def save(model, out):
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out)


def main(out, variant):
    if variant == "tagger":
        return tagger(out)
    if variant == "bench":
        return bench(out)
    if variant in ("embedder", "embedder-tokens"):
        return embedder(out, variant == "embedder-tokens")
    channels = 1 if variant == "grey-input" else 3
    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, channels, SIZE, SIZE])
    nodes = []
    inits = []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    if channels == 3:
        red = helper.make_node(
            "Slice", ["images", const("r0", [0]), const("r1", [1]), const("ax", [1])], ["red"]
        )
        green = helper.make_node(
            "Slice", ["images", const("g0", [1]), const("g1", [2]), "ax"], ["green"]
        )
        nodes += [red, green, helper.make_node("Sub", ["red", "green"], ["signal"])]
    else:
        nodes.append(helper.make_node("Identity", ["images"], ["signal"]))
    nodes.append(
        helper.make_node(
            "AveragePool", ["signal"], ["cells"], kernel_shape=[CELL, CELL], strides=[CELL, CELL]
        )
    )
    cells = GRID * GRID
    nodes.append(helper.make_node("Reshape", ["cells", const("col", [1, cells, 1])], ["conf"]))
    boxes = np.array(
        [[[CELL * j + CELL / 2, CELL * i + CELL / 2, CELL, CELL] for i in range(GRID) for j in range(GRID)]],
        dtype=np.float32,
    )
    const("boxes", boxes)
    if variant == "v8":
        nodes.append(helper.make_node("Concat", ["boxes", "conf"], ["rows"], axis=2))
        nodes.append(helper.make_node("Transpose", ["rows"], ["output0"], perm=[0, 2, 1]))
        shape = [1, 5, cells]
    else:
        const("cls", np.ones((1, cells, 1), dtype=np.float32))
        final = "output0" if variant != "flat-output" else "rows"
        nodes.append(helper.make_node("Concat", ["boxes", "conf", "cls"], [final], axis=2))
        shape = [1, cells, 6]
        if variant == "flat-output":
            nodes.append(helper.make_node("Reshape", ["rows", const("flat", [cells, 6])], ["output0"]))
            shape = [cells, 6]
    output = helper.make_tensor_value_info("output0", TensorProto.FLOAT, shape)
    graph = helper.make_graph(nodes, "seedpool-test-yolo", [image], [output], inits)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), out)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in ("v5", "v8", "grey-input", "flat-output", "tagger", "embedder", "embedder-tokens", "bench"):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
