"""The guide's scenario 2: a TF1 session exported with ``SavedModelBuilder``, on TensorFlow 2.21.

The guide builds ``prediction_signature`` (``predict_images``: ``images`` -> ``scores``) and a
``legacy_init_op`` of table initializers, then ``builder.add_meta_graph_and_variables(...)``. Run
as written on TF 2.21, that SavedModel fails in EAS's C++ loader (``MatMul.grad_a``, resource
variables). Here the same session is logged with the builder's semantics: several named
signatures, a default one, and the init op run at load.

    .venv/bin/python examples/guide_session_builder.py [WORK_DIR]
"""

import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VOCABULARY = ["zero", "one", "two", "three"]


def main(work_dir):
    import mlflow

    import mlflow_eas_savedmodel as mes
    from mlflow_eas_savedmodel._tensorflow import import_tensorflow

    tf = import_tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 64], name="x")
        w = tf.compat.v1.get_variable("w", [64, 10])
        b = tf.compat.v1.get_variable("b", [10], initializer=tf.compat.v1.zeros_initializer())
        y = tf.nn.softmax(tf.matmul(x, w) + b, name="y")
        words = tf.compat.v1.placeholder(tf.string, [None], name="words")
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(VOCABULARY), tf.range(4, dtype=tf.int64)), -1
        )
        ids = tf.identity(table.lookup(words), name="ids")
        legacy_init_op = tf.group(tf.compat.v1.tables_initializer(), name="legacy_init_op")
        init = tf.compat.v1.global_variables_initializer()

    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(work_dir, 'mlflow.db')}")
    mlflow.set_experiment("guide")
    images = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run([init, legacy_init_op])
        expected = sess.run(y, {x: images})
        with mlflow.start_run():
            info = mes.log_model(
                sess,
                name="model",
                signatures={
                    "predict_images": {"inputs": {"images": x}, "outputs": {"scores": y}, "method": "predict"},
                    "lookup": {"inputs": {"words": words}, "outputs": {"ids": ids}},
                },
                default_signature="predict_images",
                init_op=legacy_init_op,
            )
    print(f"logged the session as {info.model_uri} with signatures predict_images (default) and lookup")

    model = mlflow.pyfunc.load_model(info.model_uri)
    scores = model.predict(images, params={"signature_name": "predict_images"})
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    looked_up = model.predict({"words": np.array(["two", "ten", "zero"], dtype=object)},
                              params={"signature_name": "lookup"})
    assert looked_up.tolist() == [2, -1, 0], looked_up
    print(f"predict_images matches the session; lookup(['two', 'ten', 'zero']) -> {looked_up.tolist()}")
    flavor = mlflow.models.Model.load(info.model_uri).flavors[mes.FLAVOR_NAME]
    print(f"conversion notes: {flavor['conversion_notes']}")
    print(f"compatible EAS processors: {', '.join(flavor['eas_processors'])}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        os.makedirs(sys.argv[1], exist_ok=True)
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
