"""Triton python-backend twin of an onnxruntime-backend model: runs the same ONNX graph.

`rospr export` / `rospr_export.repository` copies this file to ``<twin repo>/<model>/1/model.py`` for
each model, next to the generated ``model.onnx``. The python backend hands ``execute`` every
request the dynamic batcher grouped and does not batch them itself: here they are padded to one
shape (zeros; every padded position is masked in the contract, so scores do not change), stacked
along the batch axis, run in ONE session call, and split back per request.

Parameters read from config.pbtxt: ``onnx_file`` (relative to the version folder),
``intra_op_threads`` (0: onnxruntime's default) and ``output_dims_from`` (JSON: for an output, which
of its dims is the request's own size of which input dim, so padding is cut off the answer).
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the stub (tests put a stand-in in sys.modules)


# Soft prompts are right-aligned, as rospr.scoring.collate makes them: padding goes in front, so a
# prompt stays next to its input whatever the other requests' prompt lengths (T5's attention is
# relative: padding between prompt and input would change the scores).
PAD_IN_FRONT = {"prompt_embeds": (1,), "prompt_mask": (1,)}


def pad_stack(arrays, front=()):
    """Zero-pad arrays [b_i, ...] to the largest size of every non-batch dim (at the end, or in
    front for the dims in ``front``), then concatenate along the batch."""
    ndim = arrays[0].ndim
    target = [max(a.shape[d] for a in arrays) for d in range(1, ndim)]
    out = []
    for a in arrays:
        pads = [(0, 0)] + [((t - s, 0) if d in front else (0, t - s))
                           for d, (t, s) in enumerate(zip(target, a.shape[1:]), start=1)]
        out.append(np.pad(a, pads) if any(p != (0, 0) for p in pads) else a)
    return np.concatenate(out, axis=0)


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], str(args["model_version"]))
        path = os.path.join(version_dir, params.get("onnx_file", "model.onnx"))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{args['model_name']}: no ONNX graph at {path}; build the repository with `rospr export`")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        threads = int(params.get("intra_op_threads", "0") or 0)
        if threads > 0:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                 "tensor(int32)": np.int32, "tensor(double)": np.float64}
        self.input_types = {i.name: types.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        self.output_dims_from = json.loads(params.get("output_dims_from", "") or "{}")

    def execute(self, requests):
        utils = pb_utils
        try:
            per_request = [
                {n: utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names} for r in requests
            ]
            feeds = {}
            for n in self.input_names:
                arrays = [req[n] for req in per_request]
                stacked = pad_stack(arrays, PAD_IN_FRONT.get(n, ()))
                if n == "prompt_embeds" and stacked.shape[1] == 0:
                    stacked = np.zeros((stacked.shape[0], 1, stacked.shape[2]), stacked.dtype)
                if n == "prompt_mask" and stacked.shape[1] == 0:
                    stacked = np.zeros((stacked.shape[0], 1), stacked.dtype)
                feeds[n] = np.ascontiguousarray(stacked, dtype=self.input_types.get(n, stacked.dtype))
            outputs = self.session.run(self.output_names, feeds)
        except Exception as exc:  # every request of the group gets the error, the model stays up
            error = utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses = []
        start = 0
        for req in per_request:
            b = next(iter(req.values())).shape[0]
            tensors = []
            for name, value in zip(self.output_names, outputs):
                part = value[start : start + b]
                for dim, (src, src_dim) in self.output_dims_from.get(name, {}).items():
                    part = np.take(part, np.arange(req[src].shape[src_dim]), axis=int(dim))
                tensors.append(utils.Tensor(name, np.ascontiguousarray(part)))
            responses.append(utils.InferenceResponse(output_tensors=tensors))
            start += b
        return responses

    def finalize(self):
        self.session = None
