"""Django views in front of the claude-queue gateway (see examples/README.md).

settings.py: CLAUDE_QUEUE_GATEWAY_URL = "http://127.0.0.1:8000"; CLAUDE_QUEUE_API_KEY = "..."
urls.py:     path("", django_view.page), path("ask", django_view.ask)
"""

import json
import uuid

import httpx
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.views.decorators.http import require_POST

PAGE = """<!doctype html><textarea id=q></textarea><button onclick=ask()>Ask</button><pre id=log>
</pre><script>
async function ask() {  // the token may only read this session, for an hour
  const run = await (await fetch("ask", {method: "POST", body: JSON.stringify({prompt: q.value}),
                     headers: {"Content-Type": "application/json", "X-CSRFToken": "%s"}})).json();
  const events = new EventSource(run.events_url + "&token=" + encodeURIComponent(run.token));
  for (const type of ["queued", "started", "message", "result", "error", "finished"])
    events.addEventListener(type, (e) => { log.textContent += `${e.type} ${e.data}\\n`; });
  events.addEventListener("finished", () => events.close());  // else EventSource reconnects
}</script>"""


def page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(PAGE % get_token(request))


@require_POST
def ask(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body)
    session = body.get("session_id") or f"web-{uuid.uuid4().hex}"  # check it is this user's
    gateway_url = settings.CLAUDE_QUEUE_GATEWAY_URL
    auth = {"Authorization": f"Bearer {settings.CLAUDE_QUEUE_API_KEY}"}  # stays on the server
    with httpx.Client(base_url=gateway_url, headers=auth, timeout=30) as gateway:
        sent = gateway.post(f"/v1/sessions/{session}/runs", json={"prompt": body.get("prompt")})
        if sent.status_code != 202:  # e.g. 422 naming the bad field: pass it on
            return JsonResponse(sent.json(), status=sent.status_code)
        run = sent.json()
        minted = gateway.post(f"/v1/sessions/{session}/tokens", json={"scopes": ["read"]})
        token = minted.raise_for_status().json()["token"]
    query = f"after={run['seq'] - 1}&run_id={run['run_id']}&until=finished"
    url = f"{gateway_url}/v1/sessions/{session}/events?{query}"
    return JsonResponse(
        {"session_id": session, "run_id": run["run_id"], "events_url": url, "token": token}
    )
