"""The bundled training recipes (``*.yaml``), installed as ``dcsd.configs``; see
:mod:`dcsd.recipe` and ``dcsd train --config NAME``."""
