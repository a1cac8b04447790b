"""The official `openai` Python SDK pointed at Jimini through base_url, nothing else changed."""
import json
import random
import string

import openai
import pytest
from openai import OpenAI


def client(stack) -> OpenAI:
    return OpenAI(base_url=stack.base_url, api_key="sk-test-caller-key", max_retries=0)


def rand_email() -> str:
    user = "".join(random.choices(string.ascii_lowercase, k=random.randint(3, 10)))
    dom = "".join(random.choices(string.ascii_lowercase, k=random.randint(3, 8)))
    return f"{user}.{random.randint(1, 99)}@{dom}.example.com"


def luhn_card() -> str:
    digits = [4] + [random.randint(0, 9) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d = d * 2
            d = d - 9 if d > 9 else d
        total += d
    check = (10 - total % 10) % 10
    return "".join(map(str, digits + [check]))


def last_upstream_body(stack) -> dict:
    reqs = stack.upstream_requests()
    assert reqs, "upstream saw no request"
    return json.loads(reqs[-1]["body"])


def test_chat_non_streaming_redacts_both_directions(stack):
    email = rand_email()
    card = luhn_card()
    stack.clear_upstream()
    resp = client(stack).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"mail {email} card {card} thanks"}],
    )
    text = resp.choices[0].message.content
    assert email not in text and card not in text
    assert "[REDACTED:EMAIL]" in text and "[REDACTED:CREDIT_CARD]" in text
    sent = last_upstream_body(stack)
    assert sent["model"] == "gpt-4o-mini"
    assert email not in json.dumps(sent)
    assert "[REDACTED:EMAIL]" in sent["messages"][0]["content"]


def test_chat_streaming_never_leaks(stack):
    for _ in range(5):
        email = rand_email()
        stream = client(stack).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": f"Contact {email} now, please."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts, usage = [], None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for c in chunk.choices:
                if c.delta and c.delta.content:
                    parts.append(c.delta.content)
        text = "".join(parts)
        assert email not in text
        assert "[REDACTED:EMAIL]" in text
        assert text.startswith("Contact ") and text.endswith(" now, please.")
        assert usage is not None and usage.total_tokens > 0


def test_responses_api_streaming(stack):
    email = rand_email()
    stream = client(stack).responses.create(
        model="gpt-4o", input=f"reach me at {email}", stream=True)
    deltas, final = [], None
    for event in stream:
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            final = event.response
    text = "".join(deltas)
    assert email not in text and "[REDACTED:EMAIL]" in text
    assert final is not None
    assert email not in final.output_text and "[REDACTED:EMAIL]" in final.output_text


def test_responses_api_non_streaming(stack):
    email = rand_email()
    resp = client(stack).responses.create(model="gpt-4o", input=f"x {email} y")
    assert email not in resp.output_text and "[REDACTED:EMAIL]" in resp.output_text


def test_embeddings_pass_and_input_is_redacted(stack):
    email = rand_email()
    stack.clear_upstream()
    resp = client(stack).embeddings.create(model="text-embedding-3-small", input=[f"hi {email}", "plain"])
    assert len(resp.data) == 2 and len(resp.data[0].embedding) > 0
    sent = last_upstream_body(stack)
    assert email not in json.dumps(sent)


def test_models_list_passes_through(stack):
    models = client(stack).models.list()
    assert len(models.data) >= 1


def test_secret_in_prompt_is_blocked_with_sdk_error(stack):
    key = "sk-proj-" + "".join(random.choices(string.ascii_letters + string.digits, k=48))
    stack.clear_upstream()
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client(stack).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"my key is {key}"}])
    assert exc.value.status_code == 403
    body = exc.value.body
    assert body["type"] == "jimini_policy_violation"
    assert body["code"].startswith("secrets.")
    # the upstream never received the secret
    for r in stack.upstream_requests():
        assert key not in r["body"]


def test_malformed_json_is_a_clean_400(stack):
    import httpx
    r = httpx.post(stack.base_url + "/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json", "authorization": "Bearer x"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_pseudonymize_round_trip_streaming_one_char_chunks(pseudo_stack):
    email = rand_email()
    pseudo_stack.clear_upstream()
    stream = client(pseudo_stack).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"Write to {email} and {email} today"}],
        stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"Write to {email} and {email} today"
    sent = last_upstream_body(pseudo_stack)
    assert email not in json.dumps(sent)
    assert "[EMAIL_1]" in sent["messages"][0]["content"]
    assert "[EMAIL_2]" not in sent["messages"][0]["content"]


def test_pseudonymize_round_trip_non_streaming(pseudo_stack):
    email = rand_email()
    resp = client(pseudo_stack).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"Hello {email}!"}])
    assert resp.choices[0].message.content == f"Hello {email}!"
