"""Facts about TensorFlow ops that the freezing, the rewrites and the checks share.

Each fact is measured once and spelled once here: which ops hold variables, which ops' CPU
kernels refuse channels-first data in the old runtimes, the rank of each convolution, and the
size from which a constant is a weight in all but name.
"""

# Reference (TF1) and resource variables: what freezing turns into constants.
VARIABLE_OPS = ("VariableV2", "Variable", "VarHandleOp")

# Constants this large that did not come from a variable (captured tensors, folded transposes,
# arrays written into a session's graph) are stored as variables: weights in all but name.
LARGE_CONSTANT_BYTES = 64 * 1024

# The channels-first ``data_format`` of each op whose CPU kernels refuse it in every runtime
# from 1.14 to 2.7 (measured in the official wheels: "only supports NHWC ... on the CPU"), which
# TF 2.21's oneDNN kernels run. The rewrite makes all but ``MaxPoolV2`` channels-last
# (:data:`CHANNELS_FIRST_REWRITTEN`); the semantic rule reports every one left.
CHANNELS_FIRST_REWRITTEN = {
    "Conv2D": "NCHW",
    "MaxPool": "NCHW",
    "AvgPool": "NCHW",
    "DepthwiseConv2dNative": "NCHW",
    "Conv3D": "NCDHW",
    "MaxPool3D": "NCDHW",
    "AvgPool3D": "NCDHW",
    "Conv2DBackpropInput": "NCHW",  # Conv2DTranspose
    "Conv3DBackpropInputV2": "NCDHW",  # Conv3DTranspose
}
# ``MaxPoolV2`` takes ``ksize``/``strides`` as tensors, which the rewrite does not permute.
CHANNELS_FIRST_ON_CPU = {**CHANNELS_FIRST_REWRITTEN, "MaxPoolV2": "NCHW"}

# The convolutions that may be grouped, and the rank of their input and filter.
CONV_RANKS = {"Conv2D": 4, "Conv3D": 5}
