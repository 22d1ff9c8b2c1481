"""Tune-A-Video's temporal attention, the baseline EI² replaces with STAM (``ei2.stam``)."""

from torch import nn

from .frame_sequence import FrameSequenceAttention


class VanillaTemporalAttention(FrameSequenceAttention):
    """Tune-A-Video's temporal attention: ``hidden + out(softmax-attention(LayerNorm(hidden)))``.

    Initialised and trained as Tune-A-Video's ``attn_temp`` / ``norm_temp``: only the output
    weight is zeroed (the output bias keeps ``nn.Linear``'s random init, a small constant shift
    from the start), and the LayerNorm is frozen at γ=1, β=0 (Tune-A-Video's trainable modules
    match ``attn_temp`` only).
    """

    def __init__(self, channels, heads):
        super().__init__(channels, heads, out_bias=True)
        self.norm = nn.LayerNorm(channels)
        self.norm.requires_grad_(False)
        nn.init.zeros_(self.to_out.weight)

    def branch(self, x):
        x = self.norm(x)
        weights = self.scores(x).softmax(dim=-1)
        return self.to_out(self.mix(weights, self.to_v(x)))
