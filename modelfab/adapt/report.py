"""The adaptation report's loss curve (PNG, matplotlib Agg backend)."""

from __future__ import annotations

from pathlib import Path


def plot_losses(losses: list[float], path: Path, title: str = "adaptation loss") -> Path:
    """Raw per-step loss plus a moving average, saved as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = list(range(1, len(losses) + 1))
    ax.plot(steps, losses, color="#9bb7d4", linewidth=0.8, label="loss")
    window = max(1, len(losses) // 20)
    if len(losses) >= window > 1:
        smooth = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1])
                  for i in range(len(losses))]
        ax.plot(steps, smooth, color="#1f4e79", linewidth=1.6, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
