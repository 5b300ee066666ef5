"""The official openai client against `ruprompts serve` (tests/serve/serve.rs starts the server and runs this).

Usage: openai_check.py BASE_URL API_KEY BASE_MODEL. Every call goes through the client's own parsing; any
assertion that fails exits non-zero with its message.
"""
import sys

import openai

base_url, api_key, base_model = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

models = [m.id for m in client.models.list()]
assert models == [base_model, "short", "qa"], models

# One text, greedy: the usage counts the prompt's tokens (3 prompt tokens among them) and the new ones.
r = client.completions.create(model="short", prompt="Кот сидит на окне", max_tokens=6, temperature=0)
assert r.object == "text_completion" and len(r.choices) == 1, r
assert r.choices[0].finish_reason in ("length", "stop"), r
assert r.usage.completion_tokens <= 6 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
greedy = r.choices[0].text

# A list of prompts with n > 1, seeded sampling: choices in order, and the same seed gives the same texts.
kwargs = dict(model=base_model, prompt=["Кот", "Привет, как"], n=2, max_tokens=5, temperature=0.9, seed=7)
r1, r2 = client.completions.create(**kwargs), client.completions.create(**kwargs)
assert [c.index for c in r1.choices] == [0, 1, 2, 3], r1
assert [c.text for c in r1.choices] == [c.text for c in r2.choices]

# logprobs and echo: one entry per token, the prompt's first token without a log-probability.
r = client.completions.create(model=base_model, prompt="Кот сидит", max_tokens=3, temperature=0, logprobs=2, echo=True)
c = r.choices[0]
assert c.text.startswith("Кот сидит"), c.text
lp = c.logprobs
assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:]), lp.token_logprobs
assert all(2 <= len(top) <= 3 for top in lp.top_logprobs[1:]), lp.top_logprobs
assert "".join(lp.tokens).startswith("Кот сидит")

# max_tokens 0 with echo: the prompt's log-likelihood only (what evaluation harnesses ask for).
r = client.completions.create(model="short", prompt="Кот сидит", max_tokens=0, temperature=0, logprobs=1, echo=True)
assert r.choices[0].text == "Кот сидит" and r.usage.completion_tokens == 0, r
assert r.choices[0].logprobs.token_logprobs[0] is not None, "after the prompt's tokens, the text's first has one"

# A format with two fields: one in `fields`, the prompt fills the other.
r = client.completions.create(
    model="qa", prompt="Где живут пингвины?", max_tokens=4, temperature=0,
    extra_body={"fields": {"context": "Пингвины живут в Антарктиде."}},
)
assert r.choices[0].finish_reason in ("length", "stop")
# Echo gives back the request's own tokens, not the format's text and prompt tokens around them.
r = client.completions.create(
    model="qa", prompt="Где живут пингвины?", max_tokens=0, temperature=0, logprobs=1, echo=True,
    extra_body={"fields": {"context": "Пингвины живут в Антарктиде."}},
)
lp = r.choices[0].logprobs
assert "".join(lp.tokens).strip() == "Где живут пингвины?", lp.tokens
assert len(lp.tokens) == len(lp.token_logprobs) and all(x is not None for x in lp.token_logprobs), lp

# Beam search and penalties as extra fields.
r = client.completions.create(
    model="short", prompt="Кот", max_tokens=4, temperature=0, n=2,
    extra_body={"num_beams": 3, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2},
)
assert len(r.choices) == 2, r

# Streaming: the chunks add up to the text the same request gets whole, and the usage comes last.
chunks = list(client.completions.create(
    model="short", prompt="Кот сидит на окне", max_tokens=6, temperature=0, stream=True,
    stream_options={"include_usage": True},
))
text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
assert text == greedy, (text, greedy)
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 6
assert any(ch.choices and ch.choices[0].finish_reason for ch in chunks)

# Errors come back as the client's exceptions, with the server's messages.
try:
    client.completions.create(model="nope", prompt="x", max_tokens=1)
    raise AssertionError("an unknown model was served")
except openai.NotFoundError as e:
    assert "short" in str(e), e
try:
    client.completions.create(model="short", prompt="x", max_tokens=100000)
    raise AssertionError("max_tokens past the window was taken")
except openai.BadRequestError as e:
    assert "maximum context length" in str(e), e
try:
    openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
    raise AssertionError("a wrong key was let in")
except openai.AuthenticationError:
    pass
print("openai client: every check passed")
