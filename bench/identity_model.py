"""The identity ``PythonModel`` (MLflow models-from-code): the scoring server's own ceiling."""

import mlflow


class Identity(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Identity())
