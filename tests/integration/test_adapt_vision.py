"""L1 adaptation end to end on a tiny image dataset: lineage, resume after SIGKILL, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modelfab.adapt import AdaptConfig, adapt_model, run_dir_for
from modelfab.core.config import Settings
from modelfab.core.errors import ConfigError, DataError, NotFoundError
from modelfab.data import import_image_folder, import_text_table
from modelfab.store import open_store
from modelfab.store.models import lineage
from modelfab.store.store import Store
from modelfab.zoo.registry import load_registered, register_foundation

pytestmark = pytest.mark.slow


def write_images(folder: Path, n: int, side: int = 64, seed: int = 0) -> Path:
    """Grayscale 'cells': a gradient, a grid of bus bars and, for some, a dark crack line."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:side, 0:side]
    for i in range(n):
        img = 120 + 40 * np.sin(xx / (4 + i % 5)) + rng.normal(0, 8, (side, side))
        img[:, :: side // 4] = 40
        if i % 3 == 0:
            img[np.abs(yy - xx - (i % 7) * 3) < 2] = 10
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(folder / f"cell{i:03d}.png")
    return folder


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("MODELFAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELFAB_DB", raising=False)
    monkeypatch.delenv("MODELFAB_ARTIFACTS", raising=False)
    st = open_store(Settings.from_env())
    import_image_folder(st, write_images(tmp_path / "imgs", 40), "cells")
    register_foundation(st, "efficientnet-lite0", image_size=64)
    return st


def small_cfg(**kw: object) -> AdaptConfig:
    base: dict[str, object] = dict(steps=6, batch_size=8, cache_views=2, resolution=64, checkpoint_every=2,
                                   warmup_steps=2, threads=1, lr=1e-3)
    base.update(kw)
    return AdaptConfig(**base)  # type: ignore[arg-type]


def test_adapt_registers_l1_with_parent_dataset_and_changed_weights(env: Store) -> None:
    result = adapt_model(env, "efficientnet-lite0", "cells", "cells-l1", small_cfg(), log=lambda m: None)
    model = result.model
    assert model.tier == "L1" and model.dataset_version_id is not None
    base = env.get_model("efficientnet-lite0")
    assert model.parent_id == base.id
    assert 0 < model.trainable_params < model.params
    assert (result.run_dir / "loss.png").stat().st_size > 1000
    assert len(result.train.losses) == 6 and all(np.isfinite(result.train.losses))
    tree = lineage(env, model.id)
    assert tree[0].model.id == base.id and tree[0].children[0].model.id == model.id
    assert tree[0].children[0].dataset and tree[0].children[0].dataset.startswith("cells")
    l0, _ = load_registered(env, base.id)
    l1, _ = load_registered(env, model.id)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        early0, early1 = l0.features(x, ["block10"])["block10"], l1.features(x, ["block10"])["block10"]
        torch.testing.assert_close(early0, early1)  # frozen stages untouched
        assert not torch.allclose(l0.embed(x), l1.embed(x))  # the last stages changed


def test_lora_and_byol_variants_run(env: Store) -> None:
    lora = adapt_model(env, "efficientnet-lite0", "cells", "cells-lora", small_cfg(lora_rank=2, steps=2),
                       log=lambda m: None)
    assert lora.model.trainable_params < 100_000
    l1, _ = load_registered(env, lora.model.id)
    assert all(type(m).__name__ != "LoRAConv1x1" for m in l1.module.modules())
    byol = adapt_model(env, "efficientnet-lite0", "cells", "cells-byol",
                       small_cfg(objective="byol", steps=2, cache_views=0), log=lambda m: None)
    assert byol.model.tier == "L1"


RUNNER = textwrap.dedent(
    """
    import sys
    from modelfab.adapt import AdaptConfig, adapt_model
    from modelfab.store import open_store
    cfg = AdaptConfig(steps=int(sys.argv[2]), batch_size=8, cache_views=0, resolution=96, checkpoint_every=2,
                      warmup_steps=2, threads=1)
    adapt_model(open_store(), "efficientnet-lite0", "cells", sys.argv[1], cfg, resume="--resume" in sys.argv,
                log=lambda m: print(m, flush=True))
    """
)


def test_resume_after_sigkill_continues_like_an_uninterrupted_run(env: Store, tmp_path: Path) -> None:
    script = tmp_path / "run_adapt.py"
    script.write_text(RUNNER)
    steps = 12
    proc = subprocess.Popen([sys.executable, str(script), "killed", str(steps)], env=dict(os.environ))
    run_dir = run_dir_for(env, "killed")
    deadline = time.time() + 240
    while not list(run_dir.glob("ckpt-*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = sorted(run_dir.glob("ckpt-*.json"))
    assert done_at_kill, "no checkpoint was written before the kill"
    killed_at = int(done_at_kill[-1].stem.split("-")[1])
    assert killed_at < steps, "the run finished before it could be killed"
    again = subprocess.run([sys.executable, str(script), "killed", str(steps)], capture_output=True, text=True)
    assert again.returncode != 0 and "ConflictError" in again.stderr and "--resume" in again.stderr
    resumed = subprocess.run([sys.executable, str(script), "killed", str(steps), "--resume"],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from ckpt-{killed_at:06d}" in resumed.stdout
    straight = subprocess.run([sys.executable, str(script), "straight", str(steps)], capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-2000:]
    a, _ = load_registered(env, "killed")
    b, _ = load_registered(env, "straight")
    for (ka, va), (kb, vb) in zip(a.module.state_dict().items(), b.module.state_dict().items(), strict=True):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=ka)


def test_bad_inputs(env: Store, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="add-foundation"):
        adapt_model(env, "efficientnet-lite2", "cells", "x", small_cfg(), log=print)
    with pytest.raises(NotFoundError, match="dataset"):
        adapt_model(env, "efficientnet-lite0", "nope", "x", small_cfg(), log=print)
    table = tmp_path / "t.csv"
    table.write_text("text\n" + "\n".join(f"line {i}" for i in range(30)) + "\n")
    import_text_table(env, table, "texts")
    with pytest.raises(ConfigError, match="text items"):
        adapt_model(env, "efficientnet-lite0", "texts", "x", small_cfg(), log=print)
    import_image_folder(env, write_images(tmp_path / "few", 6, seed=1), "few")
    with pytest.raises(DataError, match="at least"):
        adapt_model(env, "efficientnet-lite0", "few", "x", small_cfg(split=None), log=print)
    with pytest.raises(ConfigError, match="simcse"):
        adapt_model(env, "efficientnet-lite0", "cells", "x", small_cfg(objective="simcse"), log=print)


def test_corrupt_checkpoint_on_resume_falls_back_to_the_earlier_one(env: Store) -> None:
    adapt_model(env, "efficientnet-lite0", "cells", "c", small_cfg(steps=4), log=lambda m: None)
    run_dir = run_dir_for(env, "c")
    ckpts = sorted(run_dir.glob("ckpt-*.safetensors"))
    assert [p.stem for p in ckpts] == ["ckpt-000002", "ckpt-000004"]
    ckpts[-1].write_bytes(b"garbage")
    messages: list[str] = []
    result = adapt_model(env, "efficientnet-lite0", "cells", "c", small_cfg(steps=4), resume=True,
                         log=messages.append)
    assert any("ckpt-000004.json is corrupt" in m for m in messages)
    assert result.train.resumed_from == 2 and len(result.train.losses) == 4
    assert ckpts[0].exists()
    for p in run_dir.glob("ckpt-*.safetensors"):
        p.write_bytes(b"garbage")
    with pytest.raises(DataError, match="no usable checkpoint"):
        adapt_model(env, "efficientnet-lite0", "cells", "c", small_cfg(steps=4), resume=True, log=lambda m: None)
    with pytest.raises(ConfigError, match="differ"):
        adapt_model(env, "efficientnet-lite0", "cells", "c-other", small_cfg(steps=4), log=lambda m: None)
        adapt_model(env, "efficientnet-lite0", "cells", "c-other", small_cfg(steps=4, lr=0.5), resume=True,
                    log=lambda m: None)


def test_view_cache_is_kept_and_reused_on_resume(env: Store) -> None:
    adapt_model(env, "efficientnet-lite0", "cells", "vc", small_cfg(steps=2), log=lambda m: None)
    cache = run_dir_for(env, "vc") / "view-cache.safetensors"
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    result = adapt_model(env, "efficientnet-lite0", "cells", "vc", small_cfg(steps=4), resume=True,
                         log=lambda m: None)
    assert cache.stat().st_mtime_ns == stamp and result.train.resumed_from == 2
