"""Vertex AI plumbing shared by the cloud commands: clients, credentials, image names, JSON."""

from __future__ import annotations

import json
import os
import re

from sentitune import __version__
from sentitune.errors import SentituneError, require_extra

DEFAULT_REGION = "europe-west4"  # where the walkthrough ran its T4 job
DEFAULT_REPOSITORY = "sentitune"  # Artifact Registry repository of the images
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")


def aiplatform_types():
    require_extra("google.cloud.aiplatform_v1", "cloud", "Vertex AI commands")
    from google.cloud.aiplatform_v1 import types

    return types


def default_project() -> str | None:
    """The project from the environment gcloud and the client libraries read."""
    for name in ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT", "GCLOUD_PROJECT"):
        if os.environ.get(name):
            return os.environ[name]
    return None


def image_uri(project: str, region: str, repository: str = DEFAULT_REPOSITORY, variant: str = "gpu") -> str:
    """The Artifact Registry tag `cloud build` pushes: REGION-docker.pkg.dev/PROJECT/REPO/sentitune[-cpu]:VERSION."""
    name = "sentitune" if variant == "gpu" else f"sentitune-{variant}"
    return f"{region}-docker.pkg.dev/{project}/{repository}/{name}:{__version__}"


def api_endpoint(region: str, override: str | None = None) -> str:
    return override or f"{region}-aiplatform.googleapis.com"


# The Cloud Console's page for each kind of resource sentitune creates (as the aiplatform SDK links them).
CONSOLE_PAGES = {
    "customJobs": "ai/platform/locations/{location}/training/{id}",
    "hyperparameterTuningJobs": "ai/platform/locations/{location}/training/{id}",
    "models": "vertex-ai/locations/{location}/models/{id}",
    "endpoints": "vertex-ai/locations/{location}/endpoints/{id}",
    "batchPredictionJobs": "ai/platform/locations/{location}/batch-predictions/{id}",
}
RESOURCE = re.compile(r"projects/([^/]+)/locations/([^/]+)/(\w+)/([^/]+)$")


def console_url(resource_name: str) -> str | None:
    """The Cloud Console page of a Vertex AI resource name, or None for a kind without one here."""
    found = RESOURCE.search(str(resource_name))
    if not found or found.group(3) not in CONSOLE_PAGES:
        return None
    project, location, kind, ident = found.groups()
    page = CONSOLE_PAGES[kind].format(location=location, id=ident)
    return f"https://console.cloud.google.com/{page}?project={project}"


def to_json(message) -> dict:
    """A request as the JSON the REST API receives: enum names, set fields only."""
    return json.loads(
        type(message).to_json(
            message, use_integers_for_enums=False, including_default_value_fields=False, indent=None
        )
    )


def client(kind: str, region: str, endpoint: str | None = None):
    """A Vertex AI REST client (`kind`: model, endpoint, job, metadata) for `region`.

    `endpoint` overrides the regional host (Private Service Connect, a local stand-in). A plain
    http:// endpoint is sent no credentials: bearer tokens never travel unencrypted.
    """
    require_extra("google.cloud.aiplatform_v1", "cloud", "Vertex AI commands")
    from google.cloud.aiplatform_v1.services import (
        endpoint_service,
        job_service,
        metadata_service,
        model_service,
    )

    services = {
        "model": model_service,
        "endpoint": endpoint_service,
        "job": job_service,
        "metadata": metadata_service,
    }
    service = services[kind]
    host = api_endpoint(region, endpoint)
    scheme = "https"
    if host.startswith(("http://", "https://")):
        scheme, host = host.split("://", 1)
    if scheme == "http":
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    else:
        credentials = default_credentials()
    client_cls = next(getattr(service, n) for n in dir(service) if n.endswith("ServiceClient"))
    transport_cls = getattr(service.transports, client_cls.__name__.removesuffix("Client") + "RestTransport")
    return client_cls(transport=transport_cls(host=host, credentials=credentials, url_scheme=scheme))


def default_credentials():
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError as exc:
        raise SentituneError(
            "no Google Cloud credentials: run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or use --dry-run)"
        ) from exc
    return credentials


def call(what: str, fn, *args, **kwargs):
    """Run an API call; an API error becomes one line naming the call and Google's message."""
    from google.api_core import exceptions

    try:
        return fn(*args, **kwargs)
    except exceptions.GoogleAPICallError as exc:
        message = re.sub(r"^(GET|POST|PATCH|PUT|DELETE) \S+: ", "", str(exc.message))  # REST adds the URL
        raise SentituneError(f"{what} failed: {int(exc.code or 0)} {message}") from exc
    except exceptions.RetryError as exc:
        raise SentituneError(f"{what} failed: no answer from Vertex AI ({exc})") from exc
    except OSError as exc:  # requests' ConnectionError and friends
        raise SentituneError(f"{what} failed: cannot reach Vertex AI ({type(exc).__name__}: {exc})") from exc
