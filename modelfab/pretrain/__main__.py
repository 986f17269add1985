"""``python -m modelfab.pretrain --config FILE`` (also under ``torchrun -m``): train, no registration."""

from __future__ import annotations

import argparse
import json
import sys

from modelfab.core.errors import ModelfabError
from modelfab.pretrain.config import load_run_config
from modelfab.pretrain.distributed import DistInfo, shutdown
from modelfab.pretrain.run import run_pretraining


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelfab.pretrain")
    parser.add_argument("--config", required=True, help="YAML run config")
    parser.add_argument("--stop-after", type=int, default=None, help="stop after this step (schedule unchanged)")
    args = parser.parse_args(argv)
    try:
        cfg = load_run_config(args.config)
        result = run_pretraining(cfg, stop_after=args.stop_after)
    except ModelfabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    import torch.distributed as dist

    info = DistInfo(dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else DistInfo()
    if info.is_main:
        summary = {
            "steps": result.train.steps,
            "final_loss": result.train.final_loss,
            "model_dir": str(result.model_dir),
        }
        print(json.dumps(summary))
    shutdown(info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
