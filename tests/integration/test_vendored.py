"""#27: the front-end libraries the page ships come vendored from the npm registry
(licence and pinned version beside them), reach the wheel, and /docs works with
nothing loaded from elsewhere; the page has a favicon."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from api.app import STATIC, create_app
from service.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
# package -> (version, the files shipped): README, Front-end libraries.
VENDORED = {
    "swagger-ui-dist": (
        "5.35.0",
        ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE", "package.json"],
    ),
    "uplot": ("1.6.32", ["uPlot.esm.js", "uPlot.min.css", "LICENSE", "package.json"]),
}


def test_each_vendored_library_holds_its_licence_and_pinned_version() -> None:
    readme = (ROOT / "README.md").read_text()
    for package, (version, files) in VENDORED.items():
        folder = STATIC / "vendor" / package
        for name in files:
            assert (folder / name).is_file(), (package, name)
        assert json.loads((folder / "package.json").read_text())["version"] == version
        assert f"`{package}` {version}" in readme  # the README says what ships


def test_the_wheel_holds_every_vendored_file(tmp_path: Path) -> None:
    """package-data must reach sub-folders (``static/*`` alone did not)."""
    source = tmp_path / "source"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in listed:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w",
         str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package, (_, files) in VENDORED.items():
        for name in files:
            assert f"api/static/vendor/{package}/{name}" in names, (package, name)
    assert "api/static/favicon.ico" in names and "api/static/index.html" in names


async def test_docs_and_the_favicon_are_served_from_here() -> None:
    app = create_app(Settings(_env_file=None))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            docs = await client.get("/docs")
            assert docs.status_code == 200
            assert "https://" not in docs.text and "http://" not in docs.text  # no CDN
            for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
                path = f"/static/vendor/swagger-ui-dist/{asset}"
                assert path in docs.text
                assert (await client.get(path)).status_code == 200
            icon = await client.get("/favicon.ico")
            assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
            assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO
            assert (await client.get("/redoc")).status_code == 404  # it would need a CDN
            page = (await client.get("/")).text
            assert '<link rel="icon" href="/favicon.ico">' in page
