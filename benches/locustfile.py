"""Locust user for benches/load_generator.rs: the same streaming completion request that
gembatch load and oha send, through locust's fastest client (FastHttpUser)."""
import json

from locust import FastHttpUser, task

BODY = json.dumps({"model": "stub-model", "prompt": "hello", "max_tokens": 1, "stream": True,
                   "stream_options": {"include_usage": True}})


class CompletionUser(FastHttpUser):
    @task
    def complete(self):
        self.client.post("/v1/completions", data=BODY, headers={"content-type": "application/json"})
