"""Drives a running `mlx-models serve` with the official `openai` client (and raw HTTP for the
requests no client would send): python openai_client.py CHECK BASE_URL API_KEY EXPECTED.json

EXPECTED holds what `mlx-models generate` prints for the same prompts (greedy): the chat
answer and the plain completion. Each check raises on the first mismatch; the last line of
output is a JSON summary that the Rust test reads.
"""
import json
import sys
import threading
import time

import httpx
import openai

CHECK, BASE, KEY, EXPECTED_PATH = sys.argv[1:5]
EXPECTED = json.loads(open(EXPECTED_PATH).read()) if EXPECTED_PATH != "-" else {}
client = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0, timeout=600)
MODEL = None
summary = {}


def model():
    global MODEL
    if MODEL is None:
        MODEL = client.models.list().data[0].id
    return MODEL


def chat(messages, **kw):
    return client.chat.completions.create(model=model(), messages=messages, **kw)


def user(text):
    return [{"role": "user", "content": text}]


def streamed_chat(messages, **kw):
    """The concatenated deltas, the finish reason, the usage chunk, and every chunk's text."""
    text, finish, usage, pieces = "", None, None, []
    for chunk in chat(messages, stream=True, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            piece = choice.delta.content or ""
            text += piece
            pieces.append(piece)
            finish = choice.finish_reason or finish
    return text, finish, usage, pieces


def api_checks():
    assert model() == EXPECTED["model"], model()
    # Chat, as `mlx-models generate` answers the same prompt.
    r = chat(user(EXPECTED["chat_prompt"]), max_tokens=EXPECTED["max_tokens"], temperature=0)
    answer = r.choices[0].message.content
    assert answer.strip() == EXPECTED["chat"].strip(), (answer, EXPECTED["chat"])
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # Streaming gives the same text, then the usage.
    text, finish, usage, _ = streamed_chat(
        user(EXPECTED["chat_prompt"]), max_tokens=EXPECTED["max_tokens"],
        stream_options={"include_usage": True})
    assert text == answer, (text, answer)
    assert finish == r.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == r.usage.completion_tokens
    summary["chat"] = answer

    # Text completions, streamed and not.
    c = client.completions.create(model=model(), prompt=EXPECTED["completion_prompt"],
                                  max_tokens=EXPECTED["max_tokens"], temperature=0)
    assert c.choices[0].text == EXPECTED["completion"], (c.choices[0].text, EXPECTED["completion"])
    streamed = "".join(ch.choices[0].text for ch in client.completions.create(
        model=model(), prompt=EXPECTED["completion_prompt"], max_tokens=EXPECTED["max_tokens"],
        stream=True) if ch.choices)
    assert streamed == c.choices[0].text, (streamed, c.choices[0].text)

    # A stop string inside the answer: cut before it, never streamed past.
    words = answer.split()
    stop = " " + words[len(words) // 2]
    cut = answer[: answer.index(stop)]
    r = chat(user(EXPECTED["chat_prompt"]), max_tokens=EXPECTED["max_tokens"], stop=[stop])
    assert r.choices[0].message.content == cut, (r.choices[0].message.content, cut)
    assert r.choices[0].finish_reason == "stop"
    text, finish, _, pieces = streamed_chat(user(EXPECTED["chat_prompt"]),
                                            max_tokens=EXPECTED["max_tokens"], stop=stop)
    assert text == cut and finish == "stop", (text, finish)
    assert all(stop.strip() not in p for p in pieces), pieces
    summary["stop"] = stop

    # Log-probabilities: one entry per token, greedy picks the first of the top ones.
    r = chat(user(EXPECTED["chat_prompt"]), max_tokens=6, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens, (len(content), r.usage)
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token
        assert abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-5
        assert entry.logprob <= 0
    c = client.completions.create(model=model(), prompt=EXPECTED["completion_prompt"],
                                  max_tokens=4, logprobs=2)
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4

    # A tool-call round trip: the model answers with a call, the result goes back.
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    shots = [{"role": "system", "content": "You call tools. Answer every question with one "
                                           "tool call in <tool_call></tool_call> tags."}]
    for city in ("Paris", "Rome"):
        shots.append({"role": "user", "content": f"What is the weather in {city}?"})
        shots.append({"role": "assistant", "content": "<tool_call>\n" + json.dumps(
            {"name": "get_weather", "arguments": {"city": city}}) + "\n</tool_call>"})
    messages = shots + [{"role": "user", "content": "What is the weather in Berlin?"}]
    r = chat(messages, tools=tools, max_tokens=40)
    assert r.choices[0].finish_reason == "tool_calls", r
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args, dict) and "city" in args, args
    # Streamed, the same call arrives as a delta.
    calls = []
    for chunk in chat(messages, tools=tools, max_tokens=40, stream=True):
        for choice in chunk.choices:
            calls.extend(choice.delta.tool_calls or [])
    assert [c.function.name for c in calls] == ["get_weather"], calls
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function",
         "function": {"name": call.function.name, "arguments": call.function.arguments}}]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"})
    r = chat(messages, tools=tools, max_tokens=8)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    summary["tool_call"] = {"name": call.function.name, "arguments": args}


def single(prompt, n):
    return chat(user(prompt), max_tokens=n, temperature=0).choices[0].message.content


def load_checks():
    """16 concurrent streaming clients x 4 requests each; every answer equals its prompt's
    single-request answer."""
    prompts = [f"Name a color and a number ({i})." for i in range(8)] + [
        "What is the capital of Italy?", "Count to five.", "Say hello in French.",
        "What is two plus two?", "Name a fruit.", "What day comes after Monday?",
        "Name an ocean.", "Give me a short greeting."]
    n = EXPECTED["max_tokens"]
    alone = {p: single(p, n) for p in prompts}
    results, errors = [], []

    def worker(w):
        try:
            for k in range(4):
                p = prompts[(w + 5 * k) % len(prompts)]
                text, finish, usage, _ = streamed_chat(
                    user(p), max_tokens=n, stream_options={"include_usage": True})
                results.append((p, text, finish, usage.completion_tokens))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(repr(e))

    started = time.time()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 64, len(results)
    wrong = [(p, text, alone[p]) for p, text, _, _ in results if text != alone[p]]
    assert not wrong, wrong[:3]
    summary["load"] = {"requests": len(results), "seconds": round(time.time() - started, 1),
                       "tokens": sum(r[3] for r in results)}


def raw(method, path, body=None, headers=None, raw_body=None):
    h = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    h.update(headers or {})
    content = raw_body if raw_body is not None else (json.dumps(body) if body is not None else None)
    return httpx.request(method, BASE + path, content=content, headers=h, timeout=120)


def bad_request_checks():
    def refused(status, r, code=None):
        assert r.status_code == status, (status, r.status_code, r.text)
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["message"] and "\n" not in err["message"]
        if code:
            assert err["code"] == code, err
        return err["message"]

    msgs = [{"role": "user", "content": "hi"}]
    chat_path = "/v1/chat/completions"
    refused(400, raw("POST", chat_path, raw_body="{not json"))
    refused(400, raw("POST", chat_path, raw_body="[1, 2]"))
    refused(400, raw("POST", chat_path, {"messages": msgs, "max_tokens": "many"}))
    refused(400, raw("POST", chat_path, {"messages": msgs, "max_tokens": 0}))
    refused(400, raw("POST", chat_path, {"messages": msgs, "n": 2}))
    refused(400, raw("POST", chat_path, {"messages": msgs, "temperature": -1}))
    refused(400, raw("POST", chat_path, {"messages": []}))
    refused(400, raw("POST", chat_path, {"messages": [{"role": "wizard", "content": "x"}]}))
    refused(400, raw("POST", chat_path, {"messages": msgs, "top_logprobs": 50, "logprobs": True}))
    refused(400, raw("POST", chat_path, {"messages": msgs, "logit_bias": {"abc": 1}}))
    refused(404, raw("POST", chat_path, {"messages": msgs, "model": "gpt-17"}), "model_not_found")
    refused(400, raw("POST", "/v1/completions", {"prompt": [1] * 9000, "max_tokens": 4}),
            "context_length_exceeded")
    refused(400, raw("POST", "/v1/completions", {"prompt": [10 ** 9], "max_tokens": 4}))
    refused(401, raw("POST", chat_path, {"messages": msgs}, headers={"Authorization": "Bearer no"}))
    refused(401, httpx.get(BASE + "/v1/models"))
    refused(413, raw("POST", chat_path, raw_body="{" + " " * (5 << 20) + "}"))
    refused(404, raw("GET", "/v1/nothing"))
    refused(405, raw("GET", chat_path))
    assert httpx.get(BASE + "/health").json() == {"status": "ok"}

    # A client that goes away mid-stream: the server carries on.
    with httpx.stream("POST", BASE + chat_path, headers={"Authorization": f"Bearer {KEY}"},
                      json={"messages": msgs, "max_tokens": 2000, "stream": True},
                      timeout=120) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
    r = chat(msgs, max_tokens=3)
    assert r.choices[0].message.content is not None
    summary["bad_requests"] = "ok"


def overload_checks():
    """One slot and no queue: a second request while the first runs gets 503 and Retry-After;
    a client that disconnects frees the slot for the next one."""
    msgs = [{"role": "user", "content": "Tell me a long story about a dragon."}]
    first = httpx.stream("POST", BASE + "/v1/chat/completions",
                         headers={"Authorization": f"Bearer {KEY}"},
                         json={"messages": msgs, "max_tokens": 2000, "stream": True}, timeout=120)
    with first as r:
        lines = r.iter_lines()
        next(lines)
        second = raw("POST", "/v1/chat/completions", {"messages": msgs, "max_tokens": 2})
        assert second.status_code == 503, (second.status_code, second.text)
        assert second.headers.get("retry-after") == "1"
        assert second.json()["error"]["type"] == "server_overloaded"
    # The first client is gone: its slot is free within a few steps.
    for _ in range(100):
        r = raw("POST", "/v1/chat/completions", {"messages": msgs, "max_tokens": 2})
        if r.status_code == 200:
            break
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    summary["overload"] = "ok"


{"api": api_checks, "load": load_checks, "bad": bad_request_checks,
 "overload": overload_checks}[CHECK]()
print(json.dumps(summary))
