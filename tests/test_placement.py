"""``models.placement`` puts prompt tokens where the reference says, on CLIPSeg and CRIS alike (and block by block
for a pack): inserted after BOS, replaced at the input of layers 2..depth, pooled at the shifted EOS, appended to
the visual tokens. Checked by recording what each layer of the real tiny models receives."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("open_clip")

from torch import nn  # noqa: E402

from vlsm_batch.models import placement  # noqa: E402
from vlsm_batch.models.factory import create_model  # noqa: E402
from vlsm_batch.models.tokenizer import BOS_ID, EOS_ID  # noqa: E402

PROMPTS = ["a polyp", "a small benign tumour in the left breast"]
N, DEPTH = 3, 2


# -- the operations on plain tensors ---------------------------------------------------------------------------------
def test_text_rows_go_after_bos_and_positions_follow_insertion() -> None:
    embedding = nn.Embedding(10, 4)
    positions = torch.randn(12, 4)
    ids = torch.tensor([[8, 1, 2, 9, 0], [8, 3, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    rows = [torch.randn(1, 2, 4), torch.randn(1, 2, 4)]  # two members
    out_ids, hidden, out_mask, n = placement.embed_text(embedding, positions, ids, mask, rows)
    assert n == 2 and torch.equal(out_ids, ids) and hidden.shape == (4, 7, 4)
    tokens = embedding(ids)
    for m, block in enumerate(hidden.split(2)):
        assert torch.equal(block[:, :1], tokens[:, :1] + positions[:1])
        assert torch.equal(block[:, 1:3], rows[m].expand(2, -1, -1) + positions[1:3])
        assert torch.equal(block[:, 3:], tokens[:, 1:] + positions[3:7])
    assert torch.equal(out_mask, torch.cat([torch.ones(2, 2, dtype=mask.dtype), mask], 1).repeat(2, 1))
    # the EOS (largest id) moved by n; each member's block pools its own rows
    states = placement.pool_eos(hidden, ids, n)
    assert torch.equal(states, torch.cat([block[torch.arange(2), torch.tensor([5, 4])] for block in hidden.split(2)]))


def test_text_rows_fit_the_position_table() -> None:
    ids = torch.tensor([[8, 1, 2, 3, 4, 9]])
    out_ids, hidden, mask, n = placement.embed_text(
        nn.Embedding(10, 4), torch.zeros(6, 4), ids, torch.ones_like(ids), [torch.zeros(1, 2, 4)]
    )
    assert n == 2 and hidden.shape[1] == 6 and out_ids.tolist() == [[8, 1, 2, 9]] and mask.shape == (1, 6)


def test_deep_rows_replace_only_the_prompt_slots_of_their_block() -> None:
    hidden = torch.randn(4, 6, 3)  # two members of batch 2
    row = torch.randn(1, 2, 3)
    text = placement.replace_text(hidden, [None, row])
    assert torch.equal(text[:2], hidden[:2]) and torch.equal(text[2:, 1:3], row.expand(2, -1, -1))
    assert torch.equal(text[2:, :1], hidden[2:, :1]) and torch.equal(text[2:, 3:], hidden[2:, 3:])
    vision = placement.replace_vision(hidden, [row, None])
    assert torch.equal(vision[2:], hidden[2:]) and torch.equal(vision[:2, -2:], row.expand(2, -1, -1))
    assert torch.equal(vision[:2, :-2], hidden[:2, :-2])
    assert placement.replace_text(hidden, [None, None]) is hidden
    assert placement.row_for([row], 0) is row and placement.row_for([row], 1) is None
    appended = placement.append_vision(hidden[:2], [row, 2 * row])
    assert appended.shape == (4, 8, 3) and torch.equal(appended[2:, -2:], 2 * row.expand(2, -1, -1))


# -- on the real tiny models -----------------------------------------------------------------------------------------
def _record(layers: Sequence[nn.Module]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Hooks that keep each layer's input and output hidden states (the first positional argument / output)."""
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    for layer in layers:
        layer.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
        layer.register_forward_hook(
            lambda _m, _a, out: outputs.append((out[0] if isinstance(out, tuple) else out).detach().clone())
        )
    return inputs, outputs


def _text_parts(model) -> tuple[Sequence[nn.Module], nn.Module, torch.Tensor]:
    if hasattr(model, "clipseg") or hasattr(model, "sam3"):
        text = model.clipseg.clip.text_model if hasattr(model, "clipseg") else model.sam3.text_encoder.text_model
        return text.encoder.layers, text.embeddings.token_embedding, text.embeddings.position_embedding.weight
    clip = model.cris.backbone
    return clip.transformer.resblocks, clip.token_embedding, clip.positional_embedding


@pytest.mark.parametrize("name", ["clipseg-tiny", "cris-tiny", "sam3-tiny"])
def test_text_prompts_on_every_model(name: str) -> None:
    params = {"prompt_depth": DEPTH, "num_context": N, "context_init": None}
    model = create_model(name, "coop", params, random_init=True)
    layers, embedding, positions = _text_parts(model)
    inputs, outputs = _record(layers)
    enc = model.tokenize(PROMPTS)
    prompts = model.learner()
    with torch.no_grad():
        if hasattr(model, "clipseg"):
            norm_in: list[torch.Tensor] = []
            model.clipseg.clip.text_model.final_layer_norm.register_forward_pre_hook(
                lambda _m, args: norm_in.append(args[0])
            )
            model.encode_text(enc["input_ids"], enc["attention_mask"], prompts.text)
            pooled = norm_in[0]
        elif hasattr(model, "sam3"):
            features, valid = model.encode_text(enc["input_ids"], enc["attention_mask"], prompts.text)
            assert valid[:, : N + 1].all()  # BOS and the n prompts are prompt features for the DETR stages
        else:
            words, pad, _ = model.cris.encode_text(enc["input_ids"], enc["attention_mask"], prompts.text)
            assert not pad[:, : N + 1].any()  # BOS and the n prompts are never padding for the decoder
    ids = enc["input_ids"]
    batch, length = ids.shape
    ctx = [row.expand(batch, -1, -1) for row in prompts.text]
    # layer 1: BOS, the n prompt tokens, then the words, positions added after insertion
    first = inputs[0]
    assert first.shape[1] == length + N
    assert torch.equal(first[:, :1], embedding(ids[:, :1]) + positions[:1])
    assert torch.allclose(first[:, 1 : N + 1], ctx[0] + positions[1 : N + 1])
    assert torch.equal(first[:, N + 1 :], embedding(ids[:, 1:]) + positions[N + 1 : length + N])
    # layers 2..depth: fresh rows in slots 1..n, every other token as the layer below left it
    for k in range(1, len(layers)):
        if k < DEPTH:
            assert torch.equal(inputs[k][:, 1 : N + 1], ctx[k])
            assert torch.equal(inputs[k][:, :1], outputs[k - 1][:, :1])
            assert torch.equal(inputs[k][:, N + 1 :], outputs[k - 1][:, N + 1 :])
        else:
            assert torch.equal(inputs[k], outputs[k - 1])
    # EOS pooling reads the EOS token after insertion
    eos = ids.argmax(dim=-1) + N
    rows = torch.arange(batch)
    assert (ids[rows, eos - N] == EOS_ID).all() and (ids[:, 0] == BOS_ID).all()
    assert torch.equal(first[rows, eos], embedding(ids[rows, eos - N]) + positions[eos])
    if hasattr(model, "clipseg"):
        assert torch.equal(pooled, outputs[-1][rows, eos])
    elif hasattr(model, "sam3"):  # every token, prompts included, after the final LayerNorm and SAM 3's projection
        text = model.sam3.text_encoder.text_model
        assert torch.equal(features, model.sam3.text_projection(text.final_layer_norm(outputs[-1])))
    else:
        clip = model.cris.backbone
        assert torch.equal(words, clip.ln_final(outputs[-1]))


def test_visual_prompts_on_clipseg() -> None:
    model = create_model("clipseg-tiny", "vpt", {"prompt_depth": DEPTH, "num_context": N}, random_init=True)
    vision = model.clipseg.clip.vision_model
    inputs, outputs = _record(vision.encoder.layers)
    pixels = torch.randn(2, 3, model.image_size, model.image_size)
    prompts = model.learner()
    with torch.no_grad():
        activations, _ = model.encode_image(pixels, prompts.vision)
        tokens = vision.embeddings(pixels, interpolate_pos_encoding=True)
    ctx = [row.expand(2, -1, -1) for row in prompts.vision]
    assert inputs[0].shape[1] == tokens.shape[1] + N
    assert torch.equal(inputs[0], vision.pre_layrnorm(torch.cat([tokens, ctx[0]], 1)))
    for k in range(1, len(inputs)):
        if k < DEPTH:
            assert torch.equal(inputs[k][:, -N:], ctx[k])
            assert torch.equal(inputs[k][:, :-N], outputs[k - 1][:, :-N])
        else:
            assert torch.equal(inputs[k], outputs[k - 1])
    assert len(inputs) == max(model.extract_layers) + 1  # layers above the deepest extract layer never run
    assert all(a.shape[1] == tokens.shape[1] + N for a in activations)


def test_pack_members_get_their_own_rows() -> None:
    """The fused text/vision forwards of two members place each member's rows in its own block: equal to each
    member alone (within float round-off: the batched matmuls may sum in another order)."""
    base = create_model(
        "clipseg-tiny", "maple", {"prompt_depth": DEPTH, "num_context": N, "context_init": None}, random_init=True
    )
    from vlsm_batch.models.packed import member_model

    other = member_model(base, "maple", {"prompt_depth": 1, "num_context": N, "context_init": None})
    members = [base.learner(), other.learner()]
    enc = base.tokenize(PROMPTS)
    pixels = torch.randn(2, 3, base.image_size, base.image_size)
    with torch.no_grad():
        fused = base.encode_text_members(enc["input_ids"], enc["attention_mask"], [p.text for p in members])
        solo = [base.encode_text(enc["input_ids"], enc["attention_mask"], p.text) for p in members]
        embedded = base.clipseg.clip.vision_model.embeddings(pixels, interpolate_pos_encoding=True)
        fused_image, _ = base.vision_layers(embedded, [p.vision for p in members])
        solo_image = [base.encode_image(pixels, p.vision)[0] for p in members]
    assert fused.shape == (4, solo[0].shape[1])
    for block, alone in zip(fused.split(2), solo, strict=True):
        assert torch.allclose(block, alone, atol=1e-5)
    for layer, fused_layer in enumerate(fused_image):
        for block, alone in zip(fused_layer.split(2), solo_image, strict=True):
            assert torch.allclose(block, alone[layer], atol=1e-5)
