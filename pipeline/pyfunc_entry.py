"""The file MLflow copies into every logged terraseg model ("models from code").

Loading the model runs this file, which hands MLflow a :class:`TerrasegPyfunc`;
nothing is unpickled. Importing it elsewhere has no use.
"""

import mlflow.models

from terraseg.pipeline.pyfunc import TerrasegPyfunc

mlflow.models.set_model(TerrasegPyfunc())
