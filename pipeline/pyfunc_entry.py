"""The file MLflow copies into every logged terraseg model ("models from code").

Loading the model runs this file, which hands MLflow a :class:`TerrasegPyfunc`;
nothing is unpickled. ``terraseg`` is the installed package where one is already
imported, else the copy logged with the model (``code/terraseg``, first on
``sys.path``). Importing this file elsewhere has no use.
"""

import mlflow.models

from terraseg.pipeline.pyfunc import TerrasegPyfunc

mlflow.models.set_model(TerrasegPyfunc())
