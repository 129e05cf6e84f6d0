"""What can be tested of the image without Docker: the Dockerfile's build steps and the server it starts."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from devcluster.procs import free_port
from tests.portal.servers import ROOT, clean_env, http_get, running

DOCKERFILE = (ROOT / "Dockerfile").read_text()
IGNORED = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"}


def test_dockerfile_runs_daphne_as_a_non_root_user_with_a_healthcheck():
    runtime = DOCKERFILE.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001:10001$", runtime, re.MULTILINE)
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", runtime, re.MULTILINE).group(1))
    assert cmd[0] == "daphne" and cmd[-1] == "portal.asgi:application" and "--proxy-headers" in cmd
    assert "HEALTHCHECK" in runtime and "/healthz" in runtime
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert {".git", ".venv", "tests", "devcluster", "deploy", "db.sqlite3*"} <= IGNORED


def build_context(tmp_path):
    """The files `COPY . .` takes (top-level .dockerignore entries are all this project uses)."""
    context = tmp_path / "app"
    context.mkdir()
    for path in ROOT.iterdir():
        if path.name in IGNORED or any(Path(path.name).match(p) for p in IGNORED):
            continue
        if path.is_dir():
            shutil.copytree(path, context / path.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, context / path.name)
    return context


def test_collectstatic_at_build_and_production_static_files(tmp_path):
    context = build_context(tmp_path)
    assert sorted(p.name for p in context.iterdir()) == [
        "README.md", "catalog", "manage.py", "portal", "pyproject.toml", "static", "templates", "workspaces",
    ]  # fmt: skip
    step = re.search(r"RUN (DJANGO_PRODUCTION=1 .*?collectstatic[^&]*)", DOCKERFILE, re.DOTALL).group(1)
    variables = dict(re.findall(r"(\w+)=(\S+)", step.split("python manage.py")[0]))
    build = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "-v0"],
        cwd=context, env=clean_env(**variables), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    manifest = json.loads((context / "staticfiles" / "staticfiles.json").read_text())["paths"]
    hashed = manifest["portal.css"]
    assert (context / "staticfiles" / f"{hashed}.gz").exists()

    port = free_port()
    # Production settings as in the pod; these pages need neither the database nor Redis.
    env = clean_env(**{**variables, "DJANGO_ALLOWED_HOSTS": "portal.example.com"})
    cmd = [sys.executable, "-m", "daphne", "--bind", "127.0.0.1", "--port", str(port), "--proxy-headers"]
    cmd.append("portal.asgi:application")
    https = {"Host": "portal.example.com", "X-Forwarded-Proto": "https"}
    with running(cmd, env, port=port, cwd=context) as result:
        css = http_get(f"http://127.0.0.1:{port}/static/{hashed}", headers=https)
        plain = http_get(f"http://127.0.0.1:{port}/static/{hashed}", headers={"Host": "portal.example.com"})
        login = http_get(f"http://127.0.0.1:{port}/accounts/login/", headers=https)
    assert css[0] == 200 and "immutable" in css[2]["Cache-Control"], css[2]
    assert plain[0] == 301 and plain[2]["Location"].startswith("https://portal.example.com/")
    assert login[0] == 200 and hashed in login[1]  # templates point at the hashed file
    cookie = login[2]["Set-Cookie"]
    assert "Secure" in cookie and "csrftoken" in cookie
    assert login[2]["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert all(json.loads(line) for line in result["stderr"].splitlines() if line.strip())
