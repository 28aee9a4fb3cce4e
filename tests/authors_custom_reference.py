"""An independent plain-torch HunyuanCustom forward pass, written from the authors' formulation.

It reads the weights in the authors' key layout (`img_in`, `txt_in.individual_token_refiner`,
`double_blocks.N.img_attn_qkv`, ...) and follows their model code (hymm_sp/modules): token
refiner, timestep and pooled-text modulation, double blocks with joint attention over
[image; text], single blocks over the concatenation, RoPE with their real-valued pairwise
rotation, the reference tokens before the video tokens at t = -1 and w + W ("timecat-w"), their
varlen attention (image tokens plus the first mask.sum() text tokens), the reference dropped
before the final layer, and their step cache (`cache_out` before the last single block).
Nothing here calls diffusers, so it checks our wrapper rather than repeating it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def linear(sd, name, x):
    return F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))


def rms_norm(sd, name, x, eps=1e-6):
    out = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return out.type_as(x) * sd[name + ".weight"]


def layer_norm(x, eps=1e-6):
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def gate(x, g):
    return x * g.unsqueeze(1)


def timestep_embedding(t, dim=256, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def timestep_embedder(sd, name, t):
    h = linear(sd, name + ".mlp.0", timestep_embedding(t))
    return linear(sd, name + ".mlp.2", F.silu(h))


def rope_1d(dim, pos, theta):
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    freqs = torch.outer(pos.float(), freqs)
    return freqs.cos().repeat_interleave(2, dim=1), freqs.sin().repeat_interleave(2, dim=1)


def timecat_w_rope(rope_dims, frames, height, width, theta):
    """Their get_nd_rotary_pos_embed_new with concat_dict {'mode': 'timecat-w', 'bias': -1}."""
    grid = torch.stack(torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij"))
    bias = grid[:, :1].clone()
    bias[0] = -1
    bias[2] += width
    grid = torch.cat([bias, grid], dim=1)
    parts = [rope_1d(d, grid[i].reshape(-1), theta) for i, d in enumerate(rope_dims)]
    return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)


def rotate_half(x):
    real, imag = x.float().reshape(*x.shape[:-1], -1, 2).unbind(-1)
    return torch.stack([-imag, real], dim=-1).flatten(3)


def apply_rope(x, cos, sin):
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return (x.float() * cos + rotate_half(x) * sin).type_as(x)


def split_heads(x, heads):
    b, n, _ = x.shape
    return x.reshape(b, n, 3, heads, -1).permute(2, 0, 1, 3, 4)  # K B L H D


def varlen_attention(q, k, v, img_len, text_valid):
    """Per sample: image tokens and the first `text_valid` text tokens attend among themselves; the
    text padding forms its own segment (as their cu_seqlens); [B, L, H, D] in, [B, L, H*D] out."""
    out = torch.zeros_like(q)
    for b in range(q.shape[0]):
        end = img_len + int(text_valid[b])
        for lo, hi in ((0, end), (end, q.shape[1])):
            if hi > lo:
                qs, ks, vs = (t[b:b + 1, lo:hi].transpose(1, 2) for t in (q, k, v))
                out[b:b + 1, lo:hi] = F.scaled_dot_product_attention(qs, ks, vs).transpose(1, 2)
    return out.flatten(2)


def token_refiner(sd, x, t, mask, heads, depth):
    name = "txt_in"
    mask_f = mask.float().unsqueeze(-1)
    context = (x * mask_f).sum(dim=1) / mask_f.sum(dim=1)
    context = linear(sd, name + ".c_embedder.linear_2", F.silu(linear(sd, name + ".c_embedder.linear_1", context)))
    c = timestep_embedder(sd, name + ".t_embedder", t) + context
    x = linear(sd, name + ".input_embedder", x)
    b, n = mask.shape
    m1 = mask.view(b, 1, 1, n).repeat(1, 1, n, 1)
    attn_mask = (m1 & m1.transpose(2, 3)).bool()
    attn_mask[:, :, :, 0] = True
    for i in range(depth):
        blk = f"{name}.individual_token_refiner.blocks.{i}"
        gate_msa, gate_mlp = linear(sd, blk + ".adaLN_modulation.1", F.silu(c)).chunk(2, dim=1)
        norm_x = F.layer_norm(x, (x.shape[-1],), sd[blk + ".norm1.weight"], sd[blk + ".norm1.bias"], eps=1e-6)
        q, k, v = split_heads(linear(sd, blk + ".self_attn_qkv", norm_x), heads)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask)
        x = x + gate(linear(sd, blk + ".self_attn_proj", attn.transpose(1, 2).flatten(2)), gate_msa)
        norm_x = F.layer_norm(x, (x.shape[-1],), sd[blk + ".norm2.weight"], sd[blk + ".norm2.bias"], eps=1e-6)
        x = x + gate(linear(sd, blk + ".mlp.fc2", F.silu(linear(sd, blk + ".mlp.fc1", norm_x))), gate_mlp)
    return x


def double_block(sd, blk, img, txt, vec, freqs, heads, text_valid):
    img_mod = linear(sd, blk + ".img_mod.linear", F.silu(vec)).chunk(6, dim=-1)
    txt_mod = linear(sd, blk + ".txt_mod.linear", F.silu(vec)).chunk(6, dim=-1)
    iq, ik, iv = split_heads(linear(sd, blk + ".img_attn_qkv", modulate(layer_norm(img), img_mod[0], img_mod[1])), heads)
    iq, ik = rms_norm(sd, blk + ".img_attn_q_norm", iq), rms_norm(sd, blk + ".img_attn_k_norm", ik)
    iq, ik = apply_rope(iq, *freqs), apply_rope(ik, *freqs)
    tq, tk, tv = split_heads(linear(sd, blk + ".txt_attn_qkv", modulate(layer_norm(txt), txt_mod[0], txt_mod[1])), heads)
    tq, tk = rms_norm(sd, blk + ".txt_attn_q_norm", tq), rms_norm(sd, blk + ".txt_attn_k_norm", tk)
    attn = varlen_attention(torch.cat([iq, tq], 1), torch.cat([ik, tk], 1), torch.cat([iv, tv], 1), img.shape[1], text_valid)
    img_attn, txt_attn = attn[:, : img.shape[1]], attn[:, img.shape[1]:]
    img = img + gate(linear(sd, blk + ".img_attn_proj", img_attn), img_mod[2])
    mlp_in = modulate(layer_norm(img), img_mod[3], img_mod[4])
    img = img + gate(linear(sd, blk + ".img_mlp.fc2", F.gelu(linear(sd, blk + ".img_mlp.fc1", mlp_in), approximate="tanh")), img_mod[5])
    txt = txt + gate(linear(sd, blk + ".txt_attn_proj", txt_attn), txt_mod[2])
    mlp_in = modulate(layer_norm(txt), txt_mod[3], txt_mod[4])
    txt = txt + gate(linear(sd, blk + ".txt_mlp.fc2", F.gelu(linear(sd, blk + ".txt_mlp.fc1", mlp_in), approximate="tanh")), txt_mod[5])
    return img, txt


def single_block(sd, blk, x, vec, txt_len, freqs, heads, text_valid):
    hidden = x.shape[-1]
    shift, scale, g = linear(sd, blk + ".modulation.linear", F.silu(vec)).chunk(3, dim=-1)
    qkv, mlp = torch.split(linear(sd, blk + ".linear1", modulate(layer_norm(x), shift, scale)), [3 * hidden, sd[blk + ".linear1.weight"].shape[0] - 3 * hidden], dim=-1)
    q, k, v = split_heads(qkv, heads)
    q, k = rms_norm(sd, blk + ".q_norm", q), rms_norm(sd, blk + ".k_norm", k)
    q = torch.cat([apply_rope(q[:, :-txt_len], *freqs), q[:, -txt_len:]], dim=1)
    k = torch.cat([apply_rope(k[:, :-txt_len], *freqs), k[:, -txt_len:]], dim=1)
    attn = varlen_attention(q, k, v, x.shape[1] - txt_len, text_valid)
    out = linear(sd, blk + ".linear2", torch.cat([attn, F.gelu(mlp, approximate="tanh")], dim=2))
    return x + gate(out, g)


class AuthorsCustomModel:
    """HYVideoDiffusionTransformer.forward with `ref_latents`, as the authors wrote it, on a state dict."""

    def __init__(self, sd, heads, rope_dims, theta=256.0, patch=(1, 2, 2)):
        self.sd, self.heads, self.rope_dims, self.theta, self.patch = sd, heads, list(rope_dims), theta, patch
        self.double = len({k.split(".")[1] for k in sd if k.startswith("double_blocks.")})
        self.single = len({k.split(".")[1] for k in sd if k.startswith("single_blocks.")})
        self.refiner = len({k.split(".")[3] for k in sd if k.startswith("txt_in.individual_token_refiner.blocks.")})
        self.cache_out = None

    def patch_embed(self, x):
        out = F.conv3d(x, self.sd["img_in.proj.weight"], self.sd["img_in.proj.bias"], stride=self.patch)
        return out.flatten(2).transpose(1, 2)

    def __call__(self, x, t, ref_latents, text_states, text_mask, text_states_2, is_cache=False):
        sd = self.sd
        _, _, ot, oh, ow = x.shape
        tt, th, tw = ot // self.patch[0], oh // self.patch[1], ow // self.patch[2]
        freqs = timecat_w_rope(self.rope_dims, tt, th, tw, self.theta)
        vec = timestep_embedder(sd, "time_in", t)
        vec = vec + linear(sd, "vector_in.out_layer", F.silu(linear(sd, "vector_in.in_layer", text_states_2)))
        img = self.patch_embed(x)
        ref = self.patch_embed(ref_latents)
        txt = token_refiner(sd, text_states, t, text_mask, self.heads, self.refiner)
        ref_length = ref.shape[1]
        img = torch.cat([ref, img], dim=1)
        txt_len = txt.shape[1]
        text_valid = text_mask.sum(dim=1)
        if not is_cache:
            for i in range(self.double):
                img, txt = double_block(sd, f"double_blocks.{i}", img, txt, vec, freqs, self.heads, text_valid)
            x = torch.cat([img, txt], dim=1)
            for i in range(self.single):
                if i == self.single - 1:
                    self.cache_out = x
                x = single_block(sd, f"single_blocks.{i}", x, vec, txt_len, freqs, self.heads, text_valid)
        else:
            x = single_block(sd, f"single_blocks.{self.single - 1}", self.cache_out, vec, txt_len, freqs, self.heads, text_valid)
        img = x[:, :-txt_len][:, ref_length:]
        shift, scale = linear(sd, "final_layer.adaLN_modulation.1", F.silu(vec)).chunk(2, dim=1)
        img = linear(sd, "final_layer.linear", modulate(layer_norm(img), shift, scale))
        c = img.shape[-1] // (self.patch[0] * self.patch[1] * self.patch[2])
        img = img.reshape(img.shape[0], tt, th, tw, c, *self.patch)
        img = torch.einsum("nthwcopq->nctohpwq", img)
        return img.reshape(img.shape[0], c, tt * self.patch[0], th * self.patch[1], tw * self.patch[2])
