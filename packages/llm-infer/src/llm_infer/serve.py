"""OpenAI-compatible serving: the model behind /v1/chat/completions and /v1/completions, load-tested.

An OpenAI-compatible HTTP API lets any OpenAI client (SDKs, agents, eval harnesses) use the model:
chat and text completions, streamed as server-sent events. With `--backend vllm` the server is `vllm
serve`, whose PagedAttention keeps the KV cache in fixed-size blocks so many requests are batched
continuously (Kwon et al. 2023, arXiv:2309.06180): the `vllm` extra on a CUDA GPU, the `vllm-cpu` build in
its own environment on a CPU (see `vllm_cpu.py`). `auto` picks vLLM on a CUDA GPU with vllm installed;
elsewhere the server is `transformers serve`
(FastAPI + uvicorn, model preloaded, optional `--continuous_batching`), started with two small fixes:
request bodies are checked, so a bad one gets a 400 JSON error rather than a 500, and /v1/models lists
the served folder. Either way it runs as a subprocess bound to 127.0.0.1 by default; `--api_key` (or the
LLM_INFER_API_KEY environment variable) makes both servers answer 401 to /v1 requests without
`Authorization: Bearer <key>`, as vLLM's own `--api-key` does. Like a TGI server, it serves one model
and takes the placeholder names TGI clients send ("tgi", "dummy") for it, so a client written for TGI's
Messages API (huggingface_hub's `InferenceClient(base_url=...)`) works unchanged.

With `--load_test_requests N` the command starts the server, sends N requests from `--load_test_clients`
concurrent official-openai clients (chat, completion and streamed chat in turn), then malformed requests
that must get a 4xx JSON error without taking the server down (and, with a key, requests without it
that must get 401), writes the metrics and stops the server; with 0 it serves in the foreground until
Ctrl-C.

    llm-infer serve --model models/sft-full --data data/synth/sft --port 0 --load_test_requests 64 \\
        --load_test_clients 16 --max_tokens 16 --metrics reports/metrics/infer_serve.json
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from llm_data.io import write_metrics

from llm_infer import vllm_cpu
from llm_infer.runtime import load_prompts, render, require_model

logger = logging.getLogger(__name__)
BACKENDS = ("auto", "transformers", "vllm")
API_KEY_ENV = "LLM_INFER_API_KEY"
# The `model` names TGI clients send for "whatever you serve" (a TGI server serves one model and ignores
# the field): "tgi" in TGI's docs, "dummy" from huggingface_hub's InferenceClient (2.4, as locked here).
TGI_MODELS = ("tgi", "dummy")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
KINDS = ("chat", "completion", "chat_stream")


@dataclass
class ServeConfig:
    model: str = field(default="models/sft-full", metadata={"help": "Model folder (or hub id) to serve."})
    backend: str = field(
        default="auto",
        metadata={"help": "auto (vllm on a CUDA GPU when vllm is installed, else transformers), transformers, "
                  "vllm (without CUDA: the vllm-cpu build in its own environment, built on first use)."},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Address to bind (loopback: only this machine)."})
    api_key: str = field(
        default="",
        metadata={"help": "Answer 401 to /v1 requests without `Authorization: Bearer <key>` (default: the "
                  f"{API_KEY_ENV} environment variable; empty = anyone who can reach the port)."},
    )
    port: int = field(default=8000, metadata={"help": "Port to listen on (0 = pick a free one)."})
    continuous_batching: bool = field(
        default=False, metadata={"help": "transformers: paged-attention continuous batching (vLLM always does it)."}
    )
    startup_timeout_s: float = field(
        default=300.0, metadata={"help": "Seconds to wait for the server to answer (vLLM compiles first)."}
    )
    load_test_requests: int = field(
        default=0, metadata={"help": "Requests of the load test (0 = serve in the foreground until Ctrl-C)."}
    )
    load_test_clients: int = field(default=16, metadata={"help": "Load test: concurrent clients."})
    max_tokens: int = field(default=16, metadata={"help": "Load test: longest reply per request, in tokens."})
    request_timeout_s: float = field(default=120.0, metadata={"help": "Load test: seconds before a request fails."})
    data: str = field(
        default="data/synth/sft", metadata={"help": "Load test: dataset folder whose prompts are sent."}
    )
    split: str = field(default="test", metadata={"help": "Load test: split the prompts come from."})
    seed: int = field(default=0, metadata={"help": "Server's default seed (load-test requests are greedy)."})
    metrics: str = field(
        default="", metadata={"help": "Load test: flat metrics JSON (errors, requests_per_s, ...); '' = skip."}
    )

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not self.host.strip():
            raise ValueError("host is empty; pass --host 127.0.0.1 (or 0.0.0.0 to accept other machines)")
        self.api_key = self.api_key or os.environ.get(API_KEY_ENV, "")
        if not self.api_key and self.host.strip() not in _LOOPBACK:
            logger.warning("binding %s without an API key: anyone who can reach this port can use the model "
                           "(pass --api_key or set %s)", self.host, API_KEY_ENV)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535 (0 = a free port), got {self.port}")
        if self.load_test_requests < 0:
            raise ValueError(f"load_test_requests must be >= 0 (0 = just serve), got {self.load_test_requests}")
        for name in ("load_test_clients", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("startup_timeout_s", "request_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")


# ----------------------------------------------------------------------------- the server process


def resolve_backend(backend: str) -> str:
    """`auto` -> vllm when a CUDA GPU and vllm are both there, else transformers; `vllm` -> vllm-cpu (its
    own environment) without a CUDA GPU."""
    import importlib.util

    import torch

    has_vllm, cuda = importlib.util.find_spec("vllm") is not None, torch.cuda.is_available()
    if backend == "vllm" and not cuda:
        return "vllm-cpu"
    if backend == "vllm" and not has_vllm:
        raise ValueError("backend vllm: vllm is not installed; `uv sync --extra vllm` on a CUDA machine, "
                         "or pass --backend transformers")
    if backend != "auto":
        return backend
    return "vllm" if has_vllm and cuda else "transformers"


def server_command(cfg: ServeConfig, backend: str, port: int) -> list[str]:
    """The server's command line, run with this interpreter so it is the same environment."""
    if backend in ("vllm", "vllm-cpu"):
        # --served-model-name keeps the request's `model` equal to what was asked for (TGI's placeholder
        # names follow); vLLM batches continuously on its own, so --continuous_batching has no vLLM
        # flag. The API key travels in VLLM_API_KEY (see `server_env`), not on the command line.
        args = ["--host", cfg.host, "--port", str(port), "--seed", str(cfg.seed), "--served-model-name", cfg.model,
                *TGI_MODELS]
        if backend == "vllm":
            return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", cfg.model, *args]
        # The OpenAI server module itself: the `vllm` CLI reads the version of a distribution named vllm,
        # and this build's is named vllm-cpu.
        return vllm_cpu.command(["python", "-m", "vllm.entrypoints.openai.api_server", "--model",
                                 vllm_cpu.model_path(cfg.model), *args, "--dtype", "float32"])
    # `transformers serve` through this module's launcher (see `_launch_transformers_serve`); the model
    # is the positional `force_model`: loaded before the port opens and used for every request.
    command = [sys.executable, "-m", "llm_infer.serve", "serve", cfg.model, "--host", cfg.host, "--port", str(port),
               "--default-seed", str(cfg.seed), "--log-level", "warning"]
    if cfg.continuous_batching:
        command.append("--continuous-batching")
    return command


def server_env(cfg: ServeConfig, backend: str, model: str) -> dict[str, str]:
    """The server's environment: this one, quiet, offline for a local folder, and the API key (an
    environment variable, so it does not show in `ps`)."""
    env = dict(os.environ, HF_HUB_DISABLE_UPDATE_CHECK="1", TQDM_DISABLE=os.environ.get("TQDM_DISABLE", "1"))
    if Path(model).is_dir():
        env["HF_HUB_OFFLINE"] = "1"  # a local folder needs nothing from the hub; never wait on the network
    env.pop("VLLM_API_KEY", None)
    env.pop(API_KEY_ENV, None)
    if cfg.api_key:
        env["VLLM_API_KEY" if backend.startswith("vllm") else API_KEY_ENV] = cfg.api_key
    return vllm_cpu.environment(env) if backend == "vllm-cpu" else env


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(log: Path | None, lines: int = 15) -> str:
    """The log's last lines, after its earlier error lines: a failing vLLM engine prints the root cause
    first and then the API server's own traceback, which alone fills the tail."""
    if log is None or not log.is_file():
        return "(no log)"
    text = log.read_text(errors="replace").splitlines()
    causes = [line for line in text[:-lines] if re.search(r"(Error|Exception)\b", line)][:8]
    return "\n".join([*causes, "...", *text[-lines:]] if causes else text[-lines:])


class ServerExited(RuntimeError):
    """The server process ended before it answered /health."""


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when our process dies, even by SIGKILL."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM lets uvicorn (and vLLM's engine processes) shut down; the whole group is killed if it hangs."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("server %d did not stop in %.0f s; killing it", proc.pid, timeout)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout)


def _wait_ready(proc: subprocess.Popen, base_url: str, timeout: float, log: Path | None) -> None:
    """Poll /health until it answers 200; fail with the server's last log lines if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerExited(f"server exited with code {proc.returncode} before answering; its log ends:\n"
                               f"{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server did not answer {base_url}/health within {timeout:.0f} s "
                       f"(raise --startup_timeout_s); its log ends:\n{_tail(log)}")


def _start(cfg: ServeConfig, backend: str, model: str, out) -> tuple[subprocess.Popen, str]:
    port = cfg.port or free_port(cfg.host)
    command = server_command(cfg, backend, port)
    logger.info("starting %s: %s", backend, " ".join(command))
    # Own process group: Ctrl-C reaches only us (we stop the server in order) and the group can be killed. Not
    # a session of its own: without a controlling terminal, transformers serve's main thread spun at 100% of a
    # core and each reply of SmolLM2-135M took 15-30x longer (0.5 s against 17 s for the same request).
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT if out else None,
                            env=server_env(cfg, backend, model), process_group=0, preexec_fn=_die_with_parent)
    return proc, f"http://{cfg.host}:{port}"


@contextmanager
def running_server(cfg: ServeConfig, log: Path | None = None, attempts: int = 2) -> Iterator[str]:
    """Start the server, yield its base URL (http://host:port) once it answers, always stop it after.

    `log` receives the server's stdout and stderr (None = inherit this terminal). A server that exits
    before answering is started again, up to `attempts` times in all: vLLM's CPU engine start has failed
    once in a clean environment and then started, so one failed start is not taken as the answer.
    """
    model = require_model(cfg.model)
    backend = resolve_backend(cfg.backend)
    out = open(log, "w") if log is not None else None
    # SIGTERM (a killed pipeline, `kill`) would end us without running `finally`: make it an exit that does.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    proc = None
    try:
        for attempt in range(1, attempts + 1):
            proc, base_url = _start(cfg, backend, model, out)
            try:
                _wait_ready(proc, base_url, cfg.startup_timeout_s, log)
                break
            except ServerExited as e:
                if attempt == attempts:
                    raise
                logger.warning("%s (attempt %d of %d; starting it again)", e, attempt, attempts)
                if out is not None:
                    out.seek(0)
                    out.truncate()
        yield base_url
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} while serving; its log ends:\n"
                               f"{_tail(log)}")
    finally:
        if proc is not None:
            _stop(proc)
        if out is not None:
            out.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------- the load test


def completion_texts(model: str, prompts: list[str]) -> list[str]:
    """The prompts as raw text in the model's own chat format, for /v1/completions (which applies no template).

    A chat-tuned model given the bare question often ends its reply at once; the rendered turn is what
    it was trained on. The template writes BOS itself, and the server's tokenizer adds one too, so the
    template's is dropped: the server then sees exactly the training token sequence.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    texts, templated = render(tokenizer, prompts)
    bos = tokenizer.bos_token
    if templated and bos and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]:
        texts = [t.removeprefix(bos) for t in texts]
    return texts


def _request(client, model: str, kind: str, prompt: str, text: str, max_tokens: int) -> tuple[str, int]:
    """(reply text, completion tokens) of one request of `kind` through the official openai client.

    Chat requests send `prompt` as the user turn; completion requests send `text`, the rendered turn.
    """
    messages = [{"role": "user", "content": prompt}]
    if kind == "chat":
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0.0)
        return r.choices[0].message.content or "", r.usage.completion_tokens if r.usage else 0
    if kind == "completion":
        r = client.completions.create(model=model, prompt=text, max_tokens=max_tokens, temperature=0.0)
        return r.choices[0].text or "", r.usage.completion_tokens if r.usage else 0
    parts, tokens, chunks = [], 0, 0
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                            temperature=0.0, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
            chunks += 1
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return "".join(parts), tokens or chunks  # a server without usage: one chunk per token


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def _post_raw(url: str, body: bytes, api_key: str = "") -> tuple[int, object]:
    """(status, parsed JSON body or None) of a POST sent as-is, so malformed bodies reach the server."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def malformed_requests(model: str) -> list[tuple[str, str, bytes]]:
    """(name, endpoint, raw body) of requests any OpenAI-compatible server must refuse with a 4xx."""
    chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return [
        ("invalid_json", "chat/completions", b'{"model": "x", "messages": ['),
        ("missing_messages", "chat/completions", json.dumps({"model": model, "max_tokens": 4}).encode()),
        ("messages_not_a_list", "chat/completions", json.dumps({**chat, "messages": "hi"}).encode()),
        ("max_tokens_not_a_number", "chat/completions", json.dumps({**chat, "max_tokens": "lots"}).encode()),
        ("negative_max_tokens", "completions", json.dumps({"model": model, "prompt": "hi", "max_tokens": -5}).encode()),
    ]


def load_test(cfg: ServeConfig, base_url: str, prompts: list[str], texts: list[str]) -> dict[str, float]:
    """Concurrent openai-client requests, then malformed ones, then one more normal one; flat metrics.

    `prompts` are the user turns of chat requests, `texts` the same prompts rendered for completions.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from openai import OpenAI
    from tqdm.auto import tqdm

    local = threading.local()

    def one(i: int) -> tuple[float, str, int, str]:
        # One client per worker thread: load_test_clients clients, each with its own connections.
        if not hasattr(local, "client"):
            local.client = OpenAI(base_url=f"{base_url}/v1", api_key=cfg.api_key or "none", max_retries=0,
                                  timeout=cfg.request_timeout_s)
        kind = KINDS[i % len(KINDS)]
        start = time.perf_counter()
        try:
            j = i % len(prompts)
            text, tokens = _request(local.client, cfg.model, kind, prompts[j], texts[j], cfg.max_tokens)
            return time.perf_counter() - start, text, tokens, ""
        except Exception as e:  # any failure is an error to count, not a crash
            return time.perf_counter() - start, "", 0, f"{kind}: {type(e).__name__}: {e}"

    latencies, tokens, errors, empty = [], 0, [], 0
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=cfg.load_test_clients) as pool:
        futures = [pool.submit(one, i) for i in range(cfg.load_test_requests)]
        for future in tqdm(as_completed(futures), total=len(futures), desc="requests", unit="req"):
            seconds, text, n, error = future.result()
            latencies.append(seconds)
            tokens += n
            if error:
                errors.append(error)
            # A 200 with no text is the model's answer (its first token was EOS), not a server failure.
            empty += not error and not text
    wall = time.perf_counter() - start
    for error in errors[:5]:
        logger.warning("request failed: %s", error)

    bad = malformed_requests(cfg.model)
    refused = 0
    for name, endpoint, body in bad:
        status, payload = _post_raw(f"{base_url}/v1/{endpoint}", body, cfg.api_key)
        ok = 400 <= status < 500 and isinstance(payload, dict)
        refused += ok
        if not ok:
            logger.warning("malformed request %s: got HTTP %d with %s body", name, status,
                           "a JSON" if payload is not None else "a non-JSON")
    unauthorized = {}
    if cfg.api_key:  # the same normal request without the key, then with a wrong one: both must get 401
        chat = json.dumps({"model": cfg.model, "messages": [{"role": "user", "content": prompts[0]}], "max_tokens": 2})
        statuses = [_post_raw(f"{base_url}/v1/chat/completions", chat.encode(), key)[0] for key in ("", "wrong")]
        unauthorized = {"unauthorized_401": sum(s == 401 for s in statuses), "unauthorized_requests": len(statuses)}
    _, after, _, after_error = one(0)
    if after_error:
        logger.warning("server did not answer a normal request after the malformed ones: %s", after_error)
    return {
        "requests": cfg.load_test_requests, "clients": cfg.load_test_clients, "errors": len(errors),
        "empty_replies": empty, "malformed_requests": len(bad), "malformed_4xx": refused,
        "alive_after_malformed": int(not after_error), **unauthorized,
        "requests_per_s": cfg.load_test_requests / wall, "latency_p50_s": _percentile(latencies, 50),
        "latency_p95_s": _percentile(latencies, 95), "completion_tokens": tokens,
    }


def run_serve(cfg: ServeConfig) -> Path:
    require_model(cfg.model)
    if not cfg.load_test_requests:
        with running_server(cfg) as base_url:
            logger.warning("serving %s at %s/v1 (OpenAI API); Ctrl-C stops", cfg.model, base_url)
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                logger.warning("stopping")
        return Path(cfg.model)

    prompts = [row["prompt"] for row in load_prompts(cfg.data, cfg.split)]
    texts = completion_texts(cfg.model, prompts)
    with tempfile.TemporaryDirectory(prefix="llm-infer-serve-") as tmp:
        start = time.perf_counter()
        with running_server(cfg, log=Path(tmp) / "server.log") as base_url:
            startup = time.perf_counter() - start
            logger.info("server up at %s after %.1f s", base_url, startup)
            metrics = {**load_test(cfg, base_url, prompts, texts), "startup_s": startup}
    if metrics["errors"]:
        logger.warning("%d of %d requests failed", metrics["errors"], metrics["requests"])
    logger.info("%s", json.dumps(metrics))
    write_metrics(cfg.metrics, metrics)
    return Path(cfg.metrics) if cfg.metrics else Path(cfg.model)


# ----------------------------------------------------------------------------- transformers serve launcher


def request_problem(body: dict, endpoint: str) -> str:
    """What makes a chat (`endpoint='chat'`) or completion request body invalid; '' when it is fine.

    `transformers serve` reads fields without checking them, so a missing `messages` or a `max_tokens`
    that is not a number becomes an internal error (HTTP 500, plain text) instead of a 4xx.
    """
    if endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "`messages` must be a non-empty list of {role, content} objects"
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return f"`messages[{i}]` must be an object with a string `role`"
            content = message.get("content")
            if isinstance(content, list):
                if not all(isinstance(part, dict) and isinstance(part.get("type"), str) for part in content):
                    return f"`messages[{i}].content` parts must be objects with a string `type`"
            elif content is not None and not isinstance(content, str):
                return f"`messages[{i}].content` must be a string or a list of parts"
    elif not isinstance(body.get("prompt"), str) or not body["prompt"]:
        return "`prompt` must be a non-empty string"
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            return f"`{key}` must be an integer >= 1"
    for key in ("temperature", "top_p", "frequency_penalty"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"`{key}` must be a number"
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        return "`stream` must be true or false"
    return ""


def _launch_transformers_serve(argv: list[str]) -> None:
    """`transformers serve <argv>` with fixes for serving one local folder, applied before it starts.

    1. Request bodies are checked (`request_problem`): a bad one gets HTTP 400 with a JSON `detail`
       instead of a 500 from deep inside the handler.
    2. /v1/models lists the preloaded model: upstream lists only hub-cache repos, and answers 500 when
       the hub cache folder does not exist (a fresh, offline machine).
    3. TGI clients' placeholder model names (`TGI_MODELS`) mean the served model, as on a TGI server.
    4. With LLM_INFER_API_KEY set, /v1 requests need `Authorization: Bearer <key>` (401 otherwise), as
       with vLLM's `--api-key`; /health stays open for readiness probes.
    """
    import hmac

    from fastapi import HTTPException
    from fastapi.responses import JSONResponse
    from huggingface_hub.errors import CacheNotFound
    from transformers.cli import transformers as transformers_cli
    from transformers.cli.serving import server
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.model_manager import ModelManager

    forced = next((a for a in argv[1:] if not a.startswith("-")), None)  # argv = ["serve", MODEL, --flags...]
    for handler, endpoint in ((ChatCompletionHandler, "chat"), (CompletionHandler, "completion")):
        def validate(self, body, _upstream=handler._validate_request, _endpoint=endpoint):
            if forced and body.get("model") in TGI_MODELS:
                body["model"] = forced  # the handler reads the same dict after validating it
            _upstream(self, body)
            problem = request_problem(body, _endpoint)
            if problem:
                raise HTTPException(status_code=400, detail=problem)

        handler._validate_request = validate

    scan, created = ModelManager.get_gen_models, int(time.time())

    def gen_models(cache_dir: str | None = None) -> list[dict]:
        try:
            models = scan(cache_dir)
        except CacheNotFound:
            models = []
        served = [{"id": forced, "object": "model", "created": created, "owned_by": "local"}] if forced else []
        return served + [m for m in models if m["id"] != forced]

    ModelManager.get_gen_models = staticmethod(gen_models)

    key = os.environ.get(API_KEY_ENV, "")
    if key:
        build = server.build_server

        def build_with_key(*args, **kwargs):
            app = build(*args, **kwargs)

            @app.middleware("http")
            async def require_key(request, call_next):
                given = request.headers.get("authorization", "")
                if request.url.path.startswith("/v1") and not hmac.compare_digest(given, f"Bearer {key}"):
                    return JSONResponse({"error": "Unauthorized: send Authorization: Bearer <api key>"}, 401)
                return await call_next(request)

            return app

        server.build_server = build_with_key
    sys.argv = ["transformers", *argv]
    transformers_cli.main()


if __name__ == "__main__":
    _launch_transformers_serve(sys.argv[1:])
