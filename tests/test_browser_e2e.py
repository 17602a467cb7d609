"""The result browser in a real JupyterLab, driven by a real (headless) Chromium.

The test starts JupyterLab on a free local port with a token, opens `NOTEBOOK`,
runs all cells from the Run menu, waits for the browser widget, moves the image
slider with the keyboard and checks that the picture and the summary change.
A screenshot is kept in `artifacts/browser/` (git-ignored).

JupyterLab runs isolated from the user's set-up: temporary settings, workspaces
and runtime folders, and settings overrides that turn off the news pop-up,
autosave (the notebook file is never written) and cell windowing (every output
is rendered). It uses Debian's Chromium at `CHROMIUM` (``apt-get install
chromium``), never a browser downloaded by ``playwright install``; without it
the test is skipped.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from solo_lib.paths import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
#: The notebook that shows the result browser.
NOTEBOOK = REPO_ROOT / "notebooks/05_postprocess_and_evaluation.ipynb"
SCREENSHOT = REPO_ROOT / "artifacts" / "browser" / "result_browser.png"
FAILURE_SCREENSHOT = SCREENSHOT.with_name("failure.png")
SERVER_START_TIMEOUT_S = 60
PAGE_LOAD_TIMEOUT_S = 45
KERNEL_START_TIMEOUT_S = 60
RUN_ALL_TIMEOUT_S = 420  # notebook 05 may first train its short model (fast mode: ~1-2 min)
UPDATE_TIMEOUT_S = 20

SETTINGS_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
    "@jupyterlab/notebook-extension:tracker": {
        "autoStartDefaultKernel": True,
        "windowingMode": "none",
    },
}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no Chromium at {CHROMIUM}: install it with `apt-get install chromium`",
)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip, dev extra)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _api(base: str, token: str, path: str) -> object:
    with urllib.request.urlopen(f"{base}{path}?token={token}", timeout=5) as response:
        return json.load(response)


def _wait_for_connected_kernel(base: str, token: str) -> None:
    """Wait until a kernel is idle with a client connected: Run All before that is lost."""
    deadline = time.monotonic() + KERNEL_START_TIMEOUT_S
    while time.monotonic() < deadline:
        kernels = _api(base, token, "/api/kernels")
        if any(k["execution_state"] == "idle" and k["connections"] > 0 for k in kernels):
            return
        time.sleep(0.5)
    pytest.fail(f"no kernel connected within {KERNEL_START_TIMEOUT_S} s: {kernels}")


@pytest.fixture()
def lab(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A JupyterLab server over the notebook's folder: yields (base URL, token, notebook path)."""
    notebook = NOTEBOOK
    app_settings = tmp_path / "app_settings"
    app_settings.mkdir()
    (app_settings / "overrides.json").write_text(json.dumps(SETTINGS_OVERRIDES))
    token, port = secrets.token_hex(16), _free_port()
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the kernel picks the inline backend, as for a user
    for name, folder in [
        ("JUPYTERLAB_SETTINGS_DIR", "user_settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
    ]:
        env[name] = str(tmp_path / folder)
    checkpoints = notebook.parent / ".ipynb_checkpoints"
    checkpoint = checkpoints / f"{notebook.stem}-checkpoint.ipynb"
    had_checkpoints, had_checkpoint = checkpoints.exists(), checkpoint.exists()
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser",
            "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={notebook.parent}",
            f"--LabApp.app_settings_dir={app_settings}",
            "--LabApp.extension_manager=readonly",  # never asks PyPI for extensions
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        cwd=notebook.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                _api(base, token, "/api/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(
                        f"JupyterLab did not start:\n{(tmp_path / 'jupyterlab.log').read_text()}"
                    )
                time.sleep(0.5)
        yield base, token, notebook
    finally:
        server.send_signal(signal.SIGTERM)  # the server shuts its kernels down
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
        if not had_checkpoint:  # JupyterLab writes one when it opens a notebook
            checkpoint.unlink(missing_ok=True)
        if not had_checkpoints and checkpoints.exists() and not any(checkpoints.iterdir()):
            checkpoints.rmdir()


def test_image_slider_updates_picture_and_summary_in_jupyterlab(lab):
    base, token, notebook = lab
    notebook_bytes = notebook.read_bytes()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        try:
            page.goto(f"{base}/lab/tree/{notebook.name}?token={token}")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=PAGE_LOAD_TIMEOUT_S * 1000)
            _wait_for_connected_kernel(base, token)

            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()

            widget = page.locator(".solo-result-browser").first
            error = page.locator(".jp-OutputArea-output", has_text="Traceback").first
            widget.or_(error).wait_for(timeout=RUN_ALL_TIMEOUT_S * 1000)
            if not widget.is_visible():
                pytest.fail(f"a cell of {notebook.name} failed:\n{error.inner_text()}")
            picture, summary = widget.locator("img"), widget.locator(".widget-html-content")
            summary.filter(has_text="image ").wait_for()
            before = (picture.get_attribute("src"), summary.inner_text())
            assert before[0].startswith("blob:") or before[0].startswith("data:image/png")

            handle = widget.locator(".widget-slider .noUi-handle").first
            handle.focus()
            handle.press("ArrowRight")
            page.wait_for_function(
                """([src, text]) => {
                    const root = document.querySelector('.solo-result-browser');
                    return root.querySelector('img').src !== src
                        && root.querySelector('.widget-html-content').innerText !== text;
                }""",
                arg=list(before),
                timeout=UPDATE_TIMEOUT_S * 1000,
            )
            after = (picture.get_attribute("src"), summary.inner_text())
            assert after[0] != before[0]
            image_ids = [re.match(r"image (\d+):", text) for text in (before[1], after[1])]
            assert all(image_ids) and image_ids[0][1] != image_ids[1][1], (before[1], after[1])
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            widget.scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOT))
            FAILURE_SCREENSHOT.unlink(missing_ok=True)
        except BaseException:  # pytest.fail too: keep a picture of the page
            FAILURE_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(FAILURE_SCREENSHOT), full_page=True)
            raise
        finally:
            browser.close()
    assert notebook.read_bytes() == notebook_bytes  # autosave is off: the file is untouched
