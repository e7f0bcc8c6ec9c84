"""Optimum -> ONNX export of the scorer and retriever (``export``: the whole export; ``trace``, ``validate``,
``identity``, ``manifest``: its steps), and the Triton model repository writer (``repository``)."""
