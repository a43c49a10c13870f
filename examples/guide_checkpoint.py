"""The guide's scenario 3, "Convert a Checkpoint model to the SavedModel format", on TF 2.21.

The guide defines the variables again ("variable define ..."), restores ``./lr_model/model.ckpt``
with ``saver.restore`` and calls ``simple_save``. Here a ``tf.train.Saver`` checkpoint is
written first (standing in for training), then logged twice:

1. by its prefix, with the graph from ``model.ckpt.meta`` and tensors named by string;
2. with ``build_fn``, which redefines the graph (the guide's "variable define ...") and returns
   the signature's ``(inputs, outputs)``, for checkpoints that have no ``.meta``.

    .venv/bin/python examples/guide_checkpoint.py [WORK_DIR]
"""

import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def define_model(tf):
    """The guide's "variable define ...": a logistic regression over 64 features."""
    x = tf.compat.v1.placeholder(tf.float32, [None, 64], name="x")
    w = tf.compat.v1.get_variable("weights", [64, 10])
    b = tf.compat.v1.get_variable("bias", [10], initializer=tf.compat.v1.zeros_initializer())
    y = tf.nn.softmax(tf.matmul(x, w) + b, name="y")
    return x, y


def main(work_dir):
    import mlflow

    import mlflow_eas_savedmodel as mes
    from mlflow_eas_savedmodel._tensorflow import import_tensorflow

    tf = import_tensorflow()
    images = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x, y = define_model(tf)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            expected = sess.run(y, {x: images})
            prefix = saver.save(sess, os.path.join(work_dir, "lr_model", "model.ckpt"))
    print(f"wrote checkpoint {prefix} (+ .index, .data-00000-of-00001, .meta)")

    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(work_dir, 'mlflow.db')}")
    mlflow.set_experiment("guide")
    with mlflow.start_run():
        from_meta = mes.log_model(prefix, name="from_meta", inputs={"image": "x:0"}, outputs={"scores": "y:0"})

        def build_fn():
            x, y = define_model(tf)
            return {"image": x}, {"scores": y}

        rebuilt = mes.log_model(prefix, name="rebuilt", build_fn=build_fn)

    for what, info in (("graph from .meta", from_meta), ("graph from build_fn", rebuilt)):
        scores = mlflow.pyfunc.load_model(info.model_uri).predict(images)
        np.testing.assert_allclose(scores, expected, rtol=1e-6)
        flavor = mlflow.models.Model.load(info.model_uri).flavors[mes.FLAVOR_NAME]
        print(f"{what}: logged {info.model_uri}, predictions match the checkpoint's")
        print(f"  compatible EAS processors: {', '.join(flavor['eas_processors'])}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        os.makedirs(sys.argv[1], exist_ok=True)
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
