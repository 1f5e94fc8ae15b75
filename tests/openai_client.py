"""The official openai SDK against a running `gembatch serve` (URL as the only argument):
completions and chat, streaming and not, usage, several choices with log-probabilities, and
an error mapped to the SDK's type."""
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0)
model = client.models.list().data[0].id

whole = client.completions.create(model=model, prompt="The capital of France is",
                                  max_tokens=12, temperature=0)
assert whole.object == "text_completion", whole
assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens == 6, whole.usage
streamed = list(client.completions.create(model=model, prompt="The capital of France is",
                                          max_tokens=12, temperature=0, stream=True,
                                          stream_options={"include_usage": True}))
text = "".join(chunk.choices[0].text for chunk in streamed if chunk.choices)
assert text == whole.choices[0].text, (text, whole.choices[0].text)
assert streamed[-1].usage.completion_tokens == whole.usage.completion_tokens, streamed[-1]
assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == whole.choices[0].finish_reason

messages = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Name a primary colour."}]
chat = client.chat.completions.create(model=model, messages=messages, max_tokens=16,
                                      temperature=0, seed=3)
assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content, chat
chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=16,
                                             temperature=0, seed=3, stream=True))
assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
streamed_chat = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert streamed_chat == chat.choices[0].message.content, (streamed_chat, chat)

sampled = [client.completions.create(model=model, prompt="Once upon a time", max_tokens=10,
                                     temperature=0.9, seed=42).choices[0].text for _ in range(2)]
assert sampled[0] == sampled[1], sampled

several = client.chat.completions.create(model=model, messages=messages, max_tokens=6, n=2,
                                         temperature=0.8, seed=5, logprobs=True, top_logprobs=2)
assert [c.index for c in several.choices] == [0, 1], several
for choice in several.choices:
    entries = choice.logprobs.content
    assert bytes(b for e in entries for b in e.bytes).decode() == choice.message.content, choice
    assert all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in entries), entries
assert several.usage.completion_tokens == sum(len(c.logprobs.content) for c in several.choices)
legacy = client.completions.create(model=model, prompt="The capital of France is", max_tokens=4,
                                   temperature=0, logprobs=1)
assert "".join(legacy.choices[0].logprobs.tokens) == legacy.choices[0].text, legacy
assert len(legacy.choices[0].logprobs.top_logprobs) == legacy.usage.completion_tokens, legacy

try:
    client.completions.create(model=model, prompt="hi", max_tokens=0)
    raise AssertionError("max_tokens=0 was accepted")
except openai.BadRequestError as err:
    assert err.body["param"] == "max_tokens", err.body

print("all openai SDK checks passed")
