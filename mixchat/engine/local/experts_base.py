"""What the two quantized replacements of ``MixtralExperts`` share: the bitsandbytes one
(``bnb_experts``, what a GPU runs) and the CPU kernels' one (``cpu_kernels``)."""

from __future__ import annotations

from typing import Any

from torch import nn


class QuantizedExpertsBase(nn.Module):
    """The shape of a Mixtral layer's experts and the quantization mode, checked.

    ``shapes`` per piece: ``gate_up`` is ``[w1; w3]`` (``[2*intermediate, hidden]``, gate rows
    first, as transformers fuses them) and ``down`` is ``w2`` (``[hidden, intermediate]``).
    """

    def __init__(self, config: Any, mode: str) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        if mode not in ("4bit", "8bit"):
            raise ValueError(f"mode must be '4bit' or '8bit', not {mode!r}")
        self.num_experts = int(config.num_local_experts)
        self.hidden_dim = int(config.hidden_size)
        self.intermediate_dim = int(config.intermediate_size)
        self.act_fn = ACT2FN[config.hidden_act]
        self.mode = mode
        self.shapes = {
            "gate_up": (2 * self.intermediate_dim, self.hidden_dim),
            "down": (self.hidden_dim, self.intermediate_dim),
        }
