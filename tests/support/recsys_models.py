"""tensorflow-recommenders models as its tutorials build them, converted in a child process.

tensorflow-recommenders (tfrs) is written against ``tf.keras`` being Keras 2: it refuses to import
unless ``TF_USE_LEGACY_KERAS=1`` was set before TensorFlow resolved ``tf.keras``, which would
change ``tf.keras`` for every other test in the pytest process. So this module runs as a child
(``python tests/support/recsys_models.py WORKDIR``) with that variable set. It builds the tutorials'
shapes with a tiny vocabulary (no downloads): the ranking model (two ``StringLookup`` +
``Embedding`` towers and a ranking MLP inside a ``tfrs.models.Model`` taking a dict of string
features), the retrieval model's query tower, and a ``BruteForce`` top-k index over the candidate
tower, each trained one epoch on four rows. Each is saved with ``save_model`` in memory
(called and never called with ``input_example=``) and from the SavedModel folders ``model.save(dir)``
(tf_keras' SavedModel format) and ``tf.saved_model.save`` write. Per case it leaves
``WORKDIR/<case>/model`` (the MLflow model), ``inputs.npz`` and ``expected.npz`` (the original
model's own answer), or ``error.txt``; ``cases.json`` lists them. The tests
(``tests/flavor/test_recsys_models.py``) load and compare in the parent.
"""

import json
import os
import sys
import traceback

import numpy as np

USERS = ["u1", "u2", "u3", "u4"]
MOVIES = ["m1", "m2", "m3", "m4", "m5"]
# Unknown ids ("zz", "m9") go to the lookups' OOV row.
RANKING_FEATURES = {
    "user_id": np.array(["u1", "u3", "zz", "u2", "u4"]),
    "movie_title": np.array(["m2", "m5", "m1", "m9", "m3"]),
}
QUERIES = np.array(["u1", "u4", "zz", "u2"])
CASES = [
    "ranking_called",
    "ranking_never_called_with_example",
    "ranking_keras_save_folder",
    "ranking_tf_saved_model_folder",
    "query_tower",
    "retrieval_index_called",
    "retrieval_index_never_called_with_example",
    "retrieval_index_tf_saved_model_folder",
]


def build(tf, tfrs):
    """``{case: (source for save_model, save_model kwargs, inputs, model answering)}``."""
    tf.keras.utils.set_random_seed(0)

    def tower(vocabulary):
        return tf.keras.Sequential([
            tf.keras.layers.StringLookup(vocabulary=vocabulary, mask_token=None),
            tf.keras.layers.Embedding(len(vocabulary) + 1, 4),
        ])

    class RankingModel(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.user_embeddings = tower(USERS)
            self.movie_embeddings = tower(MOVIES)
            self.ratings = tf.keras.Sequential([
                tf.keras.layers.Dense(8, activation="relu"),
                tf.keras.layers.Dense(4, activation="relu"),
                tf.keras.layers.Dense(1),
            ])

        def call(self, inputs):
            user_id, movie_title = inputs
            embedded = [self.user_embeddings(user_id), self.movie_embeddings(movie_title)]
            return self.ratings(tf.concat(embedded, axis=1))

    class MovielensRanking(tfrs.models.Model):
        def __init__(self):
            super().__init__()
            self.ranking_model = RankingModel()
            self.task = tfrs.tasks.Ranking(
                loss=tf.keras.losses.MeanSquaredError(),
                metrics=[tf.keras.metrics.RootMeanSquaredError()],
            )

        def call(self, features):
            return self.ranking_model((features["user_id"], features["movie_title"]))

        def compute_loss(self, features, training=False):
            labels = features.pop("user_rating")
            return self.task(labels=labels, predictions=self(features))

    class MovielensRetrieval(tfrs.Model):
        def __init__(self):
            super().__init__()
            self.user_model, self.movie_model = tower(USERS), tower(MOVIES)
            candidates = tf.data.Dataset.from_tensor_slices(MOVIES).batch(2).map(self.movie_model)
            self.task = tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(candidates))

        def compute_loss(self, features, training=False):
            return self.task(
                self.user_model(features["user_id"]), self.movie_model(features["movie_title"])
            )

    class Recommender(tf.keras.Model):
        """The retrieval tutorial's served index, as a model answering scores and titles."""

        def __init__(self, index):
            super().__init__()
            self.index = index

        def call(self, user_id):
            scores, titles = self.index(user_id)
            return {"scores": scores, "titles": titles}

    ratings = dict(RANKING_FEATURES, user_rating=np.array([1, 4, 3, 5, 2], "float32"))
    ranking = MovielensRanking()
    ranking.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    ranking.fit(tf.data.Dataset.from_tensor_slices(ratings).batch(2), epochs=1, verbose=0)
    fresh = MovielensRanking()  # never called: only input_example says its inputs
    watches = {"user_id": np.array(USERS), "movie_title": np.array(["m1", "m3", "m5", "m2"])}
    retrieval = MovielensRetrieval()
    retrieval.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    retrieval.fit(tf.data.Dataset.from_tensor_slices(watches).batch(2), epochs=1, verbose=0)
    movies = tf.data.Dataset.from_tensor_slices(MOVIES)
    index = tfrs.layers.factorized_top_k.BruteForce(retrieval.user_model, k=3)
    index.index_from_dataset(tf.data.Dataset.zip((movies.batch(2), movies.batch(2).map(retrieval.movie_model))))
    recommender = Recommender(index)
    recommender(QUERIES)
    unserved = Recommender(index)  # never called

    example = {k: v[:2] for k, v in RANKING_FEATURES.items()}
    # (source, save_model kwargs, inputs, the model whose answer is expected). A folder source is
    # ("keras_save" | "tf_saved_model", the object written). The expected answer is computed
    # after the save: a never-called model gets its weights when the save traces it.
    return {
        "ranking_called": (ranking, {}, RANKING_FEATURES, ranking),
        "ranking_never_called_with_example": (fresh, {"input_example": example}, RANKING_FEATURES, fresh),
        "ranking_keras_save_folder": (("keras_save", ranking), {}, RANKING_FEATURES, ranking),
        "ranking_tf_saved_model_folder": (("tf_saved_model", ranking), {}, RANKING_FEATURES, ranking),
        "query_tower": (retrieval.user_model, {}, QUERIES, retrieval.user_model),
        "retrieval_index_called": (recommender, {}, QUERIES, recommender),
        "retrieval_index_never_called_with_example": (
            unserved, {"input_example": QUERIES[:2]}, QUERIES, unserved
        ),
        "retrieval_index_tf_saved_model_folder": (("tf_saved_model", index), {}, QUERIES, index),
    }


def answer(model, inputs):
    """The model's own outputs, keyed as the converted model keys them (strings as bytes)."""
    out = model(inputs)
    if isinstance(out, dict):
        out = dict(out)
    elif isinstance(out, (list, tuple)):
        out = {f"output_{i + 1}": v for i, v in enumerate(out)}
    else:
        out = {"outputs": out}
    out = {k: np.asarray(v) for k, v in out.items()}
    # npz holds no object arrays without pickle: top-k titles become fixed-width bytes.
    return {k: v.astype(bytes) if v.dtype == object else v for k, v in out.items()}


def main(workdir):
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    try:
        import tensorflow_recommenders as tfrs
    except ImportError as e:
        with open(os.path.join(workdir, "skip.txt"), "w") as f:
            f.write(f"{e}")
        return
    from mlflow.models import Model

    import mlflow_eas_savedmodel as mes

    cases = build(tf, tfrs)
    done = {}
    for name in CASES:
        source, kwargs, inputs, model = cases[name]
        folder = os.path.join(workdir, name)
        os.makedirs(folder)
        try:
            if isinstance(source, tuple):  # write the SavedModel folder, then convert it
                how, written = source
                source = os.path.join(folder, "savedmodel_source")
                written.save(source) if how == "keras_save" else tf.saved_model.save(written, source)
            mes.save_model(source, os.path.join(folder, "model"), **kwargs)
            expected = answer(model, inputs)
            if not isinstance(inputs, dict):  # keyed as the converted model keys its one input
                (key,) = Model.load(os.path.join(folder, "model")).flavors[mes.FLAVOR_NAME][
                    "signature_defs"]["serving_default"]["inputs"]
                inputs = {key: inputs}
            np.savez(os.path.join(folder, "inputs.npz"), **inputs)
            np.savez(os.path.join(folder, "expected.npz"), **expected)
            done[name] = "saved"
        except Exception:  # noqa: BLE001 - the parent test reports it
            with open(os.path.join(folder, "error.txt"), "w") as f:
                f.write(traceback.format_exc())
            done[name] = "error"
    with open(os.path.join(workdir, "cases.json"), "w") as f:
        json.dump(done, f)


if __name__ == "__main__":
    main(sys.argv[1])
