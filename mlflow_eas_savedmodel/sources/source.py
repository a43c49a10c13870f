"""What a source module declares: one :class:`Source`, its ``SOURCE``.

:mod:`mlflow_eas_savedmodel.sources` keeps the ``SOURCE`` of every module in one ordered tuple
and derives the rest from it: which kind a model is (the first whose ``accepts`` says yes), the
list of what ``save_model`` accepts, the error for a path no kind accepts, and the options each
kind takes. Adding a kind is one module declaring a ``SOURCE`` plus one entry in that tuple.
"""

import dataclasses
import os
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Source:
    """One source kind.

    Attributes:
        kind: its name, stored as the MLmodel's ``source`` and used in errors (``"keras"``).
        description: what the user passes, as the "Pass ..." list of errors says it
            (``"a tf.compat.v1.Session"``).
        options: the :class:`~mlflow_eas_savedmodel.sources.SourceOptions` fields it takes, in
            the order the error for another option lists them.
        accepts: ``accepts(model) -> bool``, whether ``model`` is of this kind; called in the
            table's order, so it may assume the kinds before it said no. It opens nothing
            with TensorFlow; it may raise for a model that looks like this kind but cannot be
            one (a legacy SessionBundle folder).
        to_serving_graph: ``to_serving_graph(model, options) -> ServingGraph``; an
            ``os.PathLike`` model arrives as ``str``.
        path_description: for a kind given as a path, what the path must be, as the error for
            a path no kind accepts lists it (``"a checkpoint prefix (PREFIX.index)"``).
        names_own_signatures: the model names its SignatureDefs itself (a SavedModel folder),
            so errors name no requested signature.
    """

    kind: str
    description: str
    options: tuple
    accepts: Callable
    to_serving_graph: Callable
    path_description: str = None
    names_own_signatures: bool = False


def as_path(model):
    """``model`` as a ``str`` path, or ``None`` when it is not a ``str``/``os.PathLike``."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return None
