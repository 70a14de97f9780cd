"""Cutting an OpenVINO model of a convolution stack into a chain of stages for `unmix.runtime.cascade`.

A stem graph's encoder and decoder are chains of residual blocks: every residual addition's output is the only
tensor that crosses it, so the graph can be cut there into stages that run one after another. `context`
reads each stage's receptive field off its operations (convolutions, transposed convolutions and elementwise
operations), so a stage recomputes exactly what its own convolutions need and nothing else; `plan_long_windows`
makes the one cut that saves most work on long windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

# Ops whose output frame t is computed from their inputs' frames t alone (also `openvino_streaming`'s)
FRAMEWISE = ("Add", "Subtract", "Relu", "Multiply", "Convert", "FakeQuantize")
_ELEMENTWISE = (*FRAMEWISE, "Reshape", "Result")


@dataclass(frozen=True)
class Reach:
    """What a model's output reads of its input: `rate` output frames per input frame; `left` and `right` input
    frames on either side of an output's own position."""

    rate: Fraction
    left: Fraction
    right: Fraction

    @property
    def context(self) -> int:
        """The symmetric context in whole input frames."""
        return math.ceil(max(self.left, self.right))  # exact on Fractions, as np.ceil was


def data_ops(model) -> tuple[list, set[str]]:
    """The model's ops that depend on its inputs (constants and shape arithmetic aside), in order, and their names."""
    dependent: set[str] = set()
    ordered = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "ShapeOf":
            continue
        sources = [op.input_value(i).get_node().get_friendly_name() for i in range(op.get_input_size())]
        if kind == "Parameter" or any(source in dependent for source in sources):
            dependent.add(op.get_friendly_name())
            ordered.append(op)
    return ordered, dependent


def residual_cuts(model) -> list[str]:
    """Names of the additions of two computed tensors (the residual blocks' outputs), in order."""
    ordered, dependent = data_ops(model)
    return [
        op.get_friendly_name()
        for op in ordered
        if op.get_type_name() == "Add"
        and all(op.input_value(i).get_node().get_friendly_name() in dependent for i in range(2))
    ]


def _reaches(model) -> dict[str, Reach]:
    """Every data op's reach over the model's first input, by name.

    Raises ValueError for an operation whose reach is not known here.
    """
    ordered, dependent = data_ops(model)
    reaches: dict[str, Reach] = {}
    for op in ordered:
        name, kind = op.get_friendly_name(), op.get_type_name()
        if kind == "Parameter":
            reaches[name] = Reach(Fraction(1), Fraction(0), Fraction(0))
            continue
        inputs = [
            reaches[source]
            for i in range(op.get_input_size())
            if (source := op.input_value(i).get_node().get_friendly_name()) in dependent
        ]
        rate = inputs[0].rate
        if any(other.rate != rate for other in inputs):
            raise ValueError(f"{name}: its inputs run at different rates")
        left, right = max(r.left for r in inputs), max(r.right for r in inputs)
        if kind == "Convolution":
            attributes = op.get_attributes()
            kernel = op.input_value(1).get_partial_shape()[2].get_length()
            stride, dilation, pad = attributes["strides"][0], attributes["dilations"][0], attributes["pads_begin"][0]
            # output m reads input m·stride − pad … m·stride − pad + (kernel − 1)·dilation
            reaches[name] = Reach(rate / stride, left + pad / rate, right + ((kernel - 1) * dilation - pad) / rate)
        elif kind == "ConvolutionBackpropData":
            attributes = op.get_attributes()
            kernel = op.input_value(1).get_partial_shape()[2].get_length()
            stride, pad = attributes["strides"][0], attributes["pads_begin"][0]
            # output n reads the inputs m with n = m·stride − pad + tap, tap < kernel: m ∈ [(n + pad − kernel + 1)/stride,
            # (n + pad)/stride]; measured from n/stride, at most (kernel − 1 − pad)/stride before and pad/stride after,
            # rounded out to whole input frames
            before = Fraction(-(-(kernel - 1 - pad) // stride))
            after = Fraction(-(-pad // stride))
            reaches[name] = Reach(rate * stride, left + before / rate, right + after / rate)
        elif kind in _ELEMENTWISE:
            reaches[name] = Reach(rate, left, right)
        else:
            raise ValueError(f"{name}: no known receptive field for a {kind} operation")
    return reaches


def reach(model) -> Reach:
    """The receptive field of the model's first output over its first input.

    Raises ValueError for an operation whose reach is not known here.
    """
    result = model.get_results()[0].input_value(0).get_node().get_friendly_name()
    return _reaches(model)[result]


def _work(model, reaches: dict[str, Reach]) -> dict[str, Fraction]:
    """Each data op's multiply-accumulates per frame of the model's input, in order: a convolution's weights
    (C_out · C_in · kernel) once per frame it computes (a transposed one: once per frame it reads), others none."""
    work = {}
    for op in data_ops(model)[0]:
        name, kind = op.get_friendly_name(), op.get_type_name()
        work[name] = Fraction(0)
        if kind in ("Convolution", "ConvolutionBackpropData"):
            weights = int(np.prod(op.input_value(1).get_partial_shape().to_shape()))
            source = op.input_value(0).get_node().get_friendly_name()
            work[name] = weights * (reaches[name].rate if kind == "Convolution" else reaches[source].rate)
    return work


def cut(model, start: str | None, stop: str | None, name: str = "stage"):
    """A copy of `model` from the output of op `start` (None: its input) to the output of op `stop` (None: its
    first output)."""
    import openvino as ov

    copy = model.clone()
    nodes = {op.get_friendly_name(): op for op in copy.get_ops()}
    if start is None:
        parameters = list(copy.get_parameters())
    else:
        source = nodes[start].output(0)
        parameter = ov.opset13.parameter(source.get_partial_shape(), np.float32, name=f"{name}_input")
        for target in list(source.get_target_inputs()):
            target.replace_source_output(parameter.output(0))
        parameters = [parameter]
    end = nodes[stop].output(0) if stop is not None else copy.get_results()[0].input_value(0)
    return ov.Model([end], parameters, name)


@dataclass(frozen=True)
class StagePlan:
    """One stage of a plan: the model from op `start` to op `stop` (None: the ends), and its reach."""

    start: str | None
    stop: str | None
    reach: Reach


def plan_long_windows(model, chunk: Fraction) -> list[StagePlan]:
    """One stage, or two cut where the model's tensor runs at its lowest rate (the latent frames: little to hand
    over), whichever computes less on windows that keep `chunk` input frames: a stage's work per frame times
    its windows' length over what they keep, (kept + 2 · context) / kept. The stage on the high-rate side, most of
    the work, then recomputes only its own context, not the whole model's."""
    reaches = _reaches(model)
    work = _work(model, reaches)
    total = sum(work.values())
    whole = reach(model)
    lowest = min(Fraction(1), whole.rate)
    best, best_cost = [StagePlan(None, None, whole)], total * (1 + 2 * whole.context / chunk)
    done = Fraction(0)  # the work of the ops up to the current one, in order (the graph is a chain of blocks)
    cuts = set(residual_cuts(model))
    for name, op_work in work.items():
        done += op_work
        head = reaches[name]
        if name not in cuts or head.rate != lowest:
            continue
        tail = reach(cut(model, name, None))
        cost = done * (1 + 2 * head.context / chunk) + (total - done) * (1 + 2 * tail.context / (chunk * head.rate))
        if cost < best_cost:
            best, best_cost = [StagePlan(None, name, head), StagePlan(name, None, tail)], cost
    return best
