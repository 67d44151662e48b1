"""The README's set-up commands: the test command installs what the tests need and `.ci/run` runs exactly it."""
from __future__ import annotations

import re
from sat.paths import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Set up on a fresh machine"):text.index("## The app")]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_gives_exactly_two_setup_commands():
    app, tests = readme_commands()
    assert app == "pip install -r requirements.txt && python app.py"
    # the test command installs the system packages the tests need (Java for METEOR/PTB, Chromium for the
    # browser tests), then the Python packages, then runs pytest
    assert re.search(r"apt-get install .*default-jre-headless", tests) and " chromium " in tests
    assert tests.index("apt-get install") < tests.index("pip install") < tests.index("python -m pytest")
    assert "-r requirements-dev.txt" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = readme_commands()
    ci = [line for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == [tests]


def test_requirements_pin_the_local_torch_wheels_and_timm():
    reqs = (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert "torch==2.14.1" in reqs and "torchvision==0.29.1" in reqs
    assert any(r.startswith("timm==") for r in reqs)
    # NOTE: the old EfficientNet-Lite code package is gone: timm builds the encoder
    assert not any(r.startswith("efficientnet-lite-pytorch") for r in reqs)
