"""The one table of EAS's TensorFlow runtimes: a row per runtime, everything else derived.

A row (:class:`Runtime`) says which EAS processors a TensorFlow version backs
(``tensorflow_cpu_<version>`` always, ``tensorflow_gpu_<version>`` where EAS has it), how to
rebuild it (the official PyPI wheel, its pins, the CPython it was built for: measured, see
:mod:`.environments`) and what was measured in it that the semantic rules key on (see
:mod:`.semantic`'s docstring for the measurements themselves).

Adding a runtime is adding a row to :data:`ROWS` (and its op registry,
``registries/tf-<version>.json.gz``, written by ``scripts/dump_op_registry.py``): the processor
codes, the environments, the rules' runtime lists and the "TF 1.12-2.7"-style messages are all
derived from the rows by the pure functions below, which take the rows as an argument (default:
:data:`ROWS` as it is when they are called) so that a table with one more row can be derived without building anything.

This module imports nothing of this package (``errors`` uses it).
"""

import dataclasses

# Where a runtime's CPU kernels refuse a grouped convolution (Conv2D whose input depth is a
# multiple of its filter depth), or ``None`` where they run it.
AT_LOAD = "load"
AT_RUN = "run"


@dataclasses.dataclass(frozen=True)
class Runtime:
    """One EAS TensorFlow runtime: its processors, its official wheel, and what it refuses."""

    version: str  # "1.15": EAS's processor suffix, the TensorFlow major.minor
    python_minor: str  # "3.7": the CPython minor version the official wheel is built for
    wheel: str  # the official wheel's requirement, e.g. "tensorflow-cpu==1.15.0"
    pins: tuple[str, ...] = ()  # extra pins installed together with the wheel
    pip: str | None = None  # pip to upgrade to before installing (None: keep venv's pip)
    gpu: bool = True  # EAS also has tensorflow_gpu_<version>
    # Compiles XLA must-compile function calls (tf.function(jit_compile=True), Keras'
    # Conv2D(groups>1)) and answers; False: runs their body with CPU kernels written for XLA.
    xla_compiles_calls: bool = True
    grouped_convolutions_refused: str | None = None  # AT_LOAD, AT_RUN, or None: runs them on CPU
    # Channels-first (NCHW/NCDHW) Conv2D, pools, DepthwiseConv2dNative, Conv2DBackpropInput,
    # Conv3D... run on CPU. No measured runtime does.
    channels_first_on_cpu: bool = False

    @property
    def cpu_processor(self):
        return f"tensorflow_cpu_{self.version}"

    @property
    def gpu_processor(self):
        return f"tensorflow_gpu_{self.version}" if self.gpu else None


# Oldest first: the order of RUNTIME_VERSIONS, of every per-runtime listing and message.
ROWS = (
    Runtime("1.12", "3.6", "tensorflow==1.12.0", ("protobuf==3.19.6",), pip="pip==21.3.1",
            xla_compiles_calls=False, grouped_convolutions_refused=AT_LOAD),
    Runtime("1.14", "3.7", "tensorflow==1.14.0", ("numpy==1.16.6", "protobuf==3.20.3"),
            xla_compiles_calls=False, grouped_convolutions_refused=AT_RUN),
    Runtime("1.15", "3.7", "tensorflow-cpu==1.15.0", ("numpy==1.16.6", "protobuf==3.20.3"),
            xla_compiles_calls=False, grouped_convolutions_refused=AT_RUN),
    Runtime("2.3", "3.8", "tensorflow-cpu==2.3.0", ("numpy==1.18.5", "protobuf==3.20.3"),
            gpu=False, grouped_convolutions_refused=AT_RUN),
    Runtime("2.4", "3.8", "tensorflow-cpu==2.4.0", ("numpy==1.19.5", "protobuf==3.20.3"),
            grouped_convolutions_refused=AT_RUN),
    Runtime("2.7", "3.9", "tensorflow-cpu==2.7.0", ("numpy==1.21.6", "protobuf==3.20.3")),
)


def runtime_versions(rows=None):
    """``("1.12", "1.14", ...)``: the runtime versions, oldest first."""
    rows = ROWS if rows is None else rows
    return tuple(r.version for r in rows)


def processors(rows=None):
    """``{processor code: version}``: every CPU code, oldest first, then every GPU code."""
    rows = ROWS if rows is None else rows
    return {
        **{r.cpu_processor: r.version for r in rows},
        **{r.gpu_processor: r.version for r in rows if r.gpu},
    }


def versions_where(predicate, rows=None):
    """The versions (oldest first) of the rows for which ``predicate(row)`` is true."""
    rows = ROWS if rows is None else rows
    return tuple(r.version for r in rows if predicate(r))


def version_span(versions=None, rows=None):
    """``"1.12-2.7"``: the first and last of ``versions`` (default: every runtime); one: ``"2.3"``."""
    rows = ROWS if rows is None else rows
    versions = runtime_versions(rows) if versions is None else tuple(versions)
    if not versions:
        return ""
    return versions[0] if len(versions) == 1 else f"{versions[0]}-{versions[-1]}"


_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve")


def count_word(rows=None):
    """``"six"``: how many runtimes there are, as a word (digits past twelve)."""
    rows = ROWS if rows is None else rows
    return _WORDS[len(rows)] if len(rows) < len(_WORDS) else str(len(rows))


def python_minors(rows=None):
    """``("3.6", "3.7", ...)``: the CPythons the wheels need, each once, in row order."""
    rows = ROWS if rows is None else rows
    return tuple(dict.fromkeys(r.python_minor for r in rows))


def python_minors_text(rows=None):
    """``"3.6 for TF 1.12, 3.7 for 1.14/1.15, ..."``: which CPython each runtime needs."""
    rows = ROWS if rows is None else rows
    parts = []
    for minor in python_minors(rows):
        versions = "/".join(r.version for r in rows if r.python_minor == minor)
        parts.append(f"{minor} for {'TF ' if not parts else ''}{versions}")
    return ", ".join(parts)


def or_list(items):
    """``"3.6, 3.7, 3.8 or 3.9"``."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def xla_rule_versions(rows=None):
    """The runtimes rule ``xla-must-compile`` leaves out: those that do not compile the calls."""
    rows = ROWS if rows is None else rows
    return versions_where(lambda r: not r.xla_compiles_calls, rows)


def xla_rule_why(rows=None):
    """Rule ``xla-must-compile``'s reason, naming the runtimes it leaves out."""
    rows = ROWS if rows is None else rows
    left_out = xla_rule_versions(rows)
    compiling = versions_where(lambda r: r.xla_compiles_calls, rows)
    all_versions = runtime_versions(rows)
    if compiling and all_versions[: len(left_out)] == left_out:
        who = f"runtimes before {compiling[0]}"
    else:
        who = f"TF {', '.join(left_out)}"
    return (
        "an XLA must-compile function (tf.function(jit_compile=True)) could not be inlined; "
        f"{who} do not compile it and run its body with CPU kernels written for XLA"
    )


def channels_first_rule_versions(rows=None):
    """The runtimes rule ``channels-first-on-cpu`` leaves out."""
    rows = ROWS if rows is None else rows
    return versions_where(lambda r: not r.channels_first_on_cpu, rows)


def grouped_convolution_rule_versions(rows=None):
    """The runtimes rule ``grouped-convolution-on-cpu`` leaves out (at load or at run)."""
    rows = ROWS if rows is None else rows
    return versions_where(lambda r: r.grouped_convolutions_refused is not None, rows)


def grouped_convolution_rule_why(rows=None):
    """Rule ``grouped-convolution-on-cpu``'s reason: ``"... (1.12 at load, 1.14-2.4 at run)"``."""
    rows = ROWS if rows is None else rows
    where = []
    for when in (AT_LOAD, AT_RUN):
        versions = versions_where(lambda r, w=when: r.grouped_convolutions_refused == w, rows)
        if versions:
            where.append(f"{version_span(versions)} at {when}")
    return "CPU convolution kernels refuse grouped convolutions (" + ", ".join(where) + ")"
