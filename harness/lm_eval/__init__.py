"""rospr as an lm-evaluation-harness model (``model.py``: ``RosprLM``, registered as ``rospr`` on import).

Its own folder above ``backends/``: the model builds a backend (``backends/``) from the run config
(``config.py``), and nothing below it imports it (only ``cli/lm_eval.py``, ``rospr lm-eval``)."""
