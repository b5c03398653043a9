"""An app that mounts the gateway under /claude (uvicorn --factory), as README shows."""

from fastapi import FastAPI

from gateway import create_app
from shared.settings import Settings


def app() -> FastAPI:
    host = FastAPI()
    host.mount("/claude", create_app(Settings.from_environment()))
    return host
