"""CRIS's neck, vision-language decoder and projector (docs/science.md §4.2), written for this project.

Submodule names follow the layout of the original CRIS checkpoints (``neck.txt_proj``, ``decoder.layers.0.
multihead_attn``, ``proj.vis``, ``proj.txt``, ...), so their state dicts load without renaming.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, padding: int = 0, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class BatchNorm1dAnyBatch(nn.BatchNorm1d):
    """BatchNorm1d that normalises a training batch of one sample with the running statistics (plain BatchNorm1d
    raises there): a finetuning epoch whose last batch holds one sample does not crash."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def linear_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout, bias=False), BatchNorm1dAnyBatch(cout), nn.ReLU(inplace=True))


class CoordConv(nn.Module):
    """conv-bn-relu over the input plus two channels of normalised (x, y) coordinates in [-1, 1]."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, padding: int = 1, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(cin + 2, cout, kernel, padding, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x, grid_y]).expand(b, -1, -1, -1)
        return self.conv1(torch.cat([x, coords], dim=1))


class FPN(nn.Module):
    """Text-gated feature pyramid: C5 x projected sentence state, top-down fusion with C4 and pooled C3, then
    aggregation of the three levels at stride 16 and a CoordConv block. Output (B, out[1], H/16, W/16)."""

    def __init__(self, in_channels: tuple[int, int, int], out_channels: tuple[int, int, int], state_dim: int):
        super().__init__()
        c3, c4, c5 = in_channels
        o3, o4, o5 = out_channels
        self.txt_proj = linear_bn_relu(state_dim, o5)
        self.f1_v_proj = conv_bn_relu(c5, o5, 1, 0)
        self.norm_layer = nn.Sequential(nn.BatchNorm2d(o5), nn.ReLU(inplace=True))
        self.f2_v_proj = conv_bn_relu(c4, o4, 3, 1)
        self.f2_cat = conv_bn_relu(o5 + o4, o4, 1, 0)
        self.f3_v_proj = conv_bn_relu(c3, o3, 3, 1)
        self.f3_cat = conv_bn_relu(o3 + o4, o4, 1, 0)
        self.f4_proj5 = conv_bn_relu(o5, o4, 3, 1)
        self.f4_proj4 = conv_bn_relu(o4, o4, 3, 1)
        self.f4_proj3 = conv_bn_relu(o4, o4, 3, 1)
        self.aggr = conv_bn_relu(3 * o4, o4, 1, 0)
        self.coordconv = nn.Sequential(CoordConv(o4, o4, 3, 1), conv_bn_relu(o4, o4, 3, 1))

    def forward(self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor], state: torch.Tensor) -> torch.Tensor:
        v3, v4, v5 = feats
        gate = self.txt_proj(state)[:, :, None, None]
        f5 = self.norm_layer(self.f1_v_proj(v5) * gate)
        f4 = self.f2_cat(torch.cat([self.f2_v_proj(v4), F.interpolate(f5, size=v4.shape[-2:], mode="bilinear")], 1))
        f3 = F.avg_pool2d(self.f3_v_proj(v3), 2, 2)
        f3 = self.f3_cat(torch.cat([f3, f4], 1))
        fq3, fq4 = self.f4_proj3(f3), self.f4_proj4(f4)
        fq5 = F.interpolate(self.f4_proj5(f5), size=fq3.shape[-2:], mode="bilinear")
        return self.coordconv(self.aggr(torch.cat([fq3, fq4, fq5], 1)))


def sinusoid_1d(width: int, length: int, device: torch.device) -> torch.Tensor:
    """(length, width): sin on even channels, cos on odd ones."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    out = torch.zeros(length, width, device=device)
    out[:, 0::2], out[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return out


def sinusoid_2d(width: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(h*w, width): first half encodes the column, second half the row (sin/cos interleaved)."""
    half = width // 2
    col = sinusoid_1d(half, w, device)  # (w, half)
    row = sinusoid_1d(half, h, device)  # (h, half)
    grid = torch.cat([col[None].expand(h, -1, -1), row[:, None].expand(-1, w, -1)], dim=-1)
    return grid.reshape(h * w, width)


class DecoderLayer(nn.Module):
    """Pre-norm: self-attention on pixels, cross-attention to words (key-padding mask), FFN; each attention
    output is LayerNormed before its residual."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.cross_attn_norm = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.LayerNorm(ffn),
            nn.Linear(ffn, d_model),
        )
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self, vis: torch.Tensor, txt: torch.Tensor, vis_pos: torch.Tensor, txt_pos: torch.Tensor, pad: torch.Tensor
    ) -> torch.Tensor:
        x = self.norm1(vis)
        q = x + vis_pos
        x = self.self_attn(q, q, x, need_weights=False)[0]
        vis = vis + self.dropout1(self.self_attn_norm(x))
        x = self.norm2(vis)
        x = self.multihead_attn(x + vis_pos, txt + txt_pos, txt, key_padding_mask=pad, need_weights=False)[0]
        vis = vis + self.dropout2(self.cross_attn_norm(x))
        return vis + self.dropout3(self.ffn(self.norm3(vis)))


class TransformerDecoder(nn.Module):
    def __init__(self, num_layers: int, d_model: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(d_model, heads, ffn, dropout) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model)

    def forward(self, vis: torch.Tensor, words: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """``vis`` (B, C, H, W), ``words`` (B, L, C), ``pad`` (B, L) True where padded -> (B, C, H, W)."""
        b, c, h, w = vis.shape
        vis_pos = sinusoid_2d(c, h, w, vis.device).to(vis.dtype)[None]
        txt_pos = sinusoid_1d(c, words.shape[1], vis.device).to(words.dtype)[None]
        x = vis.flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = layer(x, words, vis_pos, txt_pos, pad)
        return self.norm(x).transpose(1, 2).reshape(b, c, h, w)


class Projector(nn.Module):
    """Vision path to stride 4 and a per-sample k x k kernel (+ bias) predicted from the sentence state."""

    def __init__(self, word_dim: int, in_dim: int, kernel: int = 3):
        super().__init__()
        self.in_dim, self.kernel = in_dim, kernel
        self.vis = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear"),
            conv_bn_relu(in_dim * 2, in_dim * 2, 3, 1),
            nn.Upsample(scale_factor=2, mode="bilinear"),
            conv_bn_relu(in_dim * 2, in_dim, 3, 1),
            nn.Conv2d(in_dim, in_dim, 1),
        )
        self.txt = nn.Linear(word_dim, in_dim * kernel * kernel + 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        x = self.vis(x)
        b, c, h, w = x.shape
        params = self.txt(state).to(x.dtype)
        weight = params[:, :-1].reshape(b, c, self.kernel, self.kernel)
        out = F.conv2d(x.reshape(1, b * c, h, w), weight, bias=params[:, -1], padding=self.kernel // 2, groups=b)
        return out.reshape(b, 1, h, w)


class CRISUpsampler(nn.Module):
    """docs/science.md §4.3 CRIS head: 1x1 conv (no bias) to 64 channels on the decoder map, bilinear to the output
    size, 5x5 replicate-padded conv, blended ``(1 - r)·frozen + r·head`` with learnable r (init 0.5)."""

    def __init__(self, in_channels: int, hidden: int = 64, kernel: int = 5, ratio: float = 0.5):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.conv = nn.Conv2d(hidden, 1, kernel, padding="same", padding_mode="replicate")
        self.residual_ratio = nn.Parameter(torch.tensor(float(ratio)))

    def forward(self, features: torch.Tensor, frozen_logits: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.reduce(features), size=frozen_logits.shape[-2:], mode="bilinear", align_corners=False)
        r = self.residual_ratio
        return (1 - r) * frozen_logits + r * self.conv(up)
