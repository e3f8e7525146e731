"""Drives the official Python clients against the proxy over HTTPS.

Run by native-target/tests/tls.rs with PROXY_URL, TOKEN and SSL_CERT_FILE
(the test CA) set; prints one line per check and exits non-zero on the
first failure.
"""

import os
import sys

import anthropic
import ollama
import openai

url = os.environ["PROXY_URL"]
token = os.environ["TOKEN"]


def check(name, ok, detail=""):
    print(f"{'ok' if ok else 'FAILED'} {name} {detail}".rstrip())
    if not ok:
        sys.exit(1)


client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0)
reply = client.chat.completions.create(
    model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}]
)
check("openai chat", reply.choices[0].message.content == "Hello from the mock.")
pieces = [
    chunk.choices[0].delta.content
    for chunk in client.chat.completions.create(
        model="llama3.2:1b",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
    )
    if chunk.choices
]
check("openai stream", "".join(pieces) == "tok0 tok1 tok2 ", repr(pieces))
models = [m.id for m in client.models.list()]
check("openai models", "qwen3:8b" in models, repr(models))

local = ollama.Client(host=url, headers={"Authorization": f"Bearer {token}"})
names = [m.model for m in local.list().models]
check("ollama list", "llama3.2:1b" in names, repr(names))
parts = [
    part.message.content
    for part in local.chat(
        model="llama3.2:1b",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
    )
]
check("ollama stream", "".join(parts) == "tok0 tok1 tok2 ", repr(parts))

# Anthropic's SDK, as Claude Code uses it (ANTHROPIC_BASE_URL and
# ANTHROPIC_AUTH_TOKEN: the token goes in `Authorization: Bearer`).
claude = anthropic.Anthropic(base_url=url, auth_token=token, max_retries=0)
asked = {"model": "llama3.2:1b", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
message = claude.messages.create(**asked)
check("anthropic message", message.content[0].text == "Hello from the mock.", repr(message))
with claude.messages.stream(**asked) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
check("anthropic stream", text == "tok0 tok1 tok2 ", repr(text))
check("anthropic stream usage", final.usage.output_tokens == 3, repr(final.usage))
# The API key alone (ANTHROPIC_API_KEY: the token goes in `x-api-key`).
keyed = anthropic.Anthropic(base_url=url, api_key=token, max_retries=0)
message = keyed.messages.create(**asked)
check("anthropic api key", message.content[0].text == "Hello from the mock.", repr(message))
# Ollama gone mid-answer: the SDK raises, the answer is not taken as whole.
try:
    with claude.messages.stream(**asked, extra_query={"cut": "1", "delay_ms": "10"}) as stream:
        text = "".join(stream.text_stream)
    check("anthropic broken stream raises", False, repr(text))
except anthropic.APIStatusError as error:
    check("anthropic broken stream raises", "broke off" in str(error), repr(error))

# Not trusting the proxy's certificate: no connection.
os.environ.pop("SSL_CERT_FILE", None)
try:
    openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0).models.list()
    check("untrusted certificate refused", False)
except openai.APIConnectionError:
    check("untrusted certificate refused", True)
