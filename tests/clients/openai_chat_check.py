"""The official openai client's chat API against `ruprompts serve` (tests/serve/serve.rs and tests/model/real_model.rs start the
server and run this).

Usage: openai_chat_check.py BASE_URL BASE_MODEL [PROMPT_KEY] [EXPECTED]. Every call goes through the client's own
parsing; any assertion that fails exits non-zero with its message. With EXPECTED, the greedy answer to "What is the
capital of France?" must contain it (a real model answers).
"""
import sys

import openai

base_url, base_model = sys.argv[1:3]
prompt_key = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
expected = sys.argv[4] if len(sys.argv) > 4 else None
client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)
question = [{"role": "user", "content": "What is the capital of France?"}]

# Greedy: one choice, the assistant's message, a finish reason, usage that adds up.
r = client.chat.completions.create(model=base_model, messages=question, max_tokens=12, temperature=0)
assert r.object == "chat.completion" and len(r.choices) == 1, r
message = r.choices[0].message
assert message.role == "assistant" and isinstance(message.content, str), message
assert r.choices[0].finish_reason in ("length", "stop"), r
assert r.usage.completion_tokens <= 12 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
greedy = message.content
if expected:
    assert expected in greedy, (expected, greedy)

# A system turn and an earlier exchange; max_completion_tokens is the chat API's name for the limit.
r = client.chat.completions.create(
    model=base_model, max_completion_tokens=4, temperature=0,
    messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a colour."}],
)
assert r.usage.completion_tokens <= 4, r.usage

# n > 1 with seeded sampling: choices in order, and the same seed gives the same texts.
kwargs = dict(model=base_model, messages=question, n=3, max_tokens=6, temperature=0.9, seed=11)
r1, r2 = client.chat.completions.create(**kwargs), client.chat.completions.create(**kwargs)
assert [c.index for c in r1.choices] == [0, 1, 2], r1
assert [c.message.content for c in r1.choices] == [c.message.content for c in r2.choices]

# logprobs: one entry per generated token, with its bytes and the asked-for alternatives, best first.
r = client.chat.completions.create(model=base_model, messages=question, max_tokens=5, temperature=0, logprobs=True,
                                   top_logprobs=3)
content = r.choices[0].logprobs.content
assert len(content) == r.usage.completion_tokens, (content, r.usage)
for entry in content:
    assert entry.logprob <= 0 and bytes(entry.bytes).decode("utf-8", "replace") is not None, entry
    assert len(entry.top_logprobs) == 3, entry
    tops = [t.logprob for t in entry.top_logprobs]
    assert tops == sorted(tops, reverse=True) and entry.logprob <= tops[0] + 1e-6, entry

# A stop string ends the reply before it.
r = client.chat.completions.create(model=base_model, messages=question, max_tokens=12, temperature=0,
                                   stop=[greedy[3:6]] if len(greedy) >= 6 else None)
if len(greedy) >= 6:
    assert r.choices[0].message.content == greedy[:greedy.index(greedy[3:6])], (r.choices[0].message, greedy)
    assert r.choices[0].finish_reason == "stop", r

# Streaming: the deltas add up to the reply the same request gets whole, and the usage comes last.
chunks = list(client.chat.completions.create(model=base_model, messages=question, max_tokens=12, temperature=0,
                                             stream=True, stream_options={"include_usage": True}))
assert all(ch.object == "chat.completion.chunk" for ch in chunks), chunks[0]
text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
assert text == greedy, (text, greedy)
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 12
assert any(ch.choices and ch.choices[0].finish_reason for ch in chunks)

# A tuned prompt as the model: the last user message fills its format.
if prompt_key:
    r = client.chat.completions.create(model=prompt_key, messages=question, max_tokens=6, temperature=0)
    assert r.choices[0].message.role == "assistant" and r.usage.prompt_tokens > 0, r

# Errors come back as the client's exceptions, with the server's messages.
try:
    client.chat.completions.create(model=base_model, messages=[], max_tokens=1)
    raise AssertionError("an empty conversation was answered")
except openai.BadRequestError as e:
    assert "messages" in str(e), e
try:
    client.chat.completions.create(model=base_model, messages=[{"role": "wizard", "content": "x"}], max_tokens=1)
    raise AssertionError("an unknown role was answered")
except openai.BadRequestError as e:
    assert "role" in str(e), e
print("every chat check passed")
