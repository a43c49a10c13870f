"""Concurrent promotions against a real sqlite registry: check-then-move must not let a
promotion replace a holder it never compared against, and the printed previous holder is real."""

import threading

import mlflow
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import mlflow_eas_savedmodel as mes
from mlflow_eas_savedmodel.registry import promote, promote_command


@pytest.fixture
def versions(tracking_uri, mlp, tf):
    """``race`` versions 1 and 3 (the MLP) and 2 (another signature); @champion on version 1."""
    import keras

    inp = keras.Input((8,), name="image")
    wide = keras.Model(inp, keras.layers.Dense(3, name="probs")(inp))
    for model in (mlp, wide, mlp):
        with mlflow.start_run():
            mes.log_model(model, name="model", registered_model_name="race")
    promote("race", 1)
    return tracking_uri


class _Interleaved(MlflowClient):
    """A real client that runs ``during_check`` once, when its promotion downloads the alias
    holder's MLmodel to compare (between the check and the move): the interleaving of two
    concurrent promotions."""

    def __init__(self, during_check, holder="1", **kwargs):
        super().__init__(**kwargs)
        self.during_check, self.holder = during_check, holder

    def get_model_version_download_uri(self, name, version):
        if self.during_check and str(version) == self.holder:
            action, self.during_check = self.during_check, None
            action()
        return super().get_model_version_download_uri(name, version)


def _holder(name="race", alias="champion"):
    return str(MlflowClient().get_model_version_by_alias(name, alias).version)


def test_unforced_promotion_does_not_replace_a_forced_one_that_moved_in_meanwhile(versions):
    forced = []
    client = _Interleaved(lambda: forced.append(promote("race", 2, force=True)), tracking_uri=versions)
    with pytest.raises(MlflowException, match=(
        r"@champion of 'race' was moved by another promotion while this promotion checked it: it "
        r"is now held by version 2, not version 1\. Version 3 was not promoted")):
        promote("race", 3, client=client)
    assert forced[0].previous_version == "1" and forced[0].forced
    assert _holder() == "2"  # the forced promotion stands; 3 was never compared against 2
    # Promoting again compares against the real holder and names it.
    with pytest.raises(MlflowException, match="from version 2 to version 3: their SignatureDefs differ"):
        promote("race", 3)


def test_printed_previous_version_is_the_one_actually_replaced(versions):
    # A forced promotion that raced with another cannot report a holder it did not replace.
    client = _Interleaved(lambda: promote("race", 2, force=True), tracking_uri=versions)
    with pytest.raises(MlflowException, match="now held by version 2, not version 1"):
        promote("race", 3, force=True, client=client)
    result = CliRunner().invoke(promote_command, ["race", "3", "--force", "--tracking-uri", versions])
    assert result.exit_code == 0, result.output
    assert "Promoted 'race' version 3 to @champion (was version 2)." in result.output
    assert _holder() == "3"


def test_concurrent_promotions_end_consistent(versions):
    """Eight threads promote versions 1 and 3 (same SignatureDefs) at once: each either moves
    the alias from the version it names, or fails saying another promotion moved it."""
    results, errors = [], []
    start = threading.Barrier(8)

    def run(version):
        start.wait()
        try:
            results.append(promote("race", version, client=MlflowClient(tracking_uri=versions)))
        except MlflowException as e:
            errors.append(e.message)

    threads = [threading.Thread(target=run, args=(1 + 2 * (i % 2),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) + len(errors) == 8
    assert results, errors
    assert all("was moved by another promotion" in e for e in errors), errors
    assert _holder() in {r.version for r in results}
    assert all(r.previous_version in ("1", "3") for r in results)
