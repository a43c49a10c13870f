"""The serving graph: what every source becomes before export (see :mod:`.serving_graph`).

The machinery that turns live TensorFlow objects into a :class:`~.serving_graph.ServingGraph`,
shared by the sources (:mod:`mlflow_eas_savedmodel.sources`, which never import each other):

* :mod:`.session_graph`: a TF1 graph in a session (sessions, Saver checkpoints, TF1 SavedModel
  folders), its signatures normalised and checked by :mod:`.signatures`;
* :mod:`.functions`: traced ``tf.function`` objects, each an :class:`~.functions.Endpoint`
  (TF2 SavedModel folders, :mod:`.module`, :mod:`.keras_model`);
* :mod:`.module`: a ``tf.Module``'s ``input_signature`` methods (a ``tf.Module`` from a
  ``tf.train.Checkpoint``, or any source holding a module);
* :mod:`.keras_model`: a Keras model (Keras objects and files, Keras models from checkpoints);
* :mod:`.reference`: the source's own outputs, which the post-save check compares with.

Below them: :mod:`.freeze` (a function or session -> a frozen ``GraphDef``), :mod:`.weights`
(the values kept out of it), :mod:`.tables`, :mod:`.edit`, and the facts they share:
:mod:`.layout` (the SavedModel's file names) and :mod:`.op_facts` (variable ops, channels-first
ops, convolution ranks, the large-constant size). After them: :mod:`.rewrite` (a package, one
module per kind of rewrite: ops old runtimes lack or whose CPU kernels they refuse) and
:mod:`.variables` (weights -> ``VariableV2``) for the export,
:mod:`.ops_policy` (which ops a model may hold, checked by the sources and the save) and
:mod:`.example_spec` (valid ``tf.Example`` inputs for the checks).
"""
