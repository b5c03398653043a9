"""A FastAPI backend in front of the claude-queue gateway (see examples/README.md)."""

import os
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

PAGE = """<!doctype html><textarea id=q></textarea><button onclick=ask()>Ask</button><pre id=log>
</pre><script>
async function ask() {  // the token may only read this session, for an hour
  const run = await (await fetch("/ask", {method: "POST", body: JSON.stringify({prompt: q.value}),
                                          headers: {"Content-Type": "application/json"}})).json();
  const events = new EventSource(run.events_url + "&token=" + encodeURIComponent(run.token));
  for (const type of ["queued", "started", "message", "result", "error", "finished"])
    events.addEventListener(type, (e) => { log.textContent += `${e.type} ${e.data}\\n`; });
  events.addEventListener("finished", () => events.close());  // else EventSource reconnects
}</script>"""


class Ask(BaseModel):
    prompt: str
    session_id: str | None = None  # in your app: check that the session is this user's


def create_example_app(gateway_url: str, api_key: str) -> FastAPI:
    auth = {"Authorization": f"Bearer {api_key}"}  # the API key never leaves the backend
    app = FastAPI()

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.post("/ask")
    async def ask(body: Ask) -> Any:
        session = body.session_id or f"web-{uuid.uuid4().hex}"
        async with httpx.AsyncClient(base_url=gateway_url, headers=auth, timeout=30) as gateway:
            sent = await gateway.post(f"/v1/sessions/{session}/runs", json={"prompt": body.prompt})
            if sent.status_code != 202:  # e.g. 422 naming the bad field: pass it on
                return JSONResponse(sent.json(), status_code=sent.status_code)
            run = sent.json()
            minted = await gateway.post(f"/v1/sessions/{session}/tokens", json={"scopes": ["read"]})
            token = minted.raise_for_status().json()["token"]
        query = f"after={run['seq'] - 1}&run_id={run['run_id']}&until=finished"
        url = f"{gateway_url}/v1/sessions/{session}/events?{query}"
        return {"session_id": session, "run_id": run["run_id"], "events_url": url, "token": token}

    return app


def app_from_env() -> FastAPI:
    return create_example_app(os.environ["CQ_GATEWAY_URL"], os.environ["CQ_API_KEY"])
