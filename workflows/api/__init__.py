"""The Python API: every stage as a function, the same ones the CLI commands call.

Use them through the top-level package (``terraseg.tile``, ``terraseg.train``,
``terraseg.predict_file``...); see ``docs/python-api.md``. Each function takes its
stage's settings as keywords named as in the YAML files, over an optional
``config`` (a YAML file or config object), and returns plain results.
"""
