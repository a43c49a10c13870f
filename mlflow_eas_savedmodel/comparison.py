"""How two runs of one SignatureDef are compared: the post-save check and ``check-runtime``.

Floats pass when ``max|actual - expected| <= atol + rtol * max|expected|``: the tolerance is
relative to the *output's* magnitude, not to each element. Per-element ``allclose`` fails
healthy float32 models whose outputs hold values near zero beside large ones (a 200 MB MLP's
logits, ConvNeXt's at ~1.5e-6 and 4e-6 absolute), because summation order differs between
builds (Eigen in the old wheels, oneDNN in 2.21) and every float32 sum rounds at the scale of
its largest terms. Integers, booleans and strings must be equal; shapes always.

This module does not import TensorFlow.
"""

import numpy as np

RTOL = 1e-5
ATOL = 1e-6


def _as_bytes_list(array):
    return [
        v if isinstance(v, bytes) else str(v).encode()
        for v in np.asarray(array, dtype=object).reshape(-1).tolist()
    ]


def compare(expected, actual, where, rtol=RTOL, atol=ATOL, reference="TF 2.21"):
    """``(max abs diff or None, [problems])`` of one output against the reference's.

    Args:
        expected: the reference output.
        actual: the output to judge (``None``: it is missing).
        where: what the problem lines start with (e.g. ``"C API output 'scores'"``).
        rtol: tolerance relative to ``max|expected|`` (floats).
        atol: absolute tolerance added to it (floats).
        reference: how the problem lines name the reference.
    """
    expected = np.asarray(expected)
    if actual is None:
        return None, [f"{where}: missing from the outputs"]
    actual = np.asarray(actual)
    if expected.shape != actual.shape:
        return None, [f"{where}: shape {actual.shape}, {reference} gives {expected.shape}"]
    if expected.dtype.kind in "OSU" or actual.dtype.kind in "OSU":
        if _as_bytes_list(expected) != _as_bytes_list(actual):
            return None, [f"{where}: strings differ from {reference}'s"]
        return 0.0, []
    if expected.size == 0:
        return 0.0, []
    e64, a64 = expected.astype(np.float64), actual.astype(np.float64)
    if expected.dtype.kind in "fc":
        nan_e, nan_a = np.isnan(e64), np.isnan(a64)
        if not np.array_equal(nan_e, nan_a):
            return None, [f"{where}: NaN where {reference} has a number (or the reverse)"]
        finite = ~nan_e
        if not finite.any():
            return 0.0, []
        e64, a64 = e64[finite], a64[finite]
        if not np.array_equal(np.isinf(e64), np.isinf(a64)) or not np.array_equal(
            e64[np.isinf(e64)], a64[np.isinf(a64)]
        ):
            return None, [f"{where}: infinities differ from {reference}'s"]
        finite = np.isfinite(e64)
        e64, a64 = e64[finite], a64[finite]
        if e64.size == 0:
            return 0.0, []
        diff = float(np.max(np.abs(e64 - a64)))
        scale = float(np.max(np.abs(e64)))
        allowed = atol + rtol * scale
        if diff <= allowed:
            return diff, []
        return diff, [
            f"{where}: max abs diff {diff:.3g} exceeds {allowed:.3g} (atol={atol:g} + rtol={rtol:g} "
            f"x max|output| {scale:.3g})"
        ]
    diff = float(np.max(np.abs(e64 - a64)))
    if np.array_equal(expected, actual):
        return diff, []
    return diff, [f"{where}: values differ by up to {diff:.3g} (exact match needed)"]
