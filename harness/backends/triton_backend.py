"""The Triton backend: ``Scorer`` and ``Embedder`` as clients of a Triton server.

``tritonclient``'s asyncio clients (gRPC by default, HTTP as a setting) run on an event loop in a
background thread, so the synchronous ``Scorer.score`` of the runner, a benchmark's threads or a Ray
actor can all call in. A batch larger than the model's ``max_batch_size`` (or
``triton.max_request_batch``) is split into requests sent concurrently; at most
``triton.concurrency`` requests of a client are in flight at once.

Failures: a request that the server cannot take (UNAVAILABLE: down, restarting, queue full;
RESOURCE_EXHAUSTED; HTTP 429/503) or that exceeds ``triton.timeout_s`` is retried after
``backoff_s``, doubled each retry, up to ``retries`` times; then ``BackendUnavailable`` says what
happened, to which model at which URL, after how many attempts. Other errors (a bad request) are
not retried.

Wire options: ``wire_dtype: float16`` sends ``prompt_embeds`` as FP16 (the served model must take FP16:
``rospr export --prompt-dtype float16``); ``shared_memory: true`` passes the inputs through POSIX
shared memory regions registered with a server on this machine (one region per request in flight,
grown when a request needs more) instead of the socket.

Identity: the weights are the server's, so a run checks that the served model was built from the
checkpoint it is configured with (``check_served_source``). ``rospr export`` / ``write_repository``
put the export's ``rospr_source`` (config and weights digests of the checkpoint, from the sealed
export manifest) in each model's ``config.pbtxt``; ``create_triton_backend`` compares the served
``t0_scorer``'s with ``model.name_or_path`` (at ``model.revision``), ``TritonEmbedder`` the served
``retriever``'s with the run's retriever, and refuses (``ServedModelMismatch``, one line naming both
digests and the fix) other weights, another config, and a served model that records neither (a
repository built before rospr recorded them). What is and is not checked:

- A local checkpoint folder: the sha256 of its weight files (``rospr.identity.weights_digest``) and
  its ``config.json`` (``config_digest``), against the digests the export recorded: exact.
- A hub checkpoint: the commit ``model.revision`` resolves to (``hub-<commit>``; online or from the
  hub cache) and its config. When no commit can be resolved here the weights cannot be compared: the
  run then checks the config digest only and says so in the log (warning).
- Not checked: that the server's files are what its ``config.pbtxt`` says. The repository's record is
  trusted as written (``write_repository`` wrote it from an export verified in full); a repository
  edited by hand, or a server that is not ours, is the operator's to answer for. ``rospr verify`` on
  the repository's ``onnx/`` folder re-checks the export it was built from.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from rospr_harness.backends.base import Backend, BackendUnavailable
from rospr_harness.config import ModelConfig, TritonConfig
from rospr.artifacts import ArtifactError
from rospr.errors import RosprError, SettingError
from rospr.scoring import ScoreBatch

log = logging.getLogger(__name__)

RETRYABLE_GRPC = ("StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.DEADLINE_EXCEEDED")
RETRYABLE_HTTP = ("429", "502", "503", "504")
CONNECT_TIMEOUT_S = 10.0
CONNECT_FLOOR_S = 1.0  # a per-request timeout_s tighter than this still gets a chance to connect
_NP = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32}
_TRITON = {np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16", np.dtype(np.int64): "INT64"}


class TritonRequestError(RosprError, RuntimeError):
    """The server refused a request for a reason that retrying cannot fix (the message has it)."""


class ServedModelMismatch(ArtifactError):
    """A served model built from another checkpoint (other weights or config) than the run's."""


def check_served_source(client: "TritonModelClient", name_or_path: str | os.PathLike, revision: str | None,
                        field: str) -> dict:
    """Refuse (``ServedModelMismatch``, one line) a served model whose ``rospr_source`` (the digests of
    the checkpoint its repository was exported from) is missing or differs from the checkpoint
    ``name_or_path`` at ``revision`` that the run's ``field`` names. Returns the served source. See the
    module docstring for what is and is not checked."""
    from rospr.identity import config_digest, weights_digest

    name = str(name_or_path)
    fix = (f"rebuild the repository for this checkpoint (`rospr export --model {name} --out DIR`, then "
           f"`rospr serve --repo DIR`), or point {field} at the checkpoint the repository was built from")
    raw = client.parameters.get("rospr_source")
    try:
        served = json.loads(raw) if raw else None
    except ValueError:
        served = None
    if not isinstance(served, dict) or not served.get("weights") or not served.get("config"):
        raise ServedModelMismatch(
            f"Triton: {client._where()} does not record the weights and config it was exported from (its "
            f"config.pbtxt has no valid rospr_source parameter: a repository built before rospr recorded them, "
            f"or not by `rospr export`), so it cannot be checked against {field}={name}; {fix}")
    try:
        want_weights = weights_digest(name, revision=revision)
    except ValueError as exc:
        if Path(name).exists():
            raise
        want_weights = None
        log.warning("Triton: %s: the commit of %s=%s is not known here (%s); only its config is compared with "
                    "the served model's", client._where(), field, name, str(exc).splitlines()[0])
    want_config = config_digest(name, revision)
    for what, got, want in (("weights", served["weights"], want_weights), ("config", served["config"], want_config)):
        if want is not None and got != want:
            raise ServedModelMismatch(
                f"Triton: {client._where()} was exported from {what} {got} ({served.get('source')}), "
                f"{field}={name} has {what} {want}: the same architecture is not the same model; {fix}")
    return served


class _LoopThread:
    """An asyncio event loop running in a daemon thread; ``run`` waits for a coroutine's result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="triton-client", daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        self.loop.close()


class _ShmPool:
    """System shared-memory regions, one per request in flight, registered with the server."""

    def __init__(self, client, size: int, count: int) -> None:
        self.client = client
        self.prefix = f"rospr_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.free: asyncio.Queue = asyncio.Queue()
        self.regions: dict[str, tuple[Any, int]] = {}
        self.count, self.size = count, size

    async def start(self) -> None:
        for i in range(self.count):
            await self._create(f"{self.prefix}_{i}", self.size)
            self.free.put_nowait(f"{self.prefix}_{i}")

    async def _create(self, name: str, size: int) -> None:
        import tritonclient.utils.shared_memory as shm

        handle = shm.create_shared_memory_region(name, "/" + name, size)
        self.regions[name] = (handle, size)
        await self.client.register_system_shared_memory(name, "/" + name, size)

    async def _destroy(self, name: str) -> None:
        import tritonclient.utils.shared_memory as shm

        handle, _ = self.regions.pop(name)
        try:
            await self.client.unregister_system_shared_memory(name)
        finally:
            shm.destroy_shared_memory_region(handle)

    async def acquire(self, nbytes: int) -> str:
        name = await self.free.get()
        old = self.regions[name][1]
        if old < nbytes:  # grow: a new region under the same name
            await self._destroy(name)
            await self._create(name, max(nbytes, 2 * old))
        return name

    def release(self, name: str) -> None:
        self.free.put_nowait(name)

    async def close(self) -> None:
        for name in list(self.regions):
            try:
                await self._destroy(name)
            except Exception as exc:  # the server may be gone: the local region is destroyed anyway
                log.debug("shared memory %s: %s", name, exc)


class TritonModelClient:
    """One served model: splits rows into requests, sends them with bounded concurrency, retries."""

    def __init__(self, model: str, url: str = "127.0.0.1:8001", protocol: str = "grpc", concurrency: int = 4,
                 timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 0.5,
                 shared_memory: bool = False, max_request_batch: int | None = None) -> None:
        if protocol not in ("grpc", "http"):
            raise SettingError(f"triton.protocol={protocol!r}: choose grpc or http")
        self.model, self.url, self.protocol = model, url, protocol
        self.concurrency, self.timeout_s, self.retries, self.backoff_s = concurrency, timeout_s, retries, backoff_s
        self.stats = {"requests": 0, "attempts": 0, "retries": 0, "timeouts": 0}
        self._loop = _LoopThread()
        try:
            self._loop.run(self._connect(shared_memory, max_request_batch))
        except BaseException:
            self._loop.close()
            raise

    # -- connection -------------------------------------------------------------------------
    def _where(self) -> str:
        return f"model {self.model!r} at {self.protocol}://{self.url}"

    async def _connect(self, shared_memory: bool, max_request_batch: int | None) -> None:
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as client_mod
        else:
            import tritonclient.http.aio as client_mod
        from tritonclient.utils import InferenceServerException

        self._mod = client_mod
        self.client = client_mod.InferenceServerClient(self.url)
        self._sem = asyncio.Semaphore(self.concurrency)
        # connecting (readiness, metadata, config together) has its own deadline: the lesser of
        # CONNECT_TIMEOUT_S and triton.timeout_s (the budget of one inference), at least CONNECT_FLOOR_S
        limit = min(CONNECT_TIMEOUT_S, max(self.timeout_s, CONNECT_FLOOR_S))
        log.info("Triton: connecting to %s (waiting up to %g s)", self._where(), limit)
        try:
            meta, config = await asyncio.wait_for(self._describe(), limit)
        except BackendUnavailable:
            await self._close_client()
            raise
        except (InferenceServerException, OSError, asyncio.TimeoutError) as exc:
            await self._close_client()
            timed_out = isinstance(exc, asyncio.TimeoutError) or "DEADLINE_EXCEEDED" in str(exc)
            reason = (f"timed out after {limit:g} s: something accepts connections there but gives no answer "
                      f"(not a Triton server, or a hung one; the wait is triton.timeout_s within [{CONNECT_FLOOR_S:g}, {CONNECT_TIMEOUT_S:g}] s)"
                      if timed_out else str(exc).strip() or type(exc).__name__)
            raise BackendUnavailable(
                f"Triton: cannot reach {self._where()}: {reason}. Start a server with "
                "`rospr serve --repo model_repo_build/` (or the docker/ compose) and check triton.url / triton.protocol."
            ) from None
        config = config.get("config", config)
        self.config = config
        self.inputs = {i["name"]: i["datatype"] for i in meta["inputs"]}
        self.outputs = [o["name"] for o in meta["outputs"]]
        self.output_shapes = {o["name"]: [int(x) for x in o["shape"]] for o in meta["outputs"]}
        self.input_shapes = {i["name"]: [int(x) for x in i["shape"]] for i in meta["inputs"]}
        self.parameters = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        served_max = int(config.get("max_batch_size", 0) or 0)
        self.max_rows = max_request_batch or served_max or 1_000_000
        if served_max and self.max_rows > served_max:
            raise SettingError(f"triton.max_request_batch={self.max_rows} exceeds {self.model}'s max_batch_size {served_max}")
        self._shm = None
        if shared_memory:
            self._shm = _ShmPool(self.client, 1 << 20, self.concurrency)
            await self._shm.start()

    async def _describe(self) -> tuple[dict, dict]:
        """The served model's metadata and config, once it says it is ready."""
        if not await self.client.is_model_ready(self.model):
            raise BackendUnavailable(f"Triton: {self._where()} is not ready (is it in the repository?)")
        meta = await self.client.get_model_metadata(self.model, **self._as_json())
        config = await self.client.get_model_config(self.model, **self._as_json())
        return meta, config

    def _as_json(self) -> dict:
        return {"as_json": True} if self.protocol == "grpc" else {}

    async def _close_client(self) -> None:
        try:
            if getattr(self, "_shm", None) is not None:
                await self._shm.close()
            await self.client.close()
        except Exception as exc:
            log.debug("closing the Triton client: %s", exc)

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        try:
            self._loop.run(self._close_client())
        finally:
            self._loop.close()

    # -- requests ----------------------------------------------------------------------------
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``feeds`` (rows on axis 0) through the model; returns its outputs, rows in order."""
        return self._loop.run(self.infer_async(feeds))

    async def infer_async(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = next(iter(feeds.values())).shape[0]
        chunks = [{k: np.ascontiguousarray(v[s : s + self.max_rows]) for k, v in feeds.items()}
                  for s in range(0, rows, self.max_rows)]
        parts = await asyncio.gather(*(self._request(c) for c in chunks))
        return {name: np.concatenate([p[name] for p in parts], axis=0) for name in self.outputs}

    def _retryable(self, exc: Exception) -> bool:
        if isinstance(exc, (asyncio.TimeoutError, ConnectionError, OSError)):
            return True
        status = str(getattr(exc, "status", lambda: None)() or "")
        if self.protocol == "grpc":
            return status in RETRYABLE_GRPC
        # aiohttp connection errors surface as their own types; server answers carry the HTTP status
        return status in RETRYABLE_HTTP or type(exc).__module__.startswith("aiohttp")

    async def _request(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tritonclient.utils import InferenceServerException

        self.stats["requests"] += 1
        delay = self.backoff_s
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                await asyncio.sleep(delay)
                delay *= 2
            try:
                async with self._sem:
                    self.stats["attempts"] += 1
                    return await self._send(feeds)
            except asyncio.TimeoutError as exc:
                self.stats["timeouts"] += 1
                last = exc
                log.warning("Triton: %s timed out after %.3gs (attempt %d/%d)", self._where(), self.timeout_s,
                            attempt + 1, self.retries + 1)
            except Exception as exc:  # InferenceServerException, aiohttp / OS errors
                if not self._retryable(exc):
                    msg = exc.message() if isinstance(exc, InferenceServerException) else str(exc)
                    raise TritonRequestError(f"Triton: {self._where()} refused the request: {msg}") from None
                last = exc
                log.warning("Triton: %s: %s (attempt %d/%d)", self._where(), exc, attempt + 1, self.retries + 1)
        what = (f"timed out (triton.timeout_s={self.timeout_s:g})" if isinstance(last, asyncio.TimeoutError)
                else f"unavailable: {str(last).strip() or type(last).__name__}")
        raise BackendUnavailable(
            f"Triton: {self._where()} {what} after {self.retries + 1} attempts "
            f"(triton.retries={self.retries}, backoff from {self.backoff_s:g}s). Is the server up? "
            "Finished units are kept in the run directory."
        )

    async def _send(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mod = self._mod
        inputs = []
        region = None
        try:
            if self._shm is not None:
                region = await self._shm.acquire(sum(v.nbytes for v in feeds.values()))
            offset = 0
            for name, value in feeds.items():
                inp = mod.InferInput(name, list(value.shape), _TRITON[value.dtype])
                if region is not None:
                    import tritonclient.utils.shared_memory as shm

                    shm.set_shared_memory_region(self._shm.regions[region][0], [value], offset=offset)
                    inp.set_shared_memory(region, value.nbytes, offset=offset)
                    offset += value.nbytes
                else:
                    inp.set_data_from_numpy(value)
                inputs.append(inp)
            outputs = [mod.InferRequestedOutput(n) for n in self.outputs]
            kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
            result = await asyncio.wait_for(self.client.infer(self.model, inputs, outputs=outputs, **kwargs),
                                            self.timeout_s)
        except Exception as exc:
            # gRPC's own deadline arrives as DEADLINE_EXCEEDED: count it as the timeout it is
            if "DEADLINE_EXCEEDED" in str(getattr(exc, "status", lambda: "")() or ""):
                raise asyncio.TimeoutError() from None
            raise
        finally:
            if region is not None:
                self._shm.release(region)
        return {n: result.as_numpy(n) for n in self.outputs}


class TritonScorer:
    """``Scorer`` over a served ``t0_scorer``."""

    def __init__(self, url: str = "127.0.0.1:8001", protocol: str = "grpc", model: str = "t0_scorer",
                 wire_dtype: str = "float32", **client_kwargs) -> None:
        self.client = TritonModelClient(model, url, protocol, **client_kwargs)
        served = self.client.inputs.get("prompt_embeds")
        if served is None:
            self.client.close()
            raise SettingError(f"Triton: model {model!r} has no prompt_embeds input; is triton.model a t0_scorer?")
        want = {"float32": "FP32", "float16": "FP16"}[wire_dtype]
        if served != want:
            self.client.close()
            raise SettingError(
                f"triton.wire_dtype={wire_dtype}: the served {model!r} takes prompt_embeds as {served}. Set "
                f"triton.wire_dtype={'float16' if served == 'FP16' else 'float32'}, or re-export with "
                f"`rospr export --prompt-dtype {wire_dtype}`."
            )
        self.wire = np.float16 if wire_dtype == "float16" else np.float32
        params = self.client.parameters
        self.prompt_dim = int(params.get("rospr_d_model") or self.client.input_shapes["prompt_embeds"][-1])
        self.identity = json.loads(params["rospr_identity"]) if params.get("rospr_identity") else {"name": model}

    def score(self, batch: ScoreBatch) -> np.ndarray:
        return self.client.infer(batch.feeds(self.wire))["scores"].astype(np.float32, copy=False)

    def close(self) -> None:
        self.client.close()


class TritonEmbedder:
    """``Embedder`` over a served ``retriever``."""

    def __init__(self, url: str = "127.0.0.1:8001", protocol: str = "grpc", model: str = "retriever",
                 checkpoint: str | os.PathLike | None = None, revision: str | None = None,
                 **client_kwargs) -> None:
        self.client = TritonModelClient(model, url, protocol, **client_kwargs)
        if checkpoint is not None:  # the retriever the run embeds with: the served one must be it
            try:
                check_served_source(self.client, checkpoint, revision, "rospr.retriever")
            except BaseException:
                self.client.close()
                raise
        self.dim = int(self.client.output_shapes["sentence_embedding"][-1])

    @classmethod
    def from_config(cls, cfg, retriever: str | os.PathLike | None = None,
                    revision: str | None = None) -> "TritonEmbedder":
        """The served ``triton.retriever_model``; given the run's ``retriever`` checkpoint (at hub
        ``revision``), refused unless it was exported from that checkpoint (``check_served_source``)."""
        return cls(cfg.url, cfg.protocol, cfg.retriever_model, retriever, revision, **_client_kwargs(cfg))

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids.astype(np.int64, copy=False),
                 "attention_mask": attention_mask.astype(np.int64, copy=False)}
        return self.client.infer(feeds)["sentence_embedding"].astype(np.float32, copy=False)

    def close(self) -> None:
        self.client.close()


def _client_kwargs(cfg) -> dict:
    return dict(concurrency=cfg.concurrency, timeout_s=cfg.timeout_s, retries=cfg.retries, backoff_s=cfg.backoff_s,
                shared_memory=cfg.shared_memory, max_request_batch=cfg.max_request_batch)


def create_triton_backend(model: ModelConfig, cfg: TritonConfig, urls: list[str]) -> Backend:
    """The Triton ``Backend``: a client of the first server of ``urls`` that answers (``triton.url``,
    or ``ray.triton_urls`` for a Ray run: the driver only needs one; the scoring actors each talk to
    their own). The tokenizer is read from ``model.name_or_path`` (the weights stay on the server).
    Raises ``BackendUnavailable`` when no server answers, ``ServedModelMismatch`` when the served
    ``t0_scorer`` was not exported from ``model.name_or_path`` (``check_served_source``)."""
    from rospr.tokenizer import load_tokenizer

    errors = []
    for url in urls:
        try:
            scorer = TritonScorer(url, cfg.protocol, cfg.model, cfg.wire_dtype, **_client_kwargs(cfg))
            break
        except BackendUnavailable as exc:
            errors.append(exc)
            log.warning("%s", str(exc).splitlines()[0])
    else:
        if len(errors) == 1:
            raise errors[0]
        raise BackendUnavailable(f"Triton: none of ray.triton_urls {urls} answers ({errors[-1]})")
    try:
        served = check_served_source(scorer.client, model.name_or_path, model.revision, "model.name_or_path")
        if scorer.identity.get("weights") != served["weights"]:  # provenance and unit-cache keys use it
            raise ServedModelMismatch(
                f"Triton: {scorer.client._where()} names weights {scorer.identity.get('weights')} in rospr_identity "
                f"and {served['weights']} in rospr_source (its config.pbtxt was edited?); rebuild the repository "
                f"with `rospr export --model {model.name_or_path} --out DIR`, then `rospr serve --repo DIR`")
    except BaseException:
        scorer.close()
        raise
    cfg = cfg.model_copy(update={"url": url})
    tokenizer = load_tokenizer(model.name_or_path, model.revision)
    identity = dict(scorer.identity, triton_url=f"{cfg.protocol}://{cfg.url}", wire_dtype=cfg.wire_dtype)
    return Backend("triton", scorer, tokenizer, identity)
