"""`llm-infer serve`: transformers serve on a free loopback port, driven with the official openai client.

One server (the tiny model) is started for the module; the load test starts and stops its own.
"""

import json
import sys
from importlib.util import find_spec

import pytest
import torch
from llm_infer import serve, vllm_cpu
from llm_infer.cli import main
from llm_infer.serve import ServeConfig, malformed_requests, request_problem, run_serve, running_server

MAX_TOKENS = 8


@pytest.fixture(scope="module")
def server(chat_model, tmp_path_factory):
    """(model id, base URL) of a running `transformers serve` with the model preloaded."""
    cfg = ServeConfig(model=chat_model, port=0)
    with running_server(cfg, log=tmp_path_factory.mktemp("serve") / "server.log") as base_url:
        yield cfg.model, base_url


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server[1]}/v1", api_key="none", max_retries=0, timeout=60)


def _greedy(model_dir: str, prompt: str) -> str:
    """The reply transformers' own greedy `generate` gives to `prompt` as one chat turn."""
    import torch
    from llm_infer.runtime import encode, load_model

    model, tokenizer = load_model(model_dir, device="cpu")
    batch = encode(tokenizer, [prompt], "cpu")
    with torch.no_grad():
        ids = model.generate(**batch, max_new_tokens=MAX_TOKENS, do_sample=False)
    return tokenizer.decode(ids[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def _chat(client, model, prompt, **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                          max_tokens=MAX_TOKENS, temperature=0.0, **kwargs)


def test_chat_completion_is_the_models_greedy_reply(server, client):
    model, _ = server
    reply = _chat(client, model, "What is 2 + 3?")
    text = reply.choices[0].message.content
    assert text and text == _greedy(model, "What is 2 + 3?")
    assert 1 <= reply.usage.completion_tokens <= MAX_TOKENS
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_completion_returns_text(server, client):
    model, _ = server
    reply = client.completions.create(model=model, prompt="What is 2 + 3?", max_tokens=MAX_TOKENS, temperature=0.0)
    assert reply.object == "text_completion"
    assert isinstance(reply.choices[0].text, str) and reply.choices[0].text
    assert 1 <= reply.usage.completion_tokens <= MAX_TOKENS


def test_streamed_chat_yields_chunks_that_add_up(server, client):
    model, _ = server
    chunks = list(_chat(client, model, "Reverse: a b c", stream=True))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 2
    whole = _chat(client, model, "Reverse: a b c").choices[0].message.content
    # A random model can stop in the middle of a multi-byte character (byte-level BPE). The streamer holds
    # such a tail back, waiting for bytes that never come; the one-shot decode shows it as U+FFFD.
    assert "".join(deltas) == whole.rstrip("\ufffd")
    assert chunks[-1].usage.completion_tokens >= len(deltas)


def test_models_lists_the_served_folder(server, client):
    model, _ = server
    assert model in [m.id for m in client.models.list().data]


def test_malformed_requests_get_4xx_json_and_server_keeps_serving(server, client):
    from llm_infer.serve import _post_raw

    model, base_url = server
    for name, endpoint, body in malformed_requests(model):
        status, payload = _post_raw(f"{base_url}/v1/{endpoint}", body)
        assert 400 <= status < 500, (name, status)
        assert isinstance(payload, dict) and payload.get("detail"), (name, payload)
    assert _chat(client, model, "What is 2 + 3?").choices[0].message.content


def test_a_tgi_messages_api_client_works_unchanged(server, client, monkeypatch):
    """huggingface_hub's InferenceClient pointed at a TGI server posts to /v1/chat/completions with a
    placeholder model name (and a bearer token): the same reply as the openai client's."""
    from huggingface_hub import InferenceClient, constants

    # The suite runs with HF_HUB_OFFLINE=1 (read once at import), under which huggingface_hub refuses
    # every URL, even loopback.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    model, base_url = server
    tgi = InferenceClient(base_url=f"{base_url}/v1", api_key="-")
    reply = tgi.chat_completion(messages=[{"role": "user", "content": "What is 2 + 3?"}], max_tokens=MAX_TOKENS,
                                temperature=0.0)
    assert reply.choices[0].message.content == _chat(client, model, "What is 2 + 3?").choices[0].message.content


def test_request_problem_names_the_bad_field():
    ok = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
    assert request_problem(ok, "chat") == ""
    assert "messages" in request_problem({}, "chat")
    assert "messages[0]" in request_problem({"messages": [{"content": "hi"}]}, "chat")
    assert "max_tokens" in request_problem({**ok, "max_tokens": "4"}, "chat")
    assert "max_tokens" in request_problem({**ok, "max_tokens": True}, "chat")
    assert "temperature" in request_problem({**ok, "temperature": "hot"}, "chat")
    assert "prompt" in request_problem({"prompt": ""}, "completion")
    assert request_problem({"prompt": "hi", "max_tokens": 2}, "completion") == ""


def test_load_test_writes_metrics_without_errors(chat_model, sft_data, tmp_path):
    """With an API key: every keyed request answers, requests without it or with a wrong one get 401."""
    out = tmp_path / "serve.json"
    cfg = ServeConfig(model=chat_model, data=sft_data, port=0, load_test_requests=8, load_test_clients=4,
                      max_tokens=MAX_TOKENS, metrics=str(out), api_key="s3cret")
    assert run_serve(cfg) == out
    m = json.loads(out.read_text())
    assert (m["requests"], m["clients"], m["errors"]) == (8, 4, 0)
    assert m["malformed_4xx"] == m["malformed_requests"] == len(malformed_requests(chat_model))
    assert m["alive_after_malformed"] == 1
    assert m["unauthorized_401"] == m["unauthorized_requests"] == 2
    assert m["requests_per_s"] > 0 and 0 < m["latency_p50_s"] <= m["latency_p95_s"]
    assert 8 <= m["completion_tokens"] <= 8 * MAX_TOKENS
    assert m["startup_s"] > 0


def test_startup_timeout_fails_clearly_and_stops_the_server(tiny_model, monkeypatch):
    started = []
    popen = serve.subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(serve.subprocess, "Popen", recording_popen)
    with pytest.raises(RuntimeError, match="did not answer"):
        with running_server(ServeConfig(model=tiny_model, port=0, startup_timeout_s=0.5)):
            pass
    assert len(started) == 1 and started[0].poll() is not None


def test_a_server_that_dies_at_start_is_started_once_more(tiny_model, monkeypatch, tmp_path):
    """The first start crashes (as vLLM's engine once did); the second answers. Both crashing fails with the
    root-cause line that precedes the long traceback in the log."""
    commands = []
    real = serve.server_command

    def crashing_first(cfg, backend, port):
        commands.append(port)
        if len(commands) == 1:
            return [sys.executable, "-c", "import sys; print('ValueError: the root cause'); "
                    "print('\\n'.join(['traceback line'] * 30)); sys.exit(3)"]
        return real(cfg, backend, port)

    monkeypatch.setattr(serve, "server_command", crashing_first)
    log = tmp_path / "server.log"
    with running_server(ServeConfig(model=tiny_model, port=0), log=log) as base_url:
        import urllib.request

        with urllib.request.urlopen(f"{base_url}/health", timeout=5) as r:
            assert r.status == 200
    assert len(commands) == 2 and "root cause" not in log.read_text()

    commands.clear()
    with pytest.raises(serve.ServerExited, match="code 3 before answering(.|\n)*ValueError: the root cause"):
        with running_server(ServeConfig(model=tiny_model, port=0), log=log, attempts=1):
            pass


def test_server_commands():
    cfg = ServeConfig(model="models/m", port=9000, seed=3, continuous_batching=True)
    vllm = serve.server_command(cfg, "vllm", 9000)
    assert vllm[:5] == [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", "models/m"]
    assert vllm[vllm.index("--port") + 1] == "9000" and vllm[vllm.index("--host") + 1] == "127.0.0.1"
    assert vllm[vllm.index("--served-model-name") + 1] == "models/m" and "--seed" in vllm
    names = vllm[vllm.index("--served-model-name") + 1:]
    assert names[: 1 + len(serve.TGI_MODELS)] == ["models/m", *serve.TGI_MODELS]
    hf = serve.server_command(cfg, "transformers", 9000)
    assert hf[1:5] == ["-m", "llm_infer.serve", "serve", "models/m"] and "--continuous-batching" in hf
    # vllm-cpu: vLLM's OpenAI server module in its own locked environment, on the folder's absolute path.
    cpu = serve.server_command(cfg, "vllm-cpu", 9000)
    assert cpu[1:4] == ["run", "--project", str(vllm_cpu.ENV_PROJECT)] and "--locked" in cpu
    assert cpu[cpu.index("python"):cpu.index("python") + 3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert cpu[cpu.index("--model") + 1] == vllm_cpu.model_path("models/m")
    assert cpu[cpu.index("--served-model-name") + 1] == "models/m" and cpu[cpu.index("--dtype") + 1] == "float32"


def test_vllm_backend_without_cuda_is_vllm_cpu(monkeypatch, tiny_model):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert serve.resolve_backend("vllm") == "vllm-cpu"
    assert serve.resolve_backend("auto") == "transformers"  # vLLM on a CPU only when asked for
    env = serve.server_env(ServeConfig(model=tiny_model, api_key="k"), "vllm-cpu", tiny_model)
    assert env["UV_PROJECT_ENVIRONMENT"] == str(vllm_cpu.environment_dir()) and env["VLLM_API_KEY"] == "k"
    assert "VIRTUAL_ENV" not in env and env["VLLM_CPU_KVCACHE_SPACE"] == vllm_cpu.KV_CACHE_GIB
    # the compile cache that loads (vLLM 0.32's ahead-of-time one fails to), unless the user chose otherwise
    assert env["VLLM_USE_AOT_COMPILE"] == "0"
    assert vllm_cpu.environment({"VLLM_USE_AOT_COMPILE": "1"})["VLLM_USE_AOT_COMPILE"] == "1"


def test_api_key_goes_to_the_server_by_environment(tiny_model, monkeypatch, caplog):
    monkeypatch.delenv(serve.API_KEY_ENV, raising=False)
    keyed = ServeConfig(model=tiny_model, api_key="k1")
    assert serve.server_env(keyed, "vllm", tiny_model)["VLLM_API_KEY"] == "k1"
    env = serve.server_env(keyed, "transformers", tiny_model)
    assert env[serve.API_KEY_ENV] == "k1" and "VLLM_API_KEY" not in env
    assert "k1" not in serve.server_command(keyed, "vllm", 9000) + serve.server_command(keyed, "transformers", 9000)
    assert serve.API_KEY_ENV not in serve.server_env(ServeConfig(model=tiny_model), "transformers", tiny_model)
    monkeypatch.setenv(serve.API_KEY_ENV, "from-env")
    assert ServeConfig(model=tiny_model).api_key == "from-env"


def test_binding_beyond_loopback_without_a_key_warns(tiny_model, monkeypatch, caplog):
    monkeypatch.delenv(serve.API_KEY_ENV, raising=False)
    with caplog.at_level("WARNING", logger="llm_infer.serve"):
        ServeConfig(model=tiny_model)
        ServeConfig(model=tiny_model, host="0.0.0.0", api_key="k")
        assert not caplog.records
        ServeConfig(model=tiny_model, host="0.0.0.0")
    assert len(caplog.records) == 1 and "without an API key" in caplog.records[0].getMessage()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="vllm serve needs a CUDA GPU")
def test_vllm_load_test_on_gpu(chat_model, sft_data, tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "serve.json"
    run_serve(ServeConfig(model=chat_model, backend="vllm", data=sft_data, port=0, load_test_requests=8,
                          load_test_clients=4, max_tokens=MAX_TOKENS, metrics=str(out)))
    m = json.loads(out.read_text())
    assert m["errors"] == 0 and m["malformed_4xx"] == m["malformed_requests"] and m["alive_after_malformed"] == 1


@pytest.mark.skipif(find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_on_cuda_without_vllm_exits_2(sft_data, tiny_model, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(["serve", "--model", tiny_model, "--backend", "vllm", "--data", sft_data,
                 "--load_test_requests", "4"]) == 2
    assert "vllm is not installed" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--model", "/nonexistent/model"], "/nonexistent/model"),
    (["--backend", "tgi"], "backend"),
    (["--load_test_clients", "0"], "load_test_clients"),
    (["--port", "70000"], "port"),
])
def test_bad_input_exits_2(flags, message, sft_data, capsys):
    assert main(["serve", "--data", sft_data, "--load_test_requests", "4", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
