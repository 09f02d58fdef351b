"""Walking a Keras functional graph backwards from a tensor: which layer call produced it and what that
call read. Both Grad-CAM (`explain.gradcam`, to split a model at its map's layer) and the shared
encoder (`inference.shared_encoder`, to cut a segmenter's decoder off its encoder) need the inputs of
a part of a model; the walk lives with Grad-CAM, which `inference` builds on (never the other way).
"""

from __future__ import annotations


def producer(tensor):
    """The layer whose call produced `tensor`."""
    return tensor._keras_history[0]


def inputs_of(tensor) -> list:
    """The tensors the layer call that produced `tensor` read."""
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index].input_tensors


def graph_boundary(output, stops) -> list:
    """Walking back from `output` through a functional graph, the tensors where `stops(tensor)` holds,
    each once, in the order the walk meets them: the inputs of the part that computes `output` from them."""
    boundary, seen = [], set()

    def walk(tensor):
        for source in inputs_of(tensor):
            if id(source) not in seen:
                seen.add(id(source))
                (boundary.append if stops(source) else walk)(source)

    walk(output)
    return boundary
